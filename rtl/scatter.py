"""ScatterNetwork: routes the ``lanes`` products of a beat to the 64 tile positions they update (pipelined, log depth).

In a beat, lane j's product belongs to the position i whose rank (rtl/bitmap_decoder.py) is ``beat * L + j``:
``hit[i]`` marks those positions and ``lane[i] = j``. Lane order and position order agree, so the lanes -> positions
map is a monotone *expansion*, and it is routed by the reverse of a *compaction* network instead of a 64 x L
crossbar (which, at L = 32, was tens of thousands of multiplexers with every product bit fanning out to 64 entries
per accumulator: the lanes-16/32 engines did not route, issue 6).

* Compaction (control only): every hit position i holds an item "lane[i]" that must move left from slot i to slot
  lane[i]. Stage k = 0..5 (LSB first) moves an item at slot s by 2^k iff bit k of its remaining distance is set.
  After stages 0..k-1 the remaining distance s - lane is a multiple of 2^k, so its bit k is ``s[k] ^ lane[k]``
  (``s[k]`` alone for k >= log2 L, where lane[k] = 0): no subtraction. ``go_k[s]`` records the moves. LSB-first
  compaction of a monotone map never puts two items in one slot.
* Expansion (data): the products enter at slots 0..L-1 and the compaction runs backwards (stage 5 first): at stage k,
  slot t takes the value of slot t - 2^k iff ``go_k[t]``, else keeps its own. It is conflict-free because the
  compaction was. Each product bit fans out to two multiplexers per stage.

Slots that receive no product carry don't-care values; ``hit_o`` (the input ``hit`` delayed) tells which are real.
Cost per stage: 64 x (PROD_BITS) mux2 for the data, a few bits per slot for the control; the compaction needs only
``valid`` plus the lane bits not yet consumed.

Timing: ``hit``, ``lane`` and ``prod`` presented in cycle t (all from registers) give ``val``/``hit_o`` visible from
cycle t + SCATTER_LATENCY. Three network stages per register (one LUT4 level each: compaction stages need valid,
go-bit, payload of two slots; expansion stages a mux2): C1 = compaction stages 0-2, C2 = 3-5 (``prod`` waits two
registers meanwhile), E1 = expansion stages 5-3, E2 = 2-0.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.layouts import PROD_BITS, TILE, check_lanes, checking, products_layout, replica

__all__ = ["ScatterNetwork", "SCATTER_LATENCY"]

SCATTER_LATENCY = 4
STAGES = 6  # log2(TILE)
PER_CYCLE = 3  # network stages between two registers
#: bit ranges of a product served by one copy of each go register (fan-out relief: a go bit selects all PROD_BITS bits
#: of its slot, and the placer spreads a slot's bits; one go register per slot was the lanes-64 critical path in
#: several place-and-route runs, 8.5-10.4 ns of routing into the expansion muxes)
GO_SPLIT = ((0, 7), (7, PROD_BITS))
# compaction registers (C1, C2) + expansion registers (E1, E2)
assert SCATTER_LATENCY == 2 * (STAGES // PER_CYCLE)


class ScatterNetwork(wiring.Component):
    def __init__(self, *, lanes: int):
        with checking(self):
            self.lanes = check_lanes(lanes)
        self.lane_bits = lanes.bit_length() - 1
        super().__init__({
            "hit": In(TILE),
            "lane": In(data.ArrayLayout(unsigned(self.lane_bits), TILE)),
            "prod": In(products_layout(lanes)),
            "hit_o": Out(TILE),
            "val": Out(data.ArrayLayout(signed(PROD_BITS), TILE)),
        })

    def elaborate(self, platform):
        m = Module()
        L, lb = self.lanes, self.lane_bits

        def reg(value, shape, name):
            r = Signal(shape, name=name)
            m.d.sync += r.eq(value)
            return r

        def copies(value, name):  # one register per GO_SPLIT range, kept apart by synthesis (rtl.layouts.replica)
            cs = [replica(name=f"{name}_{i}") for i in range(len(GO_SPLIT))]
            m.d.sync += [c.eq(value) for c in cs]
            return cs

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
                # the last compaction register (c = 2) feeds the expansion directly: one copy per GO_SPLIT range
                go[lo:] = [[copies(x, f"go{lo + i}_{s}_c{c}") if k + 1 == STAGES else reg(x, 1, f"go{lo + i}_{s}_c{c}")
                            for s, x in enumerate(gk)] for i, gk in enumerate(go[lo:])]
                if k + 1 < STAGES:
                    valid = [reg(x, 1, f"cv{s}_c{c}") for s, x in enumerate(valid)]
                    lane = [reg(x, x.shape(), f"cl{s}_c{c}") if k + 1 < lb else x for s, x in enumerate(lane)]
        # go[0..2] are visible from t + 1 (C1), go[3..5] from t + 2 (C2); E1 (stages 5-3) runs in cycle t + 2 and
        # E2 (stages 2-0) in t + 3, so go[0..2] wait two more registers
        for d in range(2):
            go[:PER_CYCLE] = [[copies(x, f"go{k}_{s}_d{d}") if d == 1 else reg(x, 1, f"go{k}_{s}_d{d}")
                               for s, x in enumerate(gk)] for k, gk in enumerate(go[:PER_CYCLE])]

        # ---- expansion: the products at slots 0..L-1 wait for C2, then stages 5..0 (3 per register) ------------------
        prod = [self.prod[j] for j in range(L)]
        for c in range(2):
            prod = [reg(p, signed(PROD_BITS), f"pw{j}_{c}") for j, p in enumerate(prod)]
        z = prod + [None] * (TILE - L)  # None: no value ever reaches this slot yet
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
                    nz.append(Cat(*[Mux(g, src[a:b], z[t][a:b]) for g, (a, b) in zip(go[k][t], GO_SPLIT)]).as_signed())
            z = nz
            if k % PER_CYCLE == 0:  # register after stages 3 and 0
                z = [None if x is None else reg(x, signed(PROD_BITS), f"ez{t}_k{k}") for t, x in enumerate(z)]
        for t in range(TILE):
            m.d.comb += self.val[t].eq(z[t] if z[t] is not None else 0)

        hit = self.hit
        for c in range(SCATTER_LATENCY):
            hit = reg(hit, TILE, f"hit_d{c}")
        m.d.comb += self.hit_o.eq(hit)
        return m
