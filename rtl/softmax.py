"""Softmax unit: block max, running max M, rescale shift, and L exp2 lanes (the online softmax of
quant/fixedpoint.py, bit exact).

State (``sync``): ``bmax`` (block max of raw scores, signed 20), ``M`` (signed 30) + ``m_valid``, ``l`` (uint28,
port ``l``) and the 64 p values of the current block (``p_all``, uint8 each). Commands, one per cycle, issued by
the engine controller:

* ``head_start``: m_valid <= 0, l <= 0.   ``blk_start``: bmax <= -2^19.
* ``scan``: bmax <= max(bmax, max over gated lanes of ``s``) (L raw scores, combinational tree).
* ``update``: ``Xmax = (bmax * mant) >> shift``, ``Mblk = (Xmax + 255) >> 8``, ``Mnew = max(M, Mblk)`` (``Mblk``
  when not m_valid); output ``rescale = min(Mnew - M, 31)`` (0 when not m_valid) this cycle; M <= Mnew,
  l <= l >> rescale.
* ``exp``: per lane ``X = (s * mant) >> shift``, ``ne = (M << 8) - X``, ``i = min(ne >> 8, 9)``,
  ``r = ne[3:8]``, ``p = (T[r] + ((1 << i) >> 1)) >> i`` (0 for a gated-off lane); p_all[chunk] <= p,
  l <= l + sum(p).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from quant.fixedpoint import (EXP2_TABLE, EXP_FRAC_BITS, EXP_TABLE_BITS, L_BITS, SCORE_BITS, SHIFT_CLAMP)
from rtl.layouts import TILE, check_lanes, checking

__all__ = ["SoftmaxUnit", "M_BITS"]

M_BITS = 30


class SoftmaxUnit(wiring.Component):
    def __init__(self, *, lanes: int):
        with checking(self):
            self.lanes = check_lanes(lanes)
        super().__init__({
            "head_start": In(1),
            "blk_start": In(1),
            "scan": In(1),
            "update": In(1),
            "exp": In(1),
            "chunk": In(range(TILE // lanes)),
            "s": In(data.ArrayLayout(signed(SCORE_BITS), lanes)),
            "gate": In(lanes),
            "mant": In(16),
            "shift": In(6),
            "rescale": Out(range(SHIFT_CLAMP + 1)),
            "l": Out(L_BITS),
            "m": Out(signed(M_BITS)),
            "p_all": Out(data.ArrayLayout(unsigned(8), TILE)),
        })

    def elaborate(self, platform):
        m = Module()
        L = self.lanes
        F, TB = EXP_FRAC_BITS, EXP_TABLE_BITS
        bmax = Signal(signed(SCORE_BITS), init=-(1 << (SCORE_BITS - 1)))
        m_valid = Signal()
        lo = Const(-(1 << (SCORE_BITS - 1)), signed(SCORE_BITS))

        # scan: max over the gated lanes
        cmax = lo
        for j in range(L):
            v = Mux(self.gate[j], self.s[j], lo)
            cmax = Mux(v > cmax, v, cmax)
        cm = Signal(signed(SCORE_BITS))
        m.d.comb += cm.eq(cmax)
        with m.If(self.blk_start):
            m.d.sync += bmax.eq(lo)
        with m.Elif(self.scan):
            m.d.sync += bmax.eq(Mux(cm > bmax, cm, bmax))

        # update
        xmax = Signal(signed(SCORE_BITS + 17))
        mblk = Signal(signed(M_BITS))
        mnew = Signal(signed(M_BITS))
        delta = Signal(signed(M_BITS + 1))
        m.d.comb += [
            xmax.eq((bmax * self.mant) >> self.shift),
            mblk.eq((xmax + ((1 << F) - 1)) >> F),
            mnew.eq(Mux(m_valid & (self.m > mblk), self.m, mblk)),
            delta.eq(Mux(m_valid, mnew - self.m, 0)),
            self.rescale.eq(Mux(delta > SHIFT_CLAMP, SHIFT_CLAMP, delta[:5])),
        ]

        # exp lanes
        table = Array(Const(t, 8) for t in EXP2_TABLE)
        psum = 0
        ps = []
        for j in range(L):
            x = Signal(signed(SCORE_BITS + 17), name=f"x{j}")
            ne = Signal(signed(M_BITS + F + 1), name=f"ne{j}")
            i = Signal(range(10), name=f"i{j}")
            p = Signal(8, name=f"p{j}")
            ie = ne >> F
            m.d.comb += [
                x.eq((self.s[j] * self.mant) >> self.shift),
                ne.eq((self.m << F) - x),
                i.eq(Mux(ie > 9, 9, ie[:4])),
            ]
            t = table[ne[F - TB:F]]
            half = (Const(1, 10) << i) >> 1
            m.d.comb += p.eq(Mux(self.gate[j], (t + half) >> i, 0))
            ps.append(p)
            psum = psum + p

        with m.If(self.head_start):
            m.d.sync += [m_valid.eq(0), self.l.eq(0)]
        with m.Elif(self.update):
            m.d.sync += [self.m.eq(mnew), m_valid.eq(1), self.l.eq(self.l >> self.rescale)]
        with m.Elif(self.exp):
            m.d.sync += self.l.eq(self.l + psum)
            pa = self.p_all.as_value()
            m.d.sync += pa.word_select(self.chunk, 8 * L).eq(Cat(*ps))
        return m
