"""Bitmap decoder: which token/channel position of a 64-element tile each lane serves in a given beat (pipelined).

For the tile bitmap ``bm`` (bit i = element i is streamed) the streamed values are numbered by their rank
``r_i = popcount(bm[0:i])``; beat ``c`` carries values ``cL .. cL+L-1``. Outputs, registered, for the ``bitmap`` /
``beat`` presented DECODER_LATENCY (4) cycles earlier (one new input per cycle):

* ``hit[i] = bm[i] & (r_i // L == beat)``: position i is updated in this beat,
* ``lane[i] = r_i mod L``: by the product of that lane.

The ranks are computed in logarithmic depth: the bitmap is cut into 16 blocks of 4 bits; ``r_i`` = (kept bits of
the blocks before i's block) + (kept bits before i inside its block, one LUT4 per bit). The 16 block totals are
prefix-summed by a Sklansky tree of 4 adder levels. Stages: A = in-block counts + tree level 1, B = levels 2-3,
C = level 4, D = the rank add and the beat compare; each is at most one LUT level and two short carry chains (100 MHz
on ECP5, engine/timing.py). The tile's value count and beat count are not made here: the engine precomputes them when
the tile header arrives (rtl/popcount.py).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from engine.params import TILE, check_lanes
from rtl.layouts import checking

__all__ = ["BitmapDecoder", "DECODER_LATENCY"]

BLOCK = 4  # bitmap bits per block of the rank computation: an in-block count of <= 3 bits is one LUT4 per bit
DECODER_LATENCY = 4


class BitmapDecoder(wiring.Component):
    def __init__(self, *, lanes: int):
        with checking(self):
            self.lanes = check_lanes(lanes)
        self.lane_bits = lanes.bit_length() - 1
        super().__init__(
            {
                "bitmap": In(TILE),
                "beat": In(range(TILE // lanes)),
                "hit": Out(TILE),
                "lane": Out(data.ArrayLayout(unsigned(self.lane_bits), TILE)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        lb, nblk = self.lane_bits, TILE // BLOCK

        def stage(name, value, shape):
            r = Signal(shape, name=name)
            m.d.sync += r.eq(value)
            return r

        # stage A: in-block exclusive ranks, block totals, Sklansky level 1
        bm = self.bitmap
        local = []
        pre = []
        for k in range(nblk):
            row = []
            for j in range(BLOCK):
                row.append(sum((bm[BLOCK * k + t] for t in range(j)), Const(0, range(BLOCK))))
            local.append(row)
            pre.append(sum((bm[BLOCK * k + t] for t in range(BLOCK)), Const(0, range(BLOCK + 1))))

        def level(vals, lvl):
            span = 1 << lvl
            out = list(vals)
            for k in range(len(vals)):
                if (k // span) % 2:
                    out[k] = vals[k] + vals[(k // span) * span - 1]
            return out

        pre = level(pre, 0)
        bm_a = stage("dec_bm_a", bm, TILE)
        beat_a = stage("dec_beat_a", self.beat, self.beat.shape())
        local_a = [[stage(f"dec_loc{k}_{j}_a", local[k][j], range(BLOCK)) for j in range(BLOCK)] for k in range(nblk)]
        pre_a = [stage(f"dec_pre{k}_a", pre[k], range(BLOCK * 2 + 1)) for k in range(nblk)]

        # stage B: Sklansky levels 2-3
        inc3 = level(level(pre_a, 1), 2)
        bm_b = stage("dec_bm_b", bm_a, TILE)
        beat_b = stage("dec_beat_b", beat_a, beat_a.shape())
        local_b = [[stage(f"dec_loc{k}_{j}_b", local_a[k][j], range(BLOCK)) for j in range(BLOCK)] for k in range(nblk)]
        inc3_b = [stage(f"dec_inc3_{k}_b", inc3[k], range(TILE + 1)) for k in range(nblk)]

        # stage C: Sklansky level 4 -> inclusive block prefix sums
        incl = level(inc3_b, 3)
        bm_c = stage("dec_bm_c", bm_b, TILE)
        beat_c = stage("dec_beat_c", beat_b, beat_b.shape())
        local_c = [[stage(f"dec_loc{k}_{j}_c", local_b[k][j], range(BLOCK)) for j in range(BLOCK)] for k in range(nblk)]
        incl_c = [stage(f"dec_incl{k}_c", incl[k], range(TILE + 1)) for k in range(nblk)]

        # stage D: rank = blocks before + in-block rank; hit and lane registered
        for i in range(TILE):
            k, j = divmod(i, BLOCK)
            r = Signal(range(TILE), name=f"rank{i}")
            m.d.comb += r.eq(local_c[k][j] if k == 0 else incl_c[k - 1] + local_c[k][j])
            m.d.sync += [
                self.hit[i].eq(bm_c[i] & (r[lb:] == beat_c)),
                self.lane[i].eq(r[:lb]),
            ]
        return m
