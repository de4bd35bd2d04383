"""Bitmap decoder: which token/channel position of a 64-element tile each lane serves in a given beat.

For the tile bitmap ``bm`` (bit i = element i is streamed) the streamed values are numbered by their rank
``r_i = popcount(bm[0:i])``; beat ``c`` carries values ``cL .. cL+L-1``. Outputs (combinational):

* ``hit[i] = bm[i] & (r_i // L == beat)``: position i is updated in this beat,
* ``lane[i] = r_i mod L``: by the product of that lane,
* ``count = popcount(bm)``, ``nbeats = max(1, ceil(count / L))``, ``last = (beat == nbeats - 1)``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.layouts import TILE, check_lanes, checking

__all__ = ["BitmapDecoder"]


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
        ranks = []  # exclusive prefix popcounts r_i
        acc = None
        for i in range(TILE):
            r = Signal(range(TILE + 1), name=f"rank{i}")
            m.d.comb += r.eq(0 if acc is None else acc)
            ranks.append(r)
            acc = r + self.bitmap[i]
        m.d.comb += self.count.eq(acc)
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
