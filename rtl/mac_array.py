"""MAC array: ``lanes`` int4 x signed-9 multipliers sharing one multiplicand (combinational).

``prod[j] = a[j] * b`` with ``a[j]`` int4 (-8..7) and ``b`` signed 9 bits: the int8 folded query element of a
K tile (-128..127) or the uint8 p' of a V tile (0..255). Products are 13-bit signed; the accumulators add
them (rtl/accumulator.py), so a lane is one int4 x 8-bit multiply-accumulate.
"""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.layouts import MULT_BITS, check_lanes, checking, products_layout, values_layout

__all__ = ["MacArray"]


class MacArray(wiring.Component):
    def __init__(self, *, lanes: int):
        with checking(self):
            self.lanes = check_lanes(lanes)
        super().__init__({
            "a": In(values_layout(lanes)),
            "b": In(signed(MULT_BITS)),
            "prod": Out(products_layout(lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        for j in range(self.lanes):
            m.d.comb += self.prod[j].eq(self.a[j] * self.b)
        return m
