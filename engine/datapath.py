"""The bit-exact golden model of the attention engine (rtl/engine.py): what it computes for one query head, on
integers only. Widths: engine/widths.py; how a real-valued head becomes these integers: engine/host.py.

The engine receives, per 64-token block b sent (Λ selection and scale folding done by the host): the block's token
mask ``sel``, its score scale ``mant / 2^shift``, the folded int8 query ``qk`` and the int4 K/V values with their
uint8 V-tile scales ``sv`` (an :class:`EngineHead`). The score of token t is the integer ``s_t = sum_d qk[d] *
k[t, d]`` and its log2-domain score ``X_t = (s_t * mant) >> shift`` (floor, F = 8 fractional bits); the V scale is
folded into p per V tile: ``p'[t, g] = (p_t * sv[t, g] + 128) >> 8`` (uint8, round half up).

Online softmax (per block, base 2)
----------------------------------
``M`` is an integer running maximum in log2 units. For each block:
``Mblk = ceil(Xmax / 2^F) = (Xmax + 2^F - 1) >> F`` with ``Xmax = (max_{t in sel} s_t * mant) >> shift``
(scaling is monotone, so the max is taken over the raw integer scores); ``Mnew = max(M, Mblk)`` (``Mblk`` for
the first block), ``delta = Mnew - M`` (0 for the first block). The running accumulators are rescaled by a
pure shift: ``acc >>= min(delta, 31)``, ``l >>= min(delta, 31)`` (arithmetic, floor). Then for each selected
token ``ne = (Mnew << F) - X_t >= 0``, ``i = ne >> F``, ``r = (ne >> (F - 5)) & 31`` (the fraction truncated
to 5 bits) and::

    p_t = (EXP2_TABLE[r] + ((1 << min(i, 9)) >> 1)) >> min(i, 9)          # uint8, 0..252
    EXP2_TABLE[r] = floor(255 * 2^(-(r + 0.5) / 32) + 0.5)                # 32 entries, 129..252

i.e. 2^(-ne/2^F) * 255 with the integer part as a rounded right shift (round half up) and the fraction from
a 32-entry table sampled at the bucket midpoints. ``l += sum_t p_t`` (uint28), and for each selected token
and channel c in V tile g: ``acc[c] += p'[t, g] * v[t, c]`` (int4 x uint8 products, int32 accumulator).

Final normalisation
-------------------
``Q = floor(2^44 / l)`` (a 38-bit restoring division; ``l >= 128`` always holds because the block that sets
``M`` contains a token with ``i = 0`` and ``p >= 129``), then
``o[c] = clip((acc[c] * Q + 2^35) >> 36, -32768, 32767)`` (round half up; ``o`` is int16 with OF = 8
fractional bits, in units of ``sv_max * 256/255``).

"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, overload

import numpy as np

from base.errors import FormatError, SpecError
from engine.params import MAX_CONTEXT, TILE, check_head_dim
from engine.widths import (
    EXP2_TABLE,
    EXP_FRAC_BITS,
    EXP_SHIFT_MAX,
    EXP_TABLE_BITS,
    L_BITS,
    MANT_BITS,
    MAX_SHIFT,
    OUT_BITS,
    OUT_FRAC_BITS,
    RECIP_SHIFT,
    SHIFT_CLAMP,
    SV_BITS,
)

__all__ = [
    "EngineHead",
    "EngineTrace",
    "SoftmaxState",
    "run_engine",
    "scale_scores",
    "exp2_fixed",
    "fold_pv",
    "reciprocal",
    "normalize",
]


# ------------------------------------------------------------------------------------------- engine inputs
@dataclass(frozen=True)
class EngineHead:
    """Integer inputs of one head as the engine receives them (B = number of blocks sent, D = head_dim).

    sel: uint64 [B] token masks; block: int64 [B] absolute block index (informational);
    score_mant: int64 [B] (uint16) and score_shift: int64 [B] (0..63): per-block score scale;
    qk: int8 [B, D] folded query per block; k: int8 [B, 64, D] and v: int8 [B, 64, D] int4 values (0 where not
    kept); sv: uint8 [B, 64, D/64] V-tile scales; k_bitmap: uint64 [B, D] and v_bitmap: uint64 [B, 64, D/64]
    (None for a dense head); out_scale: float, ``out_real = o * out_scale``.
    """

    sel: np.ndarray
    block: np.ndarray
    score_mant: np.ndarray
    score_shift: np.ndarray
    qk: np.ndarray
    k: np.ndarray
    v: np.ndarray
    sv: np.ndarray
    k_bitmap: np.ndarray | None = None
    v_bitmap: np.ndarray | None = None
    out_scale: float = 1.0

    @property
    def head_dim(self) -> int:
        return int(self.qk.shape[1])

    @property
    def n_blocks(self) -> int:
        return int(self.sel.shape[0])

    @property
    def sparse(self) -> bool:
        return self.k_bitmap is not None

    def sel_bits(self) -> np.ndarray:
        """bool [B, 64]: bit i of sel[b]."""
        return ((self.sel[:, None] >> np.arange(TILE, dtype=np.uint64)) & np.uint64(1)).astype(bool)

    def k_keep(self) -> np.ndarray:
        """bool [B, 64, D]: which K elements are streamed (bitmap bits; dense: the selected tokens)."""
        if self.k_bitmap is None:
            return np.broadcast_to(self.sel_bits()[:, :, None], self.k.shape)
        bits = (self.k_bitmap[:, None, :] >> np.arange(TILE, dtype=np.uint64)[None, :, None]) & np.uint64(1)
        return bits.astype(bool)  # [B, 64(token), D]

    def v_keep(self) -> np.ndarray:
        """bool [B, 64, D]: which V elements are streamed for selected tokens (dense: all channels)."""
        if self.v_bitmap is None:
            return np.ones(self.v.shape, dtype=bool)
        bits = (self.v_bitmap[:, :, :, None] >> np.arange(TILE, dtype=np.uint64)) & np.uint64(1)  # [B,64,G,64]
        return bits.astype(bool).reshape(self.v.shape)

    def validate(self) -> None:
        """Raise SpecError/FormatError unless every field has the engine's shape, dtype and range."""
        B = self.n_blocks
        if B < 1:
            raise SpecError("an engine head needs at least one block; select at least one token")
        D = self.head_dim
        check_head_dim(D)
        exp = {
            "sel": (B,),
            "block": (B,),
            "score_mant": (B,),
            "score_shift": (B,),
            "qk": (B, D),
            "k": (B, TILE, D),
            "v": (B, TILE, D),
            "sv": (B, TILE, D // TILE),
        }
        for name, shape in exp.items():
            if tuple(getattr(self, name).shape) != shape:
                raise SpecError(f"EngineHead.{name} must have shape {shape}, got {getattr(self, name).shape}")
        if np.any(self.sel == 0):
            raise SpecError("a block with an empty sel mask is never sent; drop it from the head")
        if self.block.size > 1 and np.any(np.diff(self.block) <= 0):
            raise SpecError("blocks must be sent in increasing token order")
        if self.block.max() * TILE >= MAX_CONTEXT:
            raise SpecError(f"context must be <= {MAX_CONTEXT} tokens (accumulator widths)")
        for name, lo, hi in (
            ("qk", -128, 127),
            ("k", -8, 7),
            ("v", -8, 7),
            ("sv", 0, 255),
            ("score_mant", 0, (1 << MANT_BITS) - 1),
            ("score_shift", 0, MAX_SHIFT),
        ):
            a = getattr(self, name)
            if a.size and (a.min() < lo or a.max() > hi):
                raise SpecError(f"EngineHead.{name} must lie in [{lo}, {hi}]")
        if (self.k_bitmap is None) != (self.v_bitmap is None):
            raise SpecError("give both k_bitmap and v_bitmap (sparse head) or neither (dense head)")
        if self.k_bitmap is not None:
            if self.k_bitmap.shape != (B, D) or self.v_bitmap.shape != (B, TILE, D // TILE):
                raise SpecError("k_bitmap must be [B, D] and v_bitmap [B, 64, D/64]")
            if np.any(self.k[~self.k_keep()] != 0) or np.any(self.v[~self.v_keep()] != 0):
                raise FormatError("K/V values must be 0 where the bitmap does not keep them")


# -------------------------------------------------------------------------------------- datapath pieces
def scale_scores(s: np.ndarray, mant: int, shift: int) -> np.ndarray:
    """X = (s * mant) >> shift, floor; s int [..], returns int64 (37-bit signed values)."""
    return (np.asarray(s, dtype=np.int64) * np.int64(mant)) >> np.int64(shift)


def exp2_fixed(ne: np.ndarray) -> np.ndarray:
    """p = round(255 * 2^(-ne / 2^F)) as the engine computes it, for ne >= 0 (int). Returns int64 0..252."""
    ne = np.asarray(ne, dtype=np.int64)
    i = np.minimum(ne >> EXP_FRAC_BITS, EXP_SHIFT_MAX)
    r = (ne >> (EXP_FRAC_BITS - EXP_TABLE_BITS)) & ((1 << EXP_TABLE_BITS) - 1)
    t = np.asarray(EXP2_TABLE, dtype=np.int64)[r]
    return (t + ((np.int64(1) << i) >> 1)) >> i


def fold_pv(p: np.ndarray, sv: np.ndarray) -> np.ndarray:
    """p' = (p * sv + 128) >> 8 (uint8 x uint8 -> uint8, round half up)."""
    return (np.asarray(p, dtype=np.int64) * np.asarray(sv, dtype=np.int64) + (1 << (SV_BITS - 1))) >> SV_BITS


def reciprocal(l: int) -> int:
    """Q = floor(2^44 / l) as the 38-bit restoring division computes it (needs 128 <= l < 2^28)."""
    l = int(l)
    if not (128 <= l < (1 << L_BITS)):
        raise SpecError(f"softmax denominator {l} outside [128, 2^28): the engine's invariant is broken")
    return (1 << RECIP_SHIFT) // l


def normalize(acc: np.ndarray, q: int) -> np.ndarray:
    """o = clip((acc * Q + 2^35) >> 36, int16) with exact (Python int) arithmetic; returns int64 [D]."""
    sh = RECIP_SHIFT - OUT_FRAC_BITS
    o = [((int(a) * int(q) + (1 << (sh - 1))) >> sh) for a in np.asarray(acc).tolist()]
    lo, hi = -(1 << (OUT_BITS - 1)), (1 << (OUT_BITS - 1)) - 1
    return np.clip(np.asarray(o, dtype=np.int64), lo, hi)


@dataclass(frozen=True)
class EngineTrace:
    """Intermediate values of :func:`run_engine` (for unit tests of the RTL blocks)."""

    scores: np.ndarray  # int64 [B, 64], gated q.k scores
    p: np.ndarray  # int64 [B, 64], uint8 softmax numerators (0 for unselected tokens)
    running_max: np.ndarray  # int64 [B], M after each block
    delta: np.ndarray  # int64 [B], rescale shift applied at each block (unclamped)
    l: int
    acc: np.ndarray  # int64 [D]
    q: int


@dataclass
class SoftmaxState:
    """What the engine carries from one block to the next: the output accumulators, l and the running max M.

    :meth:`block` runs one block's datapath; :func:`run_engine` and the cycle-level simulator's functional mode
    (hwsim/cyclesim/attention_engine.py) both step through a head with it.
    """

    head_dim: int
    acc: np.ndarray = field(init=False)  # int64 [D] (32-bit signed values)
    l: int = 0
    M: int = 0
    m_valid: bool = False

    def __post_init__(self) -> None:
        self.acc = np.zeros(self.head_dim, dtype=np.int64)

    def block(self, head: EngineHead, b: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Block ``b`` of ``head`` (K scores, block max, online-softmax update, exp2, p' and the V accumulation);
        returns its gated scores int64 [64], its p int64 [64] and its (unclamped) rescale shift."""
        g = ((np.uint64(head.sel[b]) >> np.arange(TILE, dtype=np.uint64)) & np.uint64(1)).astype(bool)  # [64] sel bits
        s = head.k[b].astype(np.int64) @ head.qk[b].astype(np.int64)  # [64] = sum_d k[t, d] * qk[d]
        s = np.where(g, s, 0)
        mant, sh = int(head.score_mant[b]), int(head.score_shift[b])
        x = scale_scores(s, mant, sh)  # [64]
        xmax = int(scale_scores(np.array([s[g].max()]), mant, sh)[0])  # scaling is monotone: max of the raw scores
        mblk = (xmax + (1 << EXP_FRAC_BITS) - 1) >> EXP_FRAC_BITS
        mnew = max(self.M, mblk) if self.m_valid else mblk
        delta = mnew - self.M if self.m_valid else 0
        dc = min(delta, SHIFT_CLAMP)
        self.acc >>= dc
        self.l >>= dc
        self.M, self.m_valid = mnew, True
        ne = (self.M << EXP_FRAC_BITS) - x
        p = np.where(g, exp2_fixed(np.maximum(ne, 0)), 0)  # [64]
        self.l += int(p.sum())
        pv = fold_pv(p[:, None], head.sv[b].astype(np.int64))  # [64, D/64]
        pv = np.repeat(pv, TILE, axis=1)  # [64, D]: p' of the V tile each channel belongs to
        self.acc += (pv[g] * head.v[b][g].astype(np.int64)).sum(axis=0)
        return s, p, delta

    def finish(self) -> tuple[np.ndarray, int]:
        """The normaliser: (o int64 [D] (int16 values), Q)."""
        q = reciprocal(self.l)
        return normalize(self.acc, q), q


@overload
def run_engine(head: EngineHead, *, trace: Literal[False] = False) -> np.ndarray: ...
@overload
def run_engine(head: EngineHead, *, trace: Literal[True]) -> tuple[np.ndarray, EngineTrace]: ...
def run_engine(head: EngineHead, *, trace: bool = False) -> np.ndarray | tuple[np.ndarray, EngineTrace]:
    """The engine's datapath, bit exact. Returns o: int64 [D] (int16 values), or (o, EngineTrace)."""
    head.validate()
    state = SoftmaxState(head.head_dim)
    scores = np.zeros((head.n_blocks, TILE), dtype=np.int64)
    ps = np.zeros((head.n_blocks, TILE), dtype=np.int64)
    ms = np.zeros(head.n_blocks, dtype=np.int64)
    ds = np.zeros(head.n_blocks, dtype=np.int64)
    for b in range(head.n_blocks):
        scores[b], ps[b], ds[b] = state.block(head, b)
        ms[b] = state.M
    o, q = state.finish()
    if trace:
        return o, EngineTrace(scores, ps, ms, ds, state.l, state.acc.copy(), q)
    return o
