"""Normaliser: ``Q = floor(2^44 / l)`` by restoring division, then ``o[c] = sat16((acc[c] * Q + 2^35) >> 36)``.

``start`` (one cycle) latches the initial remainder 2^44 >> 38 = 64; then 38 DIV cycles produce one quotient
bit each (``rem2 = 2 rem``; if ``rem2 >= l``: ``rem = rem2 - l``, bit 1); then D OUT cycles present one output
beat each on the ``o`` stream (payload from registers only; ``done`` pulses with the last accepted beat).
``l`` and ``acc`` must stay constant from ``start`` to ``done``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from quant.fixedpoint import ACC_BITS, L_BITS, OUT_BITS, OUT_FRAC_BITS, RECIP_BITS, RECIP_SHIFT
from rtl.layouts import OutBeat, check_head_dim, checking

__all__ = ["Normalizer"]


class Normalizer(wiring.Component):
    def __init__(self, *, head_dim: int):
        with checking(self):
            self.head_dim = check_head_dim(head_dim)
        super().__init__({
            "start": In(1),
            "l": In(L_BITS),
            "acc": In(data.ArrayLayout(signed(ACC_BITS), head_dim)),
            "o": Out(stream.Signature(OutBeat)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        D = self.head_dim
        rem = Signal(L_BITS + 1)
        q = Signal(RECIP_BITS)
        k = Signal(range(RECIP_BITS))
        c = Signal(range(D))
        rem2 = Signal(L_BITS + 2)
        m.d.comb += rem2.eq(rem << 1)
        ge = rem2 >= self.l
        sh = RECIP_SHIFT - OUT_FRAC_BITS
        a = self.acc.as_value().word_select(c, ACC_BITS).as_signed()
        r = Signal(signed(ACC_BITS + RECIP_BITS + 2))
        m.d.comb += r.eq((a * q + (1 << (sh - 1))) >> sh)
        hi, lo = (1 << (OUT_BITS - 1)) - 1, -(1 << (OUT_BITS - 1))
        sat = Mux(r > hi, hi, Mux(r < lo, lo, r[:OUT_BITS]))
        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [rem.eq(1 << (RECIP_SHIFT - RECIP_BITS)), q.eq(0), k.eq(0)]
                    m.next = "DIV"
            with m.State("DIV"):
                m.d.sync += [rem.eq(Mux(ge, rem2 - self.l, rem2)), q.eq((q << 1) | ge), k.eq(k + 1)]
                with m.If(k == RECIP_BITS - 1):
                    m.d.sync += c.eq(0)
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(sat),
                    self.o.payload.last.eq(c == D - 1),
                ]
                with m.If(self.o.ready):
                    m.d.sync += c.eq(c + 1)
                    with m.If(c == D - 1):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
        return m
