"""Pipelined 64-bit population count: ``count`` (registered) = popcount of ``x`` presented two cycles earlier.

Stage 1: 16 nibble counts (one LUT4 per bit) summed by two adder levels into 4 quarter counts (<= 16, registered).
Stage 2: two adder levels into the count (<= 64, registered). Each stage is one LUT level plus two short carry
chains, which fits the engine's 100 MHz budget on ECP5 (engine/timing.py). ``x`` must come from registers.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from engine.params import TILE

__all__ = ["Popcount64", "POPCOUNT_LATENCY"]

POPCOUNT_LATENCY = 2


class Popcount64(wiring.Component):
    def __init__(self):
        super().__init__({"x": In(TILE), "count": Out(range(TILE + 1))})

    def elaborate(self, platform):
        m = Module()
        nib = []
        for k in range(TILE // 4):
            v = Signal(range(5), name=f"nib{k}")
            m.d.comb += v.eq(sum((self.x[4 * k + t] for t in range(4)), Const(0, range(5))))
            nib.append(v)
        quarters = []
        for q in range(4):
            a = nib[4 * q] + nib[4 * q + 1]
            b = nib[4 * q + 2] + nib[4 * q + 3]
            r = Signal(range(17), name=f"quarter{q}")
            m.d.sync += r.eq(a + b)
            quarters.append(r)
        m.d.sync += self.count.eq((quarters[0] + quarters[1]) + (quarters[2] + quarters[3]))
        return m
