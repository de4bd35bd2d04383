"""Softmax unit: block max, running max M, rescale shift, and L exp2 lanes (the online softmax of
engine/datapath.py, bit exact), pipelined for the 100 MHz target on an LFE5U-85F-6.

State (``sync``): ``bmax`` (block max of raw scores, kept as a 20-bit offset-binary key), ``M`` (signed 30,
port ``m``) + ``m_valid``, ``l`` (uint28, port ``l``) and the 64 p values of the current block (``p_all``, uint8
each). Every output is a register. Commands (1-cycle pulses, "command at cycle t" = high during cycle t) and their
latencies are the contracts of engine/timing.py:

* ``head_start``: m_valid <= 0, l <= 0 (at the edge ending cycle t).   ``blk_start``: bmax <= -2^19 (same edge).
  Both must come after every earlier command's results have landed (the engine leaves >= 40 cycles).
* ``scan`` (SCAN_LATENCY = 5): bmax <= max(bmax, max over the gated lanes of ``s``); an ``update`` at t + 5 or
  later sees it. Stages: the L scores become 21-bit unsigned keys ``gate:(s + 2^19)`` (a gated lane always beats
  an ungated one, no logic), then a max tree over cycles t .. t+2 that leaves two keys, whose nodes take 1, 2 or 4
  keys (a 4-key node is one level of 6 parallel comparators and a select, one carry chain deep; up to 16 lanes
  every node takes at most 2), then at t+3 the loop bmax <= max(bmax, a, b) over the two keys: three parallel
  comparators (a >= b, a > bmax, b > bmax, an ungated key never wins), then the load enable and a 2:1 select.
* ``update`` (UPDATE_LATENCY = 6): ``Xmax = (bmax * mant) >> shift``, ``Mblk = (Xmax + 255) >> 8``,
  ``Mnew = max(M, Mblk)`` (``Mblk`` when not m_valid), ``rescale = min(Mnew - M, 31)`` (0 when not m_valid).
  ``rescale`` holds the value and ``rescale_stb`` is high during cycle t + 6 exactly; at the edge ending t + 6,
  l <= l >> rescale, M <= Mnew, m_valid <= 1 (an ``exp`` at t + 7 or later sees the new M; M is read by the exp
  lanes in their 6th stage). Stages: t: product split ``(bmax >> 2) * mant`` (one RegisteredMul, rtl/dsp.py, 18 x
  16, whose operand registers are copies of bmax and mant) and ``bmax[0:2] * mant`` (a 17-bit add of the gated mant
  and 2 mant); t+1: their sum (36-bit carry chain);
  t+2: arithmetic shift by ``shift[3:6] * 8``; t+3: by ``shift[0:3]``; t+4: three parallel carry chains
  ``(M << 8) - Xmax`` (its sign: Mblk > M; bits 8..12: -(Mnew - M) mod 32), ``((M + 31) << 8) - Xmax`` (its sign:
  Mblk - M > 31) and ``Mblk``; t+5: the clamp -> ``rescale``/``rescale_stb``/Mnew registers, and ``l`` shifted by
  ``rescale[3:5] * 8``; t+6: by ``rescale[0:3]``. ``l`` must not change between t+5 and t+6 (no exp in flight:
  guaranteed by the engine's schedule).
* ``exp`` (EXP_LATENCY = 9, L_LATENCY = 11), per lane: ``X = (s * mant) >> shift``, ``ne = (M << 8) - X``,
  ``i = min(ne >> 8, 9)``, ``r = ne[3:8]``, ``p = (T[r] + ((1 << i) >> 1)) >> i`` (0 for a gated-off lane; ne < 0,
  which the schedule never produces, is taken as ne = 0 like the golden model's max(ne, 0)); p_all[chunk] <= p
  (visible from t + 9; other chunks unchanged), l <= l + sum(p) (visible from t + 11). Stages: t: the lane's
  score into its operand registers (bits 2.. in the lane's RegisteredMul, bits 0..1 in fabric); t+1: split product
  as for update (one DSP per lane); t+2: sum; t+3/t+4: the two
  shift halves; t+5: ``ne`` (39-bit carry chain); t+6: clamp (``ne < 0``; ``ne >> 8 >= 16`` or gated off -> T = 0)
  and the 32-entry table ``T[r]``; t+7: ``p = (T >> i) + T[i-1]`` (``(T + 2^(i-1)) >> i == (T >> i) + T[i-1]``;
  i = 9..15 give 0 through the shift) -> a per-lane p register; t+8: p_all[chunk] <= the p registers, and
  t+8 .. t+9: adder tree over the L p registers (2 levels per cycle up to 16 lanes); t+10: l <= l + sum.

Each DSP and its shifter read their own register copies of ``mant`` (the DSP's operand register and a fabric copy
for the low product) and ``shift`` (register duplication against the fan-out of one register to L + 1 lanes
spread along the DSP rows): the update's copies load at every scan, lane j's at every update and every scan with lane j
gated (the load enables differ, so synthesis cannot merge the copies). The copies are right because ``mant``/``shift``
must hold from ``blk_start`` until the block's last exp has landed (the engine's per-block registers). Each exp lane
also reads its own copy of M (a replica register, one cycle behind M: an exp reads M 5 cycles after it is issued and
at least 7 after the update that set it).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from engine.params import TILE, check_lanes
from engine.timing import EXP_LATENCY, L_LATENCY, SCAN_LATENCY, UPDATE_LATENCY
from engine.widths import EXP2_TABLE, EXP_FRAC_BITS, EXP_TABLE_BITS, L_BITS, SCORE_BITS, SHIFT_CLAMP
from rtl.dsp import RegisteredMul
from rtl.layouts import checking, replica

__all__ = ["SoftmaxUnit", "M_BITS"]

M_BITS = 30
PROD_BITS = SCORE_BITS + 16  # s * mant: |s| <= 2^19, mant < 2^16 -> signed 36
NE_BITS = M_BITS + EXP_FRAC_BITS + 1  # (M << 8) - X, signed 39

# the stage counts below are what this file implements; engine/timing.py is the contract they must equal
_SCAN_STAGES = 5  # 3 tree stages + the bmax loop + the update multiplier's operand register
_UPDATE_STAGES = 6  # product, sum, shift, shift, chains, clamp (+ the strobe cycle)
_P_STAGES = 8  # input, product, sum, shift, shift, ne, clamp+table, the lane's p register
_EXP_STAGES = _P_STAGES + 1  # + p_all, written from the p registers
_SUM_STAGES = 3  # 2 adder-tree stages (from the p registers) + the l accumulator
assert (_SCAN_STAGES, _UPDATE_STAGES, _EXP_STAGES, _P_STAGES + _SUM_STAGES) == (
    SCAN_LATENCY,
    UPDATE_LATENCY,
    EXP_LATENCY,
    L_LATENCY,
), "engine/timing.py and rtl/softmax.py disagree"


def _split_levels(n: int, stages: int = 3) -> list[int]:
    """n tree levels over `stages` pipeline stages, the later stages taking the extra ones."""
    base, extra = divmod(n, stages)
    return [base + (1 if k >= stages - extra else 0) for k in range(stages)]


def _scan_radices(lanes: int) -> list[int]:
    """Radix (1, 2 or 4) of each of the 3 max-tree stages, product = lanes / 2 (the last of the log2(lanes) levels
    is the bmax loop's): the tree levels spread over the stages, the later stages taking the extra ones (16 lanes:
    2, 2, 2; 64: 2, 4, 4).

    The tree leaves two keys, not one: a last 4-key node would gather keys from far apart in one stage, while the
    loop's 3-way max is one carry chain and two LUTs, as shallow as a 2-key node.

    The first stage compares the lanes' scores as they arrive, so a wide node there would gather scores from far
    apart; a radix-1 first stage would be a plain copy of ``s`` that synthesis merges with the exp lanes' score
    registers (the same D input), which sit by their DSPs, far from the node after it."""
    return [1 << n for n in _split_levels(lanes.bit_length() - 2)]


def _max_of(m, vals, name):
    """max of 1, 2 or 4 unsigned values: one level of parallel comparators (carry chains), then the select.

    For 4: the pair winners are chosen by a >= b and c >= d, and the pair (a|b) vs (c|d) by the one of the four
    cross comparisons the pair winners pick (a 6-input function), so only one carry chain is on any path."""
    if len(vals) == 1:
        return vals[0]
    if len(vals) == 2:
        return Mux(vals[0] >= vals[1], vals[0], vals[1])
    a, b, c, d = vals
    cmp = {}
    for x, y, tag in ((a, b, "ab"), (c, d, "cd"), (a, c, "ac"), (a, d, "ad"), (b, c, "bc"), (b, d, "bd")):
        cmp[tag] = Signal(name=f"{name}_{tag}")
        m.d.comb += cmp[tag].eq(x >= y)
    ab, cd = cmp["ab"], cmp["cd"]
    left = Mux(ab, Mux(cd, cmp["ac"], cmp["ad"]), Mux(cd, cmp["bc"], cmp["bd"]))  # max(a, b) >= max(c, d)
    return Mux(left, Mux(ab, a, b), Mux(cd, c, d))


class SoftmaxUnit(wiring.Component):
    def __init__(self, *, lanes: int):
        with checking(self):
            self.lanes = check_lanes(lanes)
        super().__init__(
            {
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
                "rescale_stb": Out(1),
                "l": Out(L_BITS),
                "m": Out(signed(M_BITS)),
                "p_all": Out(data.ArrayLayout(unsigned(8), TILE)),
            }
        )

    # ------------------------------------------------------------------------------------------ helpers
    def _scaled(self, m, name, s, s_en, mant, mant_en, shift):
        """X = (s * mant) >> shift for a signed SCORE_BITS score, valid 5 edges after ``s``/``mant`` are presented
        with their load enables (the operand registers are made here; ``shift`` is a register copy already).

        Split product: ``(s >> 2) * mant`` (18 x 16) in a RegisteredMul (one MULT18X18D with its own operand and
        product registers on ECP5, rtl/dsp.py) and ``s[0:2] * mant`` in fabric from a copy of ``s[0:2]`` and of
        ``mant``, then their sum and the two shift halves."""
        mul = RegisteredMul(signed(SCORE_BITS - 2), unsigned(16))
        m.submodules[f"{name}_mul"] = mul
        m.d.comb += [mul.a.eq(s[2:]), mul.a_en.eq(s_en), mul.b.eq(mant), mul.b_en.eq(mant_en)]
        s_lo, mant_f = Signal(2, name=f"{name}_slo"), Signal(16, name=f"{name}_mant")
        with m.If(s_en):
            m.d.sync += s_lo.eq(s[:2])
        with m.If(mant_en):
            m.d.sync += mant_f.eq(mant)
        hi = mul.p  # (s >> 2) * mant, signed 34
        lo = Signal(18, name=f"{name}_lo")  # s[0:2] * mant
        m.d.sync += lo.eq(Mux(s_lo[0], mant_f, 0) + Mux(s_lo[1], mant_f << 1, 0))
        prod = Signal(signed(PROD_BITS), name=f"{name}_prod")
        m.d.sync += prod.eq((hi << 2) + lo)
        coarse = Signal(signed(PROD_BITS), name=f"{name}_sh1")
        m.d.sync += coarse.eq(prod >> Cat(Const(0, 3), shift[3:6]))
        x = Signal(signed(PROD_BITS), name=f"{name}_x")
        m.d.sync += x.eq(coarse >> shift[0:3])
        return x

    def elaborate(self, platform):
        m = Module()
        L = self.lanes
        F, TB = EXP_FRAC_BITS, EXP_TABLE_BITS
        SB = SCORE_BITS
        levels = L.bit_length() - 1

        # ------------------------------------------------------------------ scan: block max over gated lanes
        # key = gate : (s + 2^19) (offset binary): unsigned compare, a gated lane beats any ungated one
        keys = [Cat(self.s[j][: SB - 1], ~self.s[j][SB - 1], self.gate[j]) for j in range(L)]
        for k, radix in enumerate(_scan_radices(L)):
            keys = [_max_of(m, keys[radix * q : radix * (q + 1)], f"scan{k}_{q}") for q in range(len(keys) // radix)]
            regs = [Signal(SB + 1, name=f"scan{k}_{q}") for q in range(len(keys))]
            m.d.sync += [r.eq(v) for r, v in zip(regs, keys)]
            keys = regs
        scan_v = Signal(3)  # scan valid at the outputs of the 3 tree stages
        m.d.sync += scan_v.eq(Cat(self.scan, scan_v[:2]))
        ka, kb = keys  # the tree's two keys: the loop takes max(bmax, a, b) over the gated ones
        bmax_key = Signal(SB)  # bmax + 2^19
        a_ge_b, a_wins, b_wins = Signal(), Signal(), Signal()
        m.d.comb += [
            a_ge_b.eq(ka >= kb),
            a_wins.eq(ka[SB] & (ka[:SB] > bmax_key)),
            b_wins.eq(kb[SB] & (kb[:SB] > bmax_key)),
        ]
        # max(a, b) is gated and beats bmax: the larger of a and b (a gated key beats an ungated one through the key's
        # top bit) decides which of the two bmax comparisons counts
        key_d = Mux(self.blk_start, 0, Mux(a_ge_b, ka, kb)[:SB])
        key_en = self.blk_start | (scan_v[2] & Mux(a_ge_b, a_wins, b_wins))
        with m.If(key_en):
            m.d.sync += bmax_key.eq(key_d)

        # ------------------------------------------------------------------ update
        m_valid = Signal()
        m31 = Signal(signed(M_BITS + 1))  # M + 31, follows M one cycle later (updates are far apart)
        m.d.sync += m31.eq(self.m + SHIFT_CLAMP)
        upd_v = Signal(6)  # update valid at the outputs of stages t .. t+5
        m.d.sync += upd_v.eq(Cat(self.update, upd_v[:5]))
        # local copies of mant (the update DSP's operand register) and shift, loaded by every scan (mant and shift
        # hold from blk_start on); the DSP's other operand register is a copy of bmax
        shift_u = Signal(6)
        with m.If(self.scan):
            m.d.sync += shift_u.eq(self.shift)
        # the update multiplier's operands copy the bmax register every cycle (one edge behind it): loading them from
        # the loop's own next value and enable would put the DSP, placed far away in the DSP rows, at the end of the
        # bmax loop's compare chain
        bmax_q = Cat(bmax_key[: SB - 1], ~bmax_key[SB - 1]).as_signed()
        xmax = self._scaled(m, "upd", bmax_q, Const(1, 1), self.mant, self.scan, shift_u)  # valid at the output of t+3
        ne_a = Signal(signed(NE_BITS))  # (M << 8) - Xmax: >> 8 is M - Mblk
        ne_b = Signal(signed(NE_BITS + 1))  # ((M + 31) << 8) - Xmax: < 0 <=> Mblk - M > 31
        mblk = Signal(signed(M_BITS + 1))
        m.d.sync += [
            ne_a.eq((self.m << F) - xmax),
            ne_b.eq((m31 << F) - xmax),
            mblk.eq((xmax + ((1 << F) - 1)) >> F),
        ]
        # stage t+5: clamp
        grow = m_valid & ne_a[-1]  # Mblk > M (and not the head's first block)
        neg5 = (-ne_a[F : F + 5])[:5]  # (Mblk - M) mod 32
        resc = Mux(grow, Mux(ne_b[-1], SHIFT_CLAMP, neg5), 0)
        mnew = Signal(signed(M_BITS))
        l_c = Signal(L_BITS)  # l >> (rescale & 24)
        m.d.sync += [
            self.rescale_stb.eq(upd_v[4]),
            mnew.eq(Mux(~m_valid | ne_a[-1], mblk, self.m)),
        ]
        with m.If(upd_v[4]):
            m.d.sync += [self.rescale.eq(resc), l_c.eq(self.l >> Cat(Const(0, 3), resc[3:5]))]

        # ------------------------------------------------------------------ exp lanes
        exp_v = Signal(L_LATENCY - 1)  # exp valid at the outputs of stages t .. t + L_LATENCY - 2
        m.d.sync += exp_v.eq(Cat(self.exp, exp_v[:-1]))
        chunk_d = [self.chunk]
        for k in range(_P_STAGES):  # chunk to stage t+8 (the p_all write address)
            c = Signal.like(self.chunk, name=f"chunk_d{k}")
            m.d.sync += c.eq(chunk_d[-1])
            chunk_d.append(c)
        gate_d = [self.gate]
        for k in range(_P_STAGES - 2):  # gate to stage t+6 (clamp and table)
            g = Signal(L, name=f"gate_d{k}")
            m.d.sync += g.eq(gate_d[-1])
            gate_d.append(g)
        table = Array(Const(t, 8) for t in EXP2_TABLE)
        ps = []
        for j in range(L):
            # stage t: the lane's score and its own copies of mant and shift (register duplication against the
            # fan-out to every lane; the load enables differ per lane, so synthesis does not merge the copies; every
            # copy loads at the update, after which mant and shift hold until the block's exps are done)
            shift_j = Signal(6, name=f"shift{j}")
            m_j = replica(signed(M_BITS), name=f"m{j}")  # M, one cycle later (an exp reads it 5 cycles after issue)
            m.d.sync += m_j.eq(self.m)
            load = self.update | (self.scan & self.gate[j])
            with m.If(load):
                m.d.sync += shift_j.eq(self.shift)
            x = self._scaled(m, f"e{j}", self.s[j], Const(1, 1), self.mant, load, shift_j)  # stage t+4 output
            ne = Signal(signed(NE_BITS), name=f"ne{j}")
            m.d.sync += ne.eq((m_j << F) - x)  # t+5
            # t+6: clamp and table
            neg = ne[-1]
            big = ne[F + 4 :] != 0  # ne >> 8 >= 16; 9..15 give p = 0 through the shift itself (T < 2^8)
            t_r = Signal(8, name=f"t{j}")
            i_r = Signal(4, name=f"i{j}")
            gated = gate_d[-1][j]  # stage t+6
            m.d.sync += [
                t_r.eq(Mux(~gated | (~neg & big), 0, table[Mux(neg, 0, ne[F - TB : F])])),  # T = 0: p = 0
                i_r.eq(Mux(neg, 0, ne[F : F + 4])),
            ]
            # t+7: p = (T >> i) + T[i-1]
            p_next = Signal(8, name=f"pn{j}")
            m.d.comb += p_next.eq((t_r >> i_r) + (Cat(Const(0, 1), t_r) >> i_r)[0])
            p = Signal(8, name=f"p{j}")
            m.d.sync += p.eq(p_next)
            ps.append(p)
        # t+8: p_all[chunk] from the p registers. p_all is read by the engine's beat pipeline, away from the lanes:
        # written straight from p_next, the table shift/add and that long wire would be one path
        pa = self.p_all.as_value()
        with m.If(exp_v[_P_STAGES - 1]):
            m.d.sync += pa.word_select(chunk_d[_P_STAGES], 8 * L).eq(Cat(*ps))
        # t+8 .. t+9: adder tree over the lanes
        vals = ps
        for k, n in enumerate(_split_levels(levels, _SUM_STAGES - 1)):
            for _ in range(n):
                vals = [vals[2 * q] + vals[2 * q + 1] for q in range(len(vals) // 2)]
            regs = [Signal(8 + levels, name=f"sum{k}_{q}") for q in range(len(vals))]
            m.d.sync += [r.eq(v) for r, v in zip(regs, vals)]
            vals = regs
        psum = vals[0]

        # ------------------------------------------------------------------ l, M, m_valid
        with m.If(self.head_start):
            m.d.sync += [m_valid.eq(0), self.l.eq(0)]
        with m.Elif(upd_v[5]):
            m.d.sync += [self.m.eq(mnew), m_valid.eq(1), self.l.eq(l_c >> self.rescale[0:3])]
        with m.Elif(exp_v[-1]):
            m.d.sync += self.l.eq(self.l + psum)
        return m
