"""A small int4 x int8 dot-product array: the flow's stand-in design until/unless rtl/'s engine is importable.

It has the engine's outward shape (keyword-only ``head_dim``/``lanes``, `amaranth.lib.stream` interfaces, one
``sync`` domain) so the same thin top feeds either. Per beat it multiplies ``lanes`` signed int4 keys by ``lanes``
signed int8 query elements and accumulates; after ``head_dim // lanes`` beats it emits the int32 dot product.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from base.errors import SpecError
from rtl.layouts import checking

__all__ = ["DotProductArray"]


class DotProductArray(wiring.Component):
    """``head_dim``-long int4 . int8 dot products on ``lanes`` multipliers, one beat of ``lanes`` pairs per cycle."""

    def __init__(self, *, head_dim: int, lanes: int) -> None:
        with checking(self):  # a rejected instance is marked used: no UnusedElaboratable warning at GC time
            if lanes < 1 or lanes & (lanes - 1):
                raise SpecError(f"lanes {lanes} is not a power of two >= 1; use 1, 2, 4, 8, ...")
            if head_dim % lanes:
                raise SpecError(f"head_dim {head_dim} is not a multiple of lanes {lanes}; use lanes dividing head_dim")
        self.head_dim, self.lanes = head_dim, lanes
        beat = data.StructLayout({"k": data.ArrayLayout(signed(4), lanes), "q": data.ArrayLayout(signed(8), lanes)})
        super().__init__({"i": In(stream.Signature(beat)), "o": Out(stream.Signature(signed(32)))})

    def elaborate(self, platform) -> Module:
        m = Module()
        beats = self.head_dim // self.lanes
        # stage 1: registered products (one MULT18X18D each); stage 2: adder tree + accumulate
        prod = [Signal(signed(12), name=f"prod{j}") for j in range(self.lanes)]
        prod_valid = Signal()
        prod_last = Signal()
        count = Signal(range(max(beats, 2)))
        acc = Signal(signed(32))
        take = self.i.valid & self.i.ready
        out_busy = self.o.valid & ~self.o.ready
        m.d.comb += self.i.ready.eq(~out_busy)
        with m.If(~out_busy):
            m.d.sync += prod_valid.eq(take)
            m.d.sync += prod_last.eq(take & (count == beats - 1))
            for j in range(self.lanes):
                m.d.sync += prod[j].eq(self.i.payload.k[j] * self.i.payload.q[j])
            with m.If(take):
                m.d.sync += count.eq(0 if beats == 1 else (count + 1) % beats)
        total = prod[0]
        for p in prod[1:]:
            total = total + p
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(prod_valid & ~out_busy):
            with m.If(prod_last):
                m.d.sync += [self.o.payload.eq(acc + total), self.o.valid.eq(1), acc.eq(0)]
            with m.Else():
                m.d.sync += acc.eq(acc + total)
        return m
