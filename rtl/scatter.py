"""ScatterNetwork: routes the ``lanes`` int4 values of a beat to the 64 tile positions they update (pipelined).

In a beat, lane j's value belongs to the position i whose rank (rtl/bitmap_decoder.py) is ``beat * L + j``:
``hit[i]`` marks those positions and ``lane[i] = j``. Lane order and position order agree, so the lanes -> positions
map is a monotone *expansion*, and it is routed by the reverse of a *compaction* network instead of a 64 x L
crossbar (which, at L = 32, would be tens of thousands of multiplexers with every product bit fanning out to 64
entries per accumulator).

The network carries the 4-bit values, not the 13-bit products: the engine multiplies at the 64 positions after it
(rtl/engine.py, a MacArray of 64 lanes), so the expansion is 4 bits wide instead of PROD_BITS (about a third of the
multiplexers and registers of the widest unit of the engine). ``width`` sets the data width (signed) for other
uses.

* Compaction (control only): every hit position i holds an item "lane[i]" that must move left from slot i to slot
  lane[i]. Stage k = 0..5 (LSB first) moves an item at slot s by 2^k iff bit k of its remaining distance is set.
  After stages 0..k-1 the remaining distance s - lane is a multiple of 2^k, so its bit k is ``s[k] ^ lane[k]``
  (``s[k]`` alone for k >= log2 L, where lane[k] = 0): no subtraction. ``go_k[s]`` records the moves. LSB-first
  compaction of a monotone map never puts two items in one slot.
* Expansion (data): the values enter at slots 0..L-1 and the compaction runs backwards (stage 5 first): at stage k,
  slot t takes the value of slot t - 2^k iff ``go_k[t]``, else keeps its own. It is conflict-free because the
  compaction was. Each data bit fans out to two multiplexers per stage.

Slots that receive no value carry don't-care values; ``hit_o`` (the input ``hit`` delayed) tells which are real.
Cost per stage: 64 x ``width`` mux2 for the data, a few bits per slot for the control; the compaction needs only
``valid`` plus the lane bits not yet consumed.

Timing: ``hit``, ``lane`` and ``data`` presented in cycle t (all from registers) give ``val``/``hit_o`` visible from
cycle t + SCATTER_LATENCY. Three network stages per register (one LUT4 level each: compaction stages need valid,
go-bit, payload of two slots; expansion stages a mux2): C1 = compaction stages 0-2, C2 = 3-5 (``data`` waits two
registers meanwhile), E1 = expansion stages 5-3, E2 = 2-0.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from base.errors import SpecError
from engine.params import TILE, check_lanes
from rtl.layouts import checking

__all__ = ["ScatterNetwork", "SCATTER_LATENCY"]

SCATTER_LATENCY = 4
STAGES = 6  # log2(TILE)
PER_CYCLE = 3  # network stages between two registers
VALUE_BITS = 4  # int4 values
# compaction registers (C1, C2) + expansion registers (E1, E2)
assert SCATTER_LATENCY == 2 * (STAGES // PER_CYCLE)


class ScatterNetwork(wiring.Component):
    def __init__(self, *, lanes: int, width: int = VALUE_BITS):
        with checking(self):
            self.lanes = check_lanes(lanes)
            if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= 32:
                raise SpecError(f"width must be an int in [1, 32], got {width!r}")
        self.lane_bits = lanes.bit_length() - 1
        self.width = width
        super().__init__(
            {
                "hit": In(TILE),
                "lane": In(data.ArrayLayout(unsigned(self.lane_bits), TILE)),
                "data": In(data.ArrayLayout(signed(width), lanes)),
                "hit_o": Out(TILE),
                "val": Out(data.ArrayLayout(signed(width), TILE)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        L, lb, W = self.lanes, self.lane_bits, self.width

        def reg(value, shape, name):
            r = Signal(shape, name=name)
            m.d.sync += r.eq(value)
            return r

        # ---- compaction: valid + lane bits, LSB first; go[k][s] = the item at slot s moves to s - 2^k at stage k ----
        valid = [self.hit[s] for s in range(TILE)]
        lane = [self.lane[s] for s in range(TILE)]
        go = []
        for k in range(STAGES):
            step = 1 << k
            g = [valid[s] & ((lane[s][k] ^ ((s >> k) & 1)) if k < lb else (s >> k) & 1) for s in range(TILE)]
            nvalid, nlane = [], []
            for s in range(TILE):
                if s + step < TILE:
                    moved_in = g[s + step]
                    nvalid.append(moved_in | (valid[s] & ~g[s]))
                    nlane.append(Mux(moved_in, lane[s + step], lane[s]) if k + 1 < lb else lane[s])
                else:
                    nvalid.append(valid[s] & ~g[s])
                    nlane.append(lane[s])
            go.append(g)
            valid, lane = nvalid, nlane
            if k % PER_CYCLE == PER_CYCLE - 1:  # register after stages 2 and 5
                c, lo = k // PER_CYCLE + 1, k + 1 - PER_CYCLE
                go[lo:] = [
                    [reg(x, 1, f"go{lo + i}_{s}_c{c}") for s, x in enumerate(gk)] for i, gk in enumerate(go[lo:])
                ]
                if k + 1 < STAGES:
                    valid = [reg(x, 1, f"cv{s}_c{c}") for s, x in enumerate(valid)]
                    lane = [reg(x, x.shape(), f"cl{s}_c{c}") if k + 1 < lb else x for s, x in enumerate(lane)]
        # go[0..2] are visible from t + 1 (C1), go[3..5] from t + 2 (C2); E1 (stages 5-3) runs in cycle t + 2 and
        # E2 (stages 2-0) in t + 3, so go[0..2] wait two more registers
        for d in range(2):
            go[:PER_CYCLE] = [
                [reg(x, 1, f"go{k}_{s}_d{d}") for s, x in enumerate(gk)] for k, gk in enumerate(go[:PER_CYCLE])
            ]

        # ---- expansion: the values at slots 0..L-1 wait for C2, then stages 5..0 (3 per register) --------------------
        vals = [self.data[j] for j in range(L)]
        for c in range(2):
            vals = [reg(v, signed(W), f"vw{j}_{c}") for j, v in enumerate(vals)]
        z = vals + [None] * (TILE - L)  # None: no value ever reaches this slot yet
        for k in reversed(range(STAGES)):
            step = 1 << k
            nz = []
            for t in range(TILE):
                src = z[t - step] if t >= step else None
                if src is None:
                    nz.append(z[t])
                elif z[t] is None:
                    nz.append(src)  # the slot's own value is a don't-care: no mux needed
                else:
                    nz.append(Mux(go[k][t], src, z[t]))
            z = nz
            if k % PER_CYCLE == 0:  # register after stages 3 and 0
                z = [None if x is None else reg(x, signed(W), f"ez{t}_k{k}") for t, x in enumerate(z)]
        for t in range(TILE):
            m.d.comb += self.val[t].eq(z[t] if z[t] is not None else 0)

        hit = self.hit
        for c in range(SCATTER_LATENCY):
            hit = reg(hit, TILE, f"hit_d{c}")
        m.d.comb += self.hit_o.eq(hit)
        return m
