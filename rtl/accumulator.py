"""Scatter accumulator: ``entries`` signed registers, each updated by at most one routed product per cycle.

One clock domain (``sync``). Per cycle, in priority order:

* ``clear``: all entries <= 0;
* ``shift_en``: all entries <= entry >> ``shift`` (arithmetic, floor) -- the online-softmax rescale;
* ``add_en``: entry e <= entry + val[e] for every e with ``hit[e]``. The products arrive already routed to their
  entries (rtl/scatter.py), so each entry has one adder and no product multiplexer.

The add is pipelined (ADD_LATENCY = 2): in the cycle ``add_en``/``hit``/``val`` are presented, each entry registers
its gated product (0 when not hit), and the next cycle adds it, so the update is visible two cycles after the inputs.
The gating register is this accumulator's own copy next to its adders (the score and the output accumulators share
the routed products; a shared register would be merged by Yosys and its nets would cross the chip).
``clear``/``shift_en``/``shift`` are registered the same way (ADD_LATENCY too), in one copy per group of 8 entries;
a clear or shift must not land together with an add (the engine never issues them within a beat pipeline's drain).

``acc`` exposes all entries (registered values). Width overflow wraps; the golden model bounds the values so
that it never happens (quant/fixedpoint.py).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hwsim.errors import SpecError
from rtl.layouts import PROD_BITS, TILE, checking, replica

__all__ = ["Accumulator", "ADD_LATENCY"]

ADD_LATENCY = 2  # add, clear and shift all take effect at the second rising edge after they are presented
GROUP = 8  # entries served by one copy of the clear/shift registers


class Accumulator(wiring.Component):
    def __init__(self, *, entries: int, width: int):
        with checking(self):
            if not isinstance(entries, int) or entries < TILE or entries % TILE:
                raise SpecError(f"entries must be a positive multiple of {TILE}, got {entries!r}")
            if not isinstance(width, int) or not 16 <= width <= 48:
                raise SpecError(f"width must be an int in [16, 48], got {width!r}")
            self.entries, self.width = entries, width
        super().__init__({
            "clear": In(1),
            "shift_en": In(1),
            "shift": In(range(width)),
            "add_en": In(1),
            "hit": In(entries),
            "val": In(data.ArrayLayout(signed(PROD_BITS), entries)),
            "acc": Out(data.ArrayLayout(signed(width), entries)),
        })

    def elaborate(self, platform):
        m = Module()
        # clear / shift_en / shift are registered once per group of GROUP entries: a local copy drives each group's
        # muxes (one register driving all entries is a net of thousands of loads). The copies are replicas
        # (rtl.layouts.replica), which the bitstream flow keeps apart from one another.
        copies = []
        for g in range(self.entries // GROUP):
            c = replica(name=f"clear_g{g}")
            se = replica(name=f"shift_en_g{g}")
            sh = replica(range(self.width), name=f"shift_g{g}")
            m.d.sync += [c.eq(self.clear), se.eq(self.shift_en), sh.eq(self.shift)]
            copies.append((c, se, sh))
        for e in range(self.entries):
            a = self.acc[e]
            clear, shift_en, shift = copies[e // GROUP]
            # gate the routed product (registered), then one adder per entry
            p = Signal(signed(PROD_BITS), name=f"sel{e}")
            m.d.sync += p.eq(Mux(self.add_en & self.hit[e], self.val[e], 0))
            with m.If(clear):
                m.d.sync += a.eq(0)
            with m.Elif(shift_en):
                m.d.sync += a.eq(a >> shift)
            with m.Else():
                m.d.sync += a.eq(a + p)
        return m
