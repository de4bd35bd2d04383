"""Bitmap decoder: which token/channel position of a 64-element tile each lane serves in a given beat.

For the tile bitmap ``bm`` (bit i = element i is streamed) the streamed values are numbered by their rank
``r_i = popcount(bm[0:i])``; beat ``c`` carries values ``cL .. cL+L-1``. Outputs (combinational):

* ``hit[i] = bm[i] & (r_i // L == beat)``: position i is updated in this beat,
* ``lane[i] = r_i mod L``: by the product of that lane,
* ``count = popcount(bm)``, ``nbeats = max(1, ceil(count / L))``, ``last = (beat == nbeats - 1)``.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.layouts import TILE, check_lanes, checking

__all__ = ["BitmapDecoder"]

BLOCK = 4  # bitmap bits per block of the rank computation: an in-block count of <= 3 bits is one LUT4 per bit


class BitmapDecoder(wiring.Component):
    def __init__(self, *, lanes: int):
        with checking(self):
            self.lanes = check_lanes(lanes)
        self.lane_bits = lanes.bit_length() - 1
        max_beats = TILE // lanes
        super().__init__({
            "bitmap": In(TILE),
            "beat": In(range(max_beats)),
            "hit": Out(TILE),
            "lane": Out(data.ArrayLayout(unsigned(self.lane_bits), TILE)),
            "count": Out(range(TILE + 1)),
            "nbeats": Out(range(max_beats + 1)),
            "last": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lb = self.lane_bits
        ranks = self._ranks(m)  # exclusive prefix popcounts r_i
        for i in range(TILE):
            m.d.comb += [
                self.hit[i].eq(self.bitmap[i] & (ranks[i][lb:] == self.beat)),
                self.lane[i].eq(ranks[i][:lb]),
            ]
        nb = Signal(range(TILE // self.lanes + 2))
        m.d.comb += nb.eq((self.count + self.lanes - 1) >> lb)
        m.d.comb += self.nbeats.eq(nb | (nb == 0))
        m.d.comb += self.last.eq(self.beat == self.nbeats - 1)
        return m

    def _ranks(self, m: Module) -> list[Signal]:
        """Exclusive prefix popcounts ``r_i = popcount(bitmap[0:i])`` (and ``count``) in logarithmic depth.

        The bitmap is cut into blocks of ``BLOCK`` bits; ``r_i`` = (kept bits of the blocks before i's block) +
        (kept bits before i inside its block). The block totals are prefix-summed by a Sklansky tree (log2 of the
        block count adder levels), each sum in a signal of its exact range so the adders stay narrow. Same values
        as the 64-step ripple ``r_i = r_{i-1} + bm[i-1]``, which was the engine's critical path.
        """
        bm = self.bitmap
        nblk = TILE // BLOCK
        local = []  # local[k][j] = popcount(bm[BLOCK*k : BLOCK*k + j]), j = 0..BLOCK
        for k in range(nblk):
            row = [Const(0, 1)]
            for j in range(1, BLOCK + 1):
                v = Signal(range(j + 1), name=f"blk{k}_pop{j}")
                m.d.comb += v.eq(sum((bm[BLOCK * k + t] for t in range(j)), Const(0, range(j + 1))))
                row.append(v)
            local.append(row)

        def scan(lo: int, hi: int) -> list:
            """Inclusive prefix sums of the block totals lo..hi-1 (Sklansky: halves, then add the left total)."""
            if hi - lo == 1:
                return [local[lo][BLOCK]]
            mid = (lo + hi) // 2
            left, right = scan(lo, mid), scan(mid, hi)
            out = list(left)
            for k, r in zip(range(mid, hi), right):
                v = Signal(range(BLOCK * (k - lo + 1) + 1), name=f"pre{lo}_{k}")
                m.d.comb += v.eq(left[-1] + r)
                out.append(v)
            return out

        incl = scan(0, nblk)
        m.d.comb += self.count.eq(incl[-1])
        ranks = []
        for i in range(TILE):
            k, j = divmod(i, BLOCK)
            r = Signal(range(TILE + 1), name=f"rank{i}")
            m.d.comb += r.eq(local[k][j] if k == 0 else incl[k - 1] + local[k][j])
            ranks.append(r)
        return ranks
