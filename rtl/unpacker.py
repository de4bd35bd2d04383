"""Unpacker: a values-bus word (``lanes`` packed int4 nibbles) -> ``lanes`` signed int4 lane values.

Combinational and stall-transparent: ``o.valid = i.valid``, ``i.ready = o.ready``; element j of the word is
bits [4j, 4j+3] (TEAM.md nibble order), reinterpreted as two's complement.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from engine.params import check_lanes
from rtl.layouts import checking, raw_values_shape, values_layout

__all__ = ["Unpacker"]


class Unpacker(wiring.Component):
    def __init__(self, *, lanes: int):
        with checking(self):
            self.lanes = check_lanes(lanes)
        super().__init__(
            {
                "i": In(stream.Signature(raw_values_shape(lanes))),
                "o": Out(stream.Signature(values_layout(lanes))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [
            self.o.payload.as_value().eq(self.i.payload),
            self.o.valid.eq(self.i.valid),
            self.i.ready.eq(self.o.ready),
        ]
        return m
