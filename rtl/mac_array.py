"""MAC array: ``lanes`` int4 x signed-9 multipliers sharing one multiplicand (combinational).

``prod[j] = a[j] * b`` with ``a[j]`` int4 (-8..7) and ``b`` signed 9 bits: the int8 folded query element of a
K tile (-128..127) or the uint8 p' of a V tile (0..255). Products are 13-bit signed; the accumulators add
them (rtl/accumulator.py), so a lane is one int4 x 8-bit multiply-accumulate. ``b`` comes in
``max(1, lanes // MAC_GROUP)`` identical copies, lane j reading copy ``j // MAC_GROUP`` (the engine registers each,
so that no one register drives all 64 lanes). The engine builds one
with 64 lanes, one per tile position, after its scatter network (rtl/engine.py), whatever its own lane count.

Each product is built from LUTs and carry chains as ``(a0 b + 2 a1 b) + (4 a2 b - 8 a3 b)`` (two adders in parallel,
then one), not with ``*``: Yosys maps any multiply of >= 2 x 2 bits to a MULT18X18D, and DSPs sit in the DSP rows,
far from the scatter network they would be fed by.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from engine.params import check_lanes
from engine.widths import MULT_BITS
from rtl.layouts import checking, products_layout, values_layout

__all__ = ["MacArray", "MAC_GROUP"]

#: lanes per copy of the multiplicand b (the engine registers each copy: fan-out relief; with 8 lanes per copy the
#: net from a copy to its farthest lane alone takes half the cycle)
MAC_GROUP = 4


class MacArray(wiring.Component):
    def __init__(self, *, lanes: int):
        with checking(self):
            self.lanes = check_lanes(lanes)
        self.copies = max(1, lanes // MAC_GROUP)
        super().__init__(
            {
                "a": In(values_layout(lanes)),
                "b": In(data.ArrayLayout(signed(MULT_BITS), self.copies)),
                "prod": Out(products_layout(lanes)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        for j in range(self.lanes):
            b = self.b[j * self.copies // self.lanes]
            a = self.a[j]
            pp = [Mux(a[k], b << k, 0) for k in range(4)]  # a = a0 + 2 a1 + 4 a2 - 8 a3 (two's complement)
            m.d.comb += self.prod[j].eq((pp[0] + pp[1]) + (pp[2] - pp[3]))
        return m
