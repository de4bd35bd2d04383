"""Scatter accumulator: ``entries`` signed registers, each updated by at most one routed product per cycle.

One clock domain (``sync``). Per cycle, in priority order:

* ``clear``: all entries <= 0;
* ``shift_en``: all entries <= entry >> ``shift`` (arithmetic, floor) -- the online-softmax rescale; only built with
  ``shift=True`` (the output accumulators; the score accumulators are cleared per block and never shifted). It is done
  in steps of 4 or 1 bits, one step per cycle (``shift_steps(shift)`` = shift // 4 + shift % 4 cycles, at most 10 for
  the engine's rescale clamp of 31): the arithmetic shifts compose exactly, and each bit chooses among only
  ``entry + val``, ``entry[i + 1]`` and ``entry[i + 4]``. (A one-cycle 0..width-1 barrel shifter per entry would cost
  tens of thousands of LUTs and wide multiplexers at 64 x 32 bits.)
* ``add_en``: entry e <= entry + val[e] for every e with ``hit[e]`` and ``add_en[e // GROUP]``. The products arrive
  already routed to their entries (rtl/scatter.py), so each entry has one adder and no product multiplexer. ``add_en``
  has one bit per GROUP entries so that its driver can be one register copy per group (no single enable register
  gates every entry through one long net).

The add is pipelined (ADD_LATENCY = 2): in the cycle ``add_en``/``hit``/``val`` are presented, each entry registers
its gated product (0 when not hit), and the next cycle adds it, so the update is visible two cycles after the inputs.
The gating register is this accumulator's own copy next to its adders (the score and the output accumulators share
the routed products; a shared register would be merged by Yosys and its nets would cross the chip).
``clear`` is registered the same way (ADD_LATENCY too); each group of 8 entries has its own copy of the clear register,
of the shift command (``shift_en``/``shift``, registered as they arrive) and of the shift-step state (remaining shift,
step flags). A shift presented in cycle t takes its steps at the edges ending t + SHIFT_LATENCY - 1 ..
t + SHIFT_LATENCY - 2 + shift_steps(shift); no add may land and no clear or shift may be presented meanwhile, and a
clear or shift must not land together with an add (the engine never issues them within a beat pipeline's drain, and
its schedule leaves the rescale more than SHIFT_LATENCY + SHIFT_STEPS_MAX cycles before the next add). The command
register per group is there because the shift comes from the softmax unit, far from most groups: without it, the
path would be softmax ``rescale`` -> every group's step logic -> its step flags, and the placer may put a group's step
flag register by the softmax, far from the entries whose clock enables it drives.

``acc`` exposes all entries (registered values). Width overflow wraps; the golden model bounds the values so
that it never happens (engine/datapath.py).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from base.errors import SpecError
from engine.params import TILE
from engine.widths import PROD_BITS, SHIFT_CLAMP
from rtl.layouts import checking, replica

__all__ = ["Accumulator", "ADD_LATENCY", "SHIFT_LATENCY", "GROUP", "shift_steps", "SHIFT_STEPS_MAX"]

ADD_LATENCY = 2  # add and clear take effect at the second rising edge after they are presented
SHIFT_LATENCY = 3  # a shift's first step lands at the third rising edge after it is presented (one per edge after)
GROUP = 8  # entries served by one copy of the clear/shift registers and by one add_en bit
BIG_STEP = 4  # the shift steps: BIG_STEP or 1 bit per cycle


def shift_steps(shift: int) -> int:
    """Cycles (steps) an accumulator takes to shift by ``shift``."""
    return shift // BIG_STEP + shift % BIG_STEP


SHIFT_STEPS_MAX = shift_steps(SHIFT_CLAMP)  # the engine's rescale shifts are clamped to SHIFT_CLAMP


class Accumulator(wiring.Component):
    def __init__(self, *, entries: int, width: int, shift: bool = True):
        with checking(self):
            if not isinstance(entries, int) or entries < TILE or entries % TILE:
                raise SpecError(f"entries must be a positive multiple of {TILE}, got {entries!r}")
            if not isinstance(width, int) or not 16 <= width <= 48:
                raise SpecError(f"width must be an int in [16, 48], got {width!r}")
            self.entries, self.width, self.has_shift = entries, width, bool(shift)
        ports = {"clear": In(1)}
        if self.has_shift:
            ports.update({"shift_en": In(1), "shift": In(range(width))})
        super().__init__(
            {
                **ports,
                "add_en": In(entries // GROUP),
                "hit": In(entries),
                "val": In(data.ArrayLayout(signed(PROD_BITS), entries)),
                "acc": Out(data.ArrayLayout(signed(width), entries)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        # clear and the shift-step state are registered once per group of GROUP entries: a local copy drives each
        # group's muxes (one register driving all entries is a net of thousands of loads). The copies are replicas
        # (rtl.layouts.replica), which the bitstream flow keeps apart from one another.
        copies = []
        for g in range(self.entries // GROUP):
            c = replica(name=f"clear_g{g}")
            m.d.sync += c.eq(self.clear)
            big = one = None
            if self.has_shift:
                cmd_en = replica(name=f"shift_cmd_en_g{g}")  # this group's copy of the shift command
                cmd = replica(range(self.width), name=f"shift_cmd_g{g}")
                m.d.sync += [cmd_en.eq(self.shift_en), cmd.eq(self.shift)]
                rem = replica(range(self.width), name=f"shift_rem_g{g}")  # shift left after the flagged step
                big = replica(name=f"shift_big_g{g}")  # this cycle: entries >>= BIG_STEP
                one = replica(name=f"shift_one_g{g}")  # this cycle: entries >>= 1
                nxt = Mux(cmd_en, cmd, rem)  # a new shift, or what is left of the current one
                nbig = nxt >= BIG_STEP
                m.d.sync += [
                    big.eq(nbig),
                    one.eq(~nbig & (nxt != 0)),
                    rem.eq(Mux(nbig, nxt - BIG_STEP, Mux(nxt != 0, nxt - 1, 0))),
                ]
            copies.append((c, big, one))
        for e in range(self.entries):
            a = self.acc[e]
            clear, big, one = copies[e // GROUP]
            # gate the routed product (registered), then one adder per entry
            p = Signal(signed(PROD_BITS), name=f"sel{e}")
            m.d.sync += p.eq(Mux(self.add_en[e // GROUP] & self.hit[e], self.val[e], 0))
            with m.If(clear):
                m.d.sync += a.eq(0)
            if self.has_shift:
                with m.Elif(big):
                    m.d.sync += a.eq(a >> BIG_STEP)
                with m.Elif(one):
                    m.d.sync += a.eq(a >> 1)
            with m.Else():
                m.d.sync += a.eq(a + p)
        return m
