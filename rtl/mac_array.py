"""MAC array: ``lanes`` int4 x signed-9 multipliers sharing one multiplicand (combinational).

``prod[j] = a[j] * b`` with ``a[j]`` int4 (-8..7) and ``b`` signed 9 bits: the int8 folded query element of a
K tile (-128..127) or the uint8 p' of a V tile (0..255). Products are 13-bit signed; the accumulators add
them (rtl/accumulator.py), so a lane is one int4 x 8-bit multiply-accumulate. ``b`` comes in
``max(1, lanes // MAC_GROUP)`` identical copies, lane j reading copy ``j // MAC_GROUP`` (the engine registers each:
one register driving all 64 lanes, 9.7 ns of routing, was the lanes-64 engine's critical path). The engine builds one
with 64 lanes, one per tile position, after its scatter network (rtl/engine.py), whatever its own lane count.

Each product is built from LUTs and carry chains as ``(a0 b + 2 a1 b) + (4 a2 b - 8 a3 b)`` (two adders in parallel,
then one), not with ``*``: Yosys maps any multiply of >= 2 x 2 bits to a MULT18X18D, and the lanes-32 engine's 32
MAC DSPs sat in the DSP rows, far from the scatter network they feed (issue 6).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.layouts import MULT_BITS, check_lanes, checking, products_layout, values_layout

__all__ = ["MacArray", "MAC_GROUP"]

#: lanes per copy of the multiplicand b (the engine registers each copy: fan-out relief). 8 lanes per copy left a
#: copy's net to its farthest lane at 5.5 ns (lanes 64, RTL 966625a, seeds 2 and 3: ``s4_b* -> mac.prod``, 11.1-11.4 ns)
MAC_GROUP = 4


class MacArray(wiring.Component):
    def __init__(self, *, lanes: int):
        with checking(self):
            self.lanes = check_lanes(lanes)
        self.copies = max(1, lanes // MAC_GROUP)
        super().__init__({
            "a": In(values_layout(lanes)),
            "b": In(data.ArrayLayout(signed(MULT_BITS), self.copies)),
            "prod": Out(products_layout(lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        for j in range(self.lanes):
            b = self.b[j * self.copies // self.lanes]
            a = self.a[j]
            pp = [Mux(a[k], b << k, 0) for k in range(4)]  # a = a0 + 2 a1 + 4 a2 - 8 a3 (two's complement)
            m.d.comb += self.prod[j].eq((pp[0] + pp[1]) + (pp[2] - pp[3]))
        return m
