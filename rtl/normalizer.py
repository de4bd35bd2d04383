"""Normaliser: ``Q = floor(2^44 / l)`` by restoring division, then ``o[c] = sat16((acc[c] * Q + 2^35) >> 36)``.

Pipelined for the 100 MHz target on an LFE5U-85F-6; the latency contract is ``engine.timing.NORM_PIPE``.

Timing (``start`` high during cycle t, ``o.ready`` always high)
--------------------------------------------------------------
* t: ``start`` sets ``busy``; the remainder holds its initial value 2^44 >> 38 = 64 (set by reset and by the
  previous division's last cycle).
* t+1 .. t+RECIP_BITS: one quotient bit per cycle, MSB first (``diff = 2 rem - l``; if ``diff >= 0``:
  ``rem = diff``, bit 1; else ``rem = 2 rem``, bit 0): one 30-bit subtract and a 2:1 mux per cycle.
* output beat c is valid during cycle t + 1 + RECIP_BITS + NORM_PIPE + c, one per cycle.

Output pipeline (one beat per stage; every stage advances each cycle, ``o.ready`` only gates the last)
-------------------------------------------------------------------------------------------------------
Back-pressure is credit based: a beat leaves the issue register only while fewer than _SKID beats are between it
and the output register (in flight or parked in a _SKID-entry skid FIFO in front of the output register), so no
stage but the output register and the skid FIFO sees ``o.ready`` (a common stall enable would fan out from the
output handshake to every fetch mux by the output accumulators across the die). With ``o.ready`` high the skid FIFO
stays empty and every beat moves through the pipeline one stage per cycle.

The beat index c is issued into the pipeline while the division still runs (``acc`` only has to be stable from
then on; it is never latched), so that the first beat's accumulator word reaches the multiplier exactly in the
first cycle after the division. The pipeline registers, in order:

* I   (issue): the index c (an up-counter), its ``last`` flag.
* F1a (fetch 1a): for each of 8 groups of D/8 consecutive words, for each run of 4 words in it, the word
  ``c mod 4`` of the run (4:1 mux per bit, one LUT level with PFUMX).
* F1b (fetch 1b): per group, the word ``c mod (D/8)``: a 2:1 or 4:1 mux of its F1a words. (One 8 or 16:1 mux per
  group in one stage would be 4 LUT levels behind a select that fans out to the group's 16 x 32 mux LUTs by the output
  accumulators.)
* F2  (fetch 2): ``acc[c]``: an 8:1 mux of the F1b words by ``c div (D/8)`` (index bits carried along).
* F3  (fetch 3): ``a``, a plain copy of F2, so that the multiplier inputs come from registers next to the DSPs.
* P   (NORM_PIPE stage 1): six partial products, one MULT18X18D each: ``a = ah 2^17 + al`` (al: 17 bits unsigned,
  ah: 15 bits signed), ``Q = q2 2^34 + q1 2^17 + q0`` (q0, q1: 17 bits, q2: 4 bits unsigned).
* S   (stage 2): three sums of two products each, ``X = al q0 + 2^35 + (al q1 << 17)`` (the rounding constant
  fills a bit that is always 0), ``Y = ah q0 + (ah q1 << 17)``, ``Z = al q2 + (ah q2 << 17)``.
* T   (stage 3): ``R = (X + (Y << 17) + (Z << 34)) >> 36``, i.e. ``(acc[c] Q + 2^35) >> 36`` (34 bits signed; the 17 low
  bits of X take no adder).
* O   (stage 4): the ``o`` payload register: ``R`` saturated to int16, ``last`` (c = D - 1), ``o.valid``. Loaded
  when it is empty or being read: from the skid FIFO's head if that holds a beat, else from T; a T beat that the
  output register does not take (or that would overtake the FIFO) goes into the FIFO.

``o.valid`` and ``o.payload`` come from registers only; ``done = o.valid & o.ready & last``. ``l`` must stay
constant from ``start`` to ``done``, ``acc`` from cycle t + ACC_READ_FROM = t + RECIP_BITS - 3 (when F1a first reads
it) to ``done``; the next ``start`` may come the cycle after ``done``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from engine.params import check_head_dim
from engine.timing import NORM_PIPE
from engine.widths import ACC_BITS, L_BITS, OUT_BITS, OUT_FRAC_BITS, RECIP_BITS, RECIP_SHIFT
from rtl.layouts import OutBeat, checking, replica

__all__ = ["Normalizer", "ACC_READ_FROM"]

_GROUPS = 8  # F1 groups (F2 is an 8:1 mux)
_RUN = 4  # words per F1a mux
_FETCH = 4  # fetch stages F1a, F1b, F2, F3 between the issue register and the multipliers
_CHUNK = 17  # unsigned operand chunk of an 18x18 signed multiplier
_STAGES = 4  # P, S, T, O: must equal NORM_PIPE
# credits: beats past the issue register and not yet in the output register: one per stage F1a .. T
# (_FETCH + _STAGES - 1) and two spare, so that a stall-free stream never waits for a credit
_SKID = _FETCH + _STAGES + 1
#: ``acc`` is first read in cycle t + ACC_READ_FROM after ``start`` at t (the issue register is first valid in
#: t + 1 + RECIP_BITS - _FETCH, and F1a reads acc in that cycle)
ACC_READ_FROM = RECIP_BITS + 1 - _FETCH


class Normalizer(wiring.Component):
    def __init__(self, *, head_dim: int):
        with checking(self):
            self.head_dim = check_head_dim(head_dim)
        super().__init__(
            {
                "start": In(1),
                "l": In(L_BITS),
                "acc": In(data.ArrayLayout(signed(ACC_BITS), head_dim)),
                "o": Out(stream.Signature(OutBeat)),
                "done": Out(1),
            }
        )

    def elaborate(self, platform):
        assert _STAGES == NORM_PIPE, "the output pipeline must have exactly NORM_PIPE stages (engine/timing.py)"
        assert ACC_BITS - _CHUNK <= 18 and RECIP_BITS <= 3 * _CHUNK
        m = Module()
        D = self.head_dim
        G = _GROUPS
        S = D // G  # words per F1 group
        lo_bits = (S - 1).bit_length()

        # ---- division: t+1 .. t+RECIP_BITS ----------------------------------------------------------------
        # ``start`` sets only ``busy``: the division's last cycle leaves rem and k ready for the next one (rem = r0,
        # k = 0), and q needs no clear (its RECIP_BITS steps shift every old bit out), so that ``start`` does not drive
        # the resets of ~70 flip-flops spread over the normaliser.
        r0 = 1 << (RECIP_SHIFT - RECIP_BITS)
        rem = Signal(L_BITS, init=r0)
        q = Signal(RECIP_BITS)
        k = Signal(range(RECIP_BITS))
        busy = Signal()
        diff = Signal(signed(L_BITS + 2))
        m.d.comb += diff.eq(Cat(0, rem).as_unsigned() - self.l)
        ge = ~diff[-1]
        with m.If(busy):
            m.d.sync += [rem.eq(Mux(ge, diff[:L_BITS], Cat(0, rem))), q.eq(Cat(ge, q)), k.eq(k + 1)]
            with m.If(k == RECIP_BITS - 1):
                m.d.sync += [busy.eq(0), k.eq(0), rem.eq(r0)]
        with m.If(self.start):  # never while busy (the next start comes after done)
            m.d.sync += busy.eq(1)

        # ---- output pipeline --------------------------------------------------------------------------------
        o_valid = Signal()
        take = Signal()  # the output register loads this cycle (it is empty or being read)
        m.d.comb += take.eq(~o_valid | self.o.ready)
        fire = Signal()  # the issue register's beat enters F1
        room = Signal(init=1)  # registered: fewer than _SKID beats would be in flight after this cycle
        credits = Signal(_SKID)  # thermometer code of the credits in use (0 .. _SKID)

        # I: issue register, first valid during t + 1 + RECIP_BITS - _FETCH
        iv = Signal()
        ic = Signal(range(D))
        ilast = Signal()
        # each F1 group's word select is its own copy of ic's low bits (a replica counter): one ic driving the
        # muxes of all groups, which sit by the output accumulators across the die, would be one long net
        isel = [replica(lo_bits, name=f"isel_g{g}") for g in range(G)]
        m.d.comb += fire.eq(iv & room)
        with m.If(busy & (k == RECIP_BITS - _FETCH - 1)):
            m.d.sync += [iv.eq(1), ic.eq(0), ilast.eq(D == 1)] + [c.eq(0) for c in isel]
        with m.Elif(fire):
            m.d.sync += [ic.eq(ic + 1), ilast.eq(ic == D - 2)] + [c.eq(c + 1) for c in isel]
            with m.If(ilast):
                m.d.sync += iv.eq(0)

        # F1a: one 4:1 mux per run of _RUN words; F1b: one S/_RUN:1 mux per group
        acc = self.acc
        assert S % _RUN == 0 and S >= _RUN and _RUN & (_RUN - 1) == 0
        runs = S // _RUN
        rb = _RUN.bit_length() - 1  # select bits of an F1a mux (c mod _RUN)
        f1av, f1alast = Signal(), Signal()
        f1ahi = Signal(range(G))
        f1a = [[Signal(signed(ACC_BITS), name=f"f1a_{g}_{r}") for r in range(runs)] for g in range(G)]
        f1asel = [replica(lo_bits - rb, name=f"f1asel_g{g}") for g in range(G)] if runs > 1 else []
        m.d.sync += [f1av.eq(fire), f1alast.eq(ilast), f1ahi.eq(ic[lo_bits:])]
        m.d.sync += [c.eq(isel[g][rb:]) for g, c in enumerate(f1asel)]
        for g in range(G):
            for r in range(runs):
                words = Cat(*[acc[g * S + r * _RUN + j] for j in range(_RUN)])
                m.d.sync += f1a[g][r].eq(words.word_select(isel[g][:rb], ACC_BITS))
        f1v, f1last = Signal(), Signal()
        f1hi = Signal(range(G))
        f1 = [Signal(signed(ACC_BITS), name=f"f1_{g}") for g in range(G)]
        f2v, f2last = Signal(), Signal()
        a2 = Signal(signed(ACC_BITS))
        f3v, f3last = Signal(), Signal()
        a = Signal(signed(ACC_BITS))
        m.d.sync += [f1v.eq(f1av), f1last.eq(f1alast), f1hi.eq(f1ahi)]
        for g in range(G):
            words = Cat(*f1a[g])
            m.d.sync += f1[g].eq(words.word_select(f1asel[g], ACC_BITS) if runs > 1 else words)
        # F2: 8:1 mux of the groups
        m.d.sync += [f2v.eq(f1v), f2last.eq(f1last), a2.eq(Cat(*f1).word_select(f1hi, ACC_BITS))]
        # F3: a copy that the placer can put next to the DSPs (the MULT18X18D's own delay is ~3.9 ns)
        m.d.sync += [f3v.eq(f2v), f3last.eq(f2last), a.eq(a2)]

        # P: partial products (the multiplier operands are a and the settled quotient q)
        al = a[:_CHUNK]
        ah = a[_CHUNK:].as_signed()
        q0, q1, q2 = q[:_CHUNK], q[_CHUNK : 2 * _CHUNK], q[2 * _CHUNK :]
        pv, plast = Signal(), Signal()
        p00 = Signal(unsigned(2 * _CHUNK))
        p01 = Signal(unsigned(2 * _CHUNK))
        p02 = Signal(unsigned(_CHUNK + len(q2)))
        p10 = Signal(signed(len(ah) + _CHUNK + 1))
        p11 = Signal(signed(len(ah) + _CHUNK + 1))
        p12 = Signal(signed(len(ah) + len(q2) + 1))
        # S: three sums
        sv, slast = Signal(), Signal()
        x = Signal(unsigned(3 * _CHUNK + 2))
        y = Signal(signed(len(p11) + _CHUNK + 1))
        z = Signal(signed(len(p12) + _CHUNK + 1))
        # T: the rounded, shifted product
        sh = RECIP_SHIFT - OUT_FRAC_BITS  # 36
        tv, tlast = Signal(), Signal()
        r = Signal(signed(ACC_BITS + RECIP_BITS + 1 - sh))
        # x's low _CHUNK bits pass through; only bits >= _CHUNK take the 3-operand add
        hi = Signal(signed(len(r) + sh - _CHUNK + 1))
        m.d.comb += hi.eq(x[_CHUNK:] + y + (z << _CHUNK))
        # O: output register, fed from the skid FIFO's head or from T
        o_data = Signal(signed(OUT_BITS))
        o_last = Signal()
        m.d.sync += [
            pv.eq(f3v),
            plast.eq(f3last),
            p00.eq(al * q0),
            p01.eq(al * q1),
            p02.eq(al * q2),
            p10.eq(ah * q0),
            p11.eq(ah * q1),
            p12.eq(ah * q2),
        ]
        # bit 35 of p00 (< 2^34) is always 0, so OR-ing in the rounding constant 2^35 is an exact add
        m.d.sync += [
            sv.eq(pv),
            slast.eq(plast),
            x.eq(Cat(p00, 0, 1) + (p01 << _CHUNK)),
            y.eq(p10 + (p11 << _CHUNK)),
            z.eq(p02 + (p12 << _CHUNK)),
        ]
        m.d.sync += [tv.eq(sv), tlast.eq(slast), r.eq(hi[sh - _CHUNK :])]
        top, bot = (1 << (OUT_BITS - 1)) - 1, -(1 << (OUT_BITS - 1))
        sign = r[-1]
        ovf = ~((r[OUT_BITS - 1 :] == 0) | (r[OUT_BITS - 1 :] == (1 << (len(r) - OUT_BITS + 1)) - 1))
        t_beat = Cat(Mux(ovf, Mux(sign, bot, top), r[:OUT_BITS])[:OUT_BITS], tlast)
        m.submodules.skid = skid = SyncFIFO(width=OUT_BITS + 1, depth=_SKID)
        m.d.comb += [
            skid.w_data.eq(t_beat),
            skid.w_en.eq(tv & ~(take & ~skid.r_rdy)),
            skid.r_en.eq(take),
        ]
        with m.If(take):
            m.d.sync += [o_valid.eq(skid.r_rdy | tv), Cat(o_data, o_last).eq(Mux(skid.r_rdy, skid.r_data, t_beat))]
        # credits: +1 per beat fired into F1a, -1 per beat loaded into O. Kept as a thermometer code (bit i: more than
        # i credits in use), so a step is a shift and ``room`` (fewer than _SKID in use after this cycle) needs two of
        # its bits, no adder: a binary count's add-then-compare would be two carry chains behind the skid FIFO's level
        loaded = take & (skid.r_rdy | tv)
        inc, dec = fire & ~loaded, loaded & ~fire
        with m.If(inc):
            m.d.sync += [credits.eq(Cat(1, credits[:-1])), room.eq(~credits[_SKID - 2])]
        with m.Elif(dec):
            m.d.sync += [credits.eq(credits[1:]), room.eq(1)]
        with m.Else():
            m.d.sync += room.eq(~credits[_SKID - 1])
        m.d.comb += [
            self.o.valid.eq(o_valid),
            self.o.payload.data.eq(o_data),
            self.o.payload.last.eq(o_last),
            self.done.eq(o_valid & self.o.ready & o_last),
        ]
        return m
