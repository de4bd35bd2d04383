"""Scatter accumulator: ``entries`` signed registers updated by up to ``lanes`` products per cycle.

One clock domain (``sync``). Per cycle, in priority order:

* ``clear``: all entries <= 0;
* ``shift_en``: all entries <= entry >> ``shift`` (arithmetic, floor) -- the online-softmax rescale;
* ``add_en``: entry e <= entry + prod[lane[e]] for every e with ``hit[e]`` (the bitmap decoder guarantees at
  most one lane per entry and per cycle, so no adder tree is needed: each entry has an L:1 product mux feeding
  its one adder).

``acc`` exposes all entries (registered values). Width overflow wraps; the golden model bounds the values so
that it never happens (quant/fixedpoint.py).
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hwsim.errors import SpecError
from rtl.layouts import TILE, check_lanes, checking, products_layout

__all__ = ["Accumulator"]


class Accumulator(wiring.Component):
    def __init__(self, *, entries: int, width: int, lanes: int):
        with checking(self):
            if not isinstance(entries, int) or entries < TILE or entries % TILE:
                raise SpecError(f"entries must be a positive multiple of {TILE}, got {entries!r}")
            if not isinstance(width, int) or not 16 <= width <= 48:
                raise SpecError(f"width must be an int in [16, 48], got {width!r}")
            self.entries, self.width, self.lanes = entries, width, check_lanes(lanes)
        lb = lanes.bit_length() - 1
        super().__init__({
            "clear": In(1),
            "shift_en": In(1),
            "shift": In(range(width)),
            "add_en": In(1),
            "hit": In(entries),
            "lane": In(data.ArrayLayout(unsigned(lb), entries)),
            "prod": In(products_layout(lanes)),
            "acc": Out(data.ArrayLayout(signed(width), entries)),
        })

    def elaborate(self, platform):
        m = Module()
        prods = Array(self.prod[j] for j in range(self.lanes))
        for e in range(self.entries):
            a = self.acc[e]
            with m.If(self.clear):
                m.d.sync += a.eq(0)
            with m.Elif(self.shift_en):
                m.d.sync += a.eq(a >> self.shift)
            with m.Elif(self.add_en & self.hit[e]):
                # select the product first (L:1 mux), then one adder per entry -- not one adder per lane
                m.d.sync += a.eq(a + prods[self.lane[e]])
        return m
