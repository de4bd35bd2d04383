"""Fixed-point decode attention: the bit-exact golden model of the RTL attention engine (rtl/engine.py).

This module defines, bit for bit, what ``rtl.engine.AttentionEngine`` computes for one query head, plus a
float64 reference and the helpers that turn a real-valued KV4 head into the engine's integer inputs.

Layers
------
1. :func:`prepare_head` (host / sequencer side, floating point allowed): applies the Λ selection, folds the
   scales and produces an :class:`EngineHead` -- the integer-only inputs the engine receives.
2. :func:`run_engine` (the datapath, integers only): returns the engine's int16 output vector.
3. :func:`fixed_point_attention` = 2 after 1, plus dequantization of the output.
4. :func:`reference_attention`: float64 softmax attention over the same Λ tokens (the comparison target).

Token blocks and Λ selection
----------------------------
Tokens are grouped in blocks of 64 at absolute positions (block ``b`` = tokens ``64b .. 64b+63``), the same
grid as the K bitmap tiles (TEAM.md: a K tile runs along 64 consecutive tokens of one channel). The Λ set is
``{t < sink} ∪ {t >= T - window}`` (``window=None``: all tokens). Only blocks that intersect Λ are sent to
the engine, in increasing order; each carries a 64-bit ``sel`` mask (bit i <=> token ``64b+i`` is in Λ and
``< T``). Tokens outside Λ are never computed: their scores are gated to 0 and excluded from the max, their
p is 0 and their V rows are never fetched. The only masked data that is *fetched* are the kept K values of
masked tokens inside the (at most 3) boundary tiles of a sparse head, because the packed values of a bitmap
tile cannot be split without decoding it; the engine gates them off (they cost lane slots, see rtl/cycles.py).

Scale handling (all folding happens once per block on the host; the datapath is integer-only)
---------------------------------------------------------------------------------------------
* K (per-channel scales, one per channel per group of ``k_group_size`` tokens, a multiple of 64): for the K
  group ``g`` of a block, ``qs[d] = q[d] * q_scale * k_scale[g, d]`` is requantized to int8
  ``qk[d] = clip(rint(qs[d] / s_g), -127, 127)`` with ``s_g = max_d |qs[d]| / 127`` (``rint``: round half to
  even; ``s_g = 1`` when q is all zero). The score of token t is the integer ``s_t = sum_d qk[d] * k[t, d]``
  (int8 x int4 products, exact, 20-bit signed accumulator: ``|s_t| <= 128 * 8 * 128 = 2^17``).
* Score scaling into the log2 domain with ``F = 8`` fractional bits:
  ``X_t = (s_t * mant) >> shift`` (arithmetic shift = floor), where ``mant`` (uint16, normalised to
  ``[2^15, 2^16)``) and ``shift`` (0..63) encode ``c = s_g * log2(e) / sqrt(D) * 2^F`` as
  ``c ~= mant / 2^shift`` (mantissa rounded half to even). So ``X_t / 2^F ~= log2(e) * q.k_t / sqrt(D)``.
* V (per-token scales, one per token per group of 64 channels = per V tile): ``sv[t, g] =
  clip(rint(255 * v_scale[t, g] / sv_max), 0, 255)`` (uint8) with ``sv_max`` the largest V scale of the
  selected tokens. It is folded into p per V tile: ``p'[t, g] = (p_t * sv[t, g] + 128) >> 8`` (uint8,
  round half up), so the p.v lanes stay int4 x 8-bit.
* Output: ``out_real[c] = o[c] * out_scale`` with ``out_scale = sv_max * 256 / 255 / 2^OF``, ``OF = 8``.

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

Widths (all checked by the RTL constructor and by :func:`run_engine`)
---------------------------------------------------------------------
q.k score ``s``: signed 20; scaled score ``X``: signed 37; ``M``: signed 30; p: unsigned 8; p': unsigned 8;
``l``: unsigned 28; ``acc``: signed 32; ``Q``: unsigned 38; ``o``: signed 16. Context length <= 2^20 tokens
keeps every accumulator exact (``|acc| <= 2032 * 2^20 < 2^31``, ``l <= 255 * 2^20 < 2^28``).

Error bound vs fp32/fp64 attention
----------------------------------
Against :func:`reference_attention` evaluated on the *dequantized* int4 K/V (so only the fixed-point datapath
is measured, not the int4 quantization of the cache): the per-token weights carry a relative error of at
most ~1.1 % from the 5-bit exp table, 0.27 % from the floor of X, ~0.4 % from the int8 requantization of the
folded query (times the score magnitude) and the absolute rounding of the 8-bit p and p' (<= 0.5/128 relative
for the dominant tokens). A normalised weighted mean with relative weight errors ``eps`` moves by at most
``2 eps max|v|``; tokens whose ``p`` rounds to 0 (``ne >= 9 * 2^F``, i.e. weight < 2^-9 of the max) are
dropped. The documented, tested bound (tests/quant/test_fixedpoint.py) is::

    max_c |out[c] - ref[c]| <= 0.04 * max_{t in Λ, c} |v_real[t, c]|

for head_dim 64/128, contexts up to a few thousand tokens, score magnitudes typical of attention
(|log2-domain scores| < 64). Measured: <= 0.023 on random KV4 heads (benchmarks/rtl_cycles.py prints it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from base.errors import FormatError, SpecError

__all__ = [
    "TILE",
    "EXP_FRAC_BITS",
    "EXP_TABLE_BITS",
    "EXP2_TABLE",
    "RECIP_SHIFT",
    "RECIP_BITS",
    "OUT_FRAC_BITS",
    "MAX_CONTEXT",
    "EngineHead",
    "FixedPointResult",
    "pack_bitmap_tiles",
    "unpack_bitmap_tiles",
    "lambda_mask",
    "prepare_head",
    "run_engine",
    "scale_scores",
    "exp2_fixed",
    "reciprocal",
    "normalize",
    "fold_pv",
    "fixed_point_attention",
    "reference_attention",
    "dequantize_kv",
]

TILE = 64  # tokens per K tile / channels per V tile (TEAM.md bitmap tile layout)
EXP_FRAC_BITS = 8  # F: fractional bits of the log2-domain score X
EXP_TABLE_BITS = 5  # fraction bits that index the exp2 table (32 entries)
P_MAX = 255  # p is uint8; 255 represents 1.0 (the scale cancels in the normalisation)
EXP2_TABLE = tuple(
    int(math.floor(P_MAX * 2.0 ** (-(r + 0.5) / (1 << EXP_TABLE_BITS)) + 0.5)) for r in range(1 << EXP_TABLE_BITS)
)
SHIFT_CLAMP = 31  # rescale shifts are clamped here (acc is 32-bit signed, l 28-bit unsigned)
RECIP_SHIFT = 44  # Q = floor(2^RECIP_SHIFT / l)
RECIP_BITS = 38  # quotient bits of the restoring division (l >= 128 => Q < 2^37)
OUT_FRAC_BITS = 8  # OF: fractional bits of the int16 output
OUT_BITS = 16
SCORE_BITS = 20
SCALED_BITS = 37
ACC_BITS = 32
L_BITS = 28
MANT_BITS = 16
MAX_SHIFT = 63
MAX_CONTEXT = 1 << 20
_LOG2E = 1.0 / math.log(2.0)


# --------------------------------------------------------------------------------------------------- packing
def pack_bitmap_tiles(values: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pack int4 tiles in the TEAM.md bitmap layout.

    values: int [N, 64] in -8..7; keep: bool [N, 64]. Returns (bitmaps uint64 [N], packed uint8 [n_bytes]):
    tile n's kept values in increasing element index, two per byte (element 2j low nibble), padded to a whole
    byte per tile, tiles back to back in order n.
    """
    values = np.asarray(values)
    keep = np.asarray(keep, dtype=bool)
    if values.ndim != 2 or values.shape[1] != TILE or keep.shape != values.shape:
        raise FormatError(f"pack_bitmap_tiles: need values and keep of shape [N, {TILE}], got {values.shape} and "
                          f"{keep.shape}; reshape the tiles first")
    weights = np.left_shift(np.uint64(1), np.arange(TILE, dtype=np.uint64))
    bitmaps = (keep.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)  # [N]
    pc = keep.sum(axis=1)
    nbytes = (pc + 1) // 2
    offs = np.concatenate([[0], np.cumsum(nbytes)])[:-1]
    rank = np.cumsum(keep, axis=1) - keep  # exclusive rank of each kept element
    nib = (values.astype(np.int64) & 0xF).astype(np.uint8)
    byte_idx = (offs[:, None] + rank // 2)[keep]
    shift = (4 * (rank & 1))[keep].astype(np.uint8)
    packed = np.zeros(int(nbytes.sum()), dtype=np.uint8)
    np.bitwise_or.at(packed, byte_idx, np.left_shift(nib[keep], shift))
    return bitmaps, packed


def unpack_bitmap_tiles(bitmaps: np.ndarray, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_bitmap_tiles`: returns (values int8 [N, 64] with 0 where not kept, keep bool)."""
    bitmaps = np.asarray(bitmaps, dtype=np.uint64).reshape(-1)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise FormatError(f"packed tile values must be a 1-D uint8 buffer, got {packed.dtype} {packed.shape}")
    keep = ((bitmaps[:, None] >> np.arange(TILE, dtype=np.uint64)) & np.uint64(1)).astype(bool)  # [N, 64]
    pc = keep.sum(axis=1)
    nbytes = (pc + 1) // 2
    if int(nbytes.sum()) != packed.size:
        raise FormatError(f"bitmaps need {int(nbytes.sum())} packed bytes but the buffer has {packed.size}; "
                          "the buffer is truncated or the bitmaps disagree with the value count")
    offs = np.concatenate([[0], np.cumsum(nbytes)])[:-1]
    rank = np.cumsum(keep, axis=1) - keep
    byte_idx = np.where(keep, offs[:, None] + rank // 2, 0)
    nib = (packed[byte_idx] >> (4 * (rank & 1)).astype(np.uint8)) & 0xF if packed.size else np.zeros_like(rank)
    vals = np.where(nib >= 8, nib.astype(np.int16) - 16, nib.astype(np.int16))
    return np.where(keep, vals, 0).astype(np.int8), keep


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
        if D not in (64, 128):
            raise SpecError(f"head_dim must be 64 or 128, got {D}")
        exp = {"sel": (B,), "block": (B,), "score_mant": (B,), "score_shift": (B,), "qk": (B, D),
               "k": (B, TILE, D), "v": (B, TILE, D), "sv": (B, TILE, D // TILE)}
        for name, shape in exp.items():
            if tuple(getattr(self, name).shape) != shape:
                raise SpecError(f"EngineHead.{name} must have shape {shape}, got {getattr(self, name).shape}")
        if np.any(self.sel == 0):
            raise SpecError("a block with an empty sel mask is never sent; drop it from the head")
        if self.block.size > 1 and np.any(np.diff(self.block) <= 0):
            raise SpecError("blocks must be sent in increasing token order")
        if self.block.max() * TILE >= MAX_CONTEXT:
            raise SpecError(f"context must be <= {MAX_CONTEXT} tokens (accumulator widths)")
        for name, lo, hi in (("qk", -128, 127), ("k", -8, 7), ("v", -8, 7), ("sv", 0, 255),
                             ("score_mant", 0, (1 << MANT_BITS) - 1), ("score_shift", 0, MAX_SHIFT)):
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
    i = np.minimum(ne >> EXP_FRAC_BITS, 9)
    r = (ne >> (EXP_FRAC_BITS - EXP_TABLE_BITS)) & ((1 << EXP_TABLE_BITS) - 1)
    t = np.asarray(EXP2_TABLE, dtype=np.int64)[r]
    return (t + ((np.int64(1) << i) >> 1)) >> i


def fold_pv(p: np.ndarray, sv: np.ndarray) -> np.ndarray:
    """p' = (p * sv + 128) >> 8 (uint8 x uint8 -> uint8, round half up)."""
    return (np.asarray(p, dtype=np.int64) * np.asarray(sv, dtype=np.int64) + 128) >> 8


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


def run_engine(head: EngineHead, *, trace: bool = False):
    """The engine's datapath, bit exact. Returns o: int64 [D] (int16 values), or (o, EngineTrace)."""
    head.validate()
    D = head.head_dim
    sel = head.sel_bits()  # [B, 64]
    acc = np.zeros(D, dtype=np.int64)
    l = 0
    M = 0
    m_valid = False
    scores = np.zeros((head.n_blocks, TILE), dtype=np.int64)
    ps = np.zeros((head.n_blocks, TILE), dtype=np.int64)
    ms = np.zeros(head.n_blocks, dtype=np.int64)
    ds = np.zeros(head.n_blocks, dtype=np.int64)
    for b in range(head.n_blocks):
        g = sel[b]
        s = (head.k[b].astype(np.int64) @ head.qk[b].astype(np.int64))  # [64] = sum_d k[t, d] * qk[d]
        s = np.where(g, s, 0)
        mant, sh = int(head.score_mant[b]), int(head.score_shift[b])
        x = scale_scores(s, mant, sh)  # [64]
        xmax = int(scale_scores(np.array([s[g].max()]), mant, sh)[0])
        mblk = (xmax + (1 << EXP_FRAC_BITS) - 1) >> EXP_FRAC_BITS
        mnew = max(M, mblk) if m_valid else mblk
        delta = mnew - M if m_valid else 0
        dc = min(delta, SHIFT_CLAMP)
        acc >>= dc
        l >>= dc
        M, m_valid = mnew, True
        ne = (M << EXP_FRAC_BITS) - x
        p = np.where(g, exp2_fixed(np.maximum(ne, 0)), 0)  # [64]
        l += int(p.sum())
        pv = fold_pv(p[:, None], head.sv[b].astype(np.int64))  # [64, D/64]
        pv = np.repeat(pv, TILE, axis=1)  # [64, D]
        acc += (pv[g] * head.v[b][g].astype(np.int64)).sum(axis=0)
        scores[b], ps[b], ms[b], ds[b] = s, p, M, delta
    q = reciprocal(l)
    o = normalize(acc, q)
    if trace:
        return o, EngineTrace(scores, ps, ms, ds, l, acc.copy(), q)
    return o


# ------------------------------------------------------------------------------------------ host side
def lambda_mask(context: int, sink: int = 0, window: int | None = None) -> np.ndarray:
    """bool [context]: the Λ selection {t < sink} ∪ {t >= context - window} (window None: all tokens)."""
    if context < 1 or context > MAX_CONTEXT:
        raise SpecError(f"context must be in [1, {MAX_CONTEXT}], got {context}")
    if sink < 0 or (window is not None and window < 0):
        raise SpecError(f"sink and window must be >= 0, got sink={sink} window={window}")
    t = np.arange(context)
    if window is None:
        return np.ones(context, dtype=bool)
    m = (t < sink) | (t >= context - window)
    if not m.any():
        raise SpecError("the Λ selection is empty; use sink >= 1 or window >= 1")
    return m


def _mant_shift(c: float) -> tuple[int, int]:
    """Encode c >= 0 as mant / 2^shift with mant in [2^15, 2^16) (round half even), shift in [0, 63]."""
    if c == 0.0:
        return 0, 0
    e = math.floor(math.log2(c))
    sh = (MANT_BITS - 1) - e
    mant = int(np.rint(c * 2.0**sh))
    if mant == 1 << MANT_BITS:
        mant, sh = mant >> 1, sh - 1
    if sh < 0:
        raise SpecError(f"score scale {c:.3g} too large for a 16-bit mantissa; the K/q scales are implausible")
    if sh > MAX_SHIFT:
        mant, sh = int(np.rint(c * 2.0**MAX_SHIFT)), MAX_SHIFT
    return mant, sh


def prepare_head(q: np.ndarray, q_scale: float, k: np.ndarray | None, k_scale: np.ndarray,
                 v: np.ndarray | None, v_scale: np.ndarray, *, sink: int = 0, window: int | None = None,
                 k_group_size: int | None = None, k_tiles: tuple[np.ndarray, np.ndarray] | None = None,
                 v_tiles: tuple[np.ndarray, np.ndarray] | None = None, context: int | None = None) -> EngineHead:
    """Build the engine inputs of one head.

    q: int8 [D], q_scale: float. k, v: int4 values int [T, D] (or None when given as bitmap tiles).
    k_scale: float [ceil(T / k_group_size), D] (one scale per channel per group of k_group_size tokens, a
    multiple of 64; None = one group). v_scale: float [T, D / Gv] with Gv a multiple of 64.
    k_tiles: (bitmaps uint64 [ceil(T/64), D], packed uint8), tile (b, d) = tokens 64b.. of channel d, tiles in
    row-major (b, d) order. v_tiles: (bitmaps uint64 [T, D/64], packed uint8), tile (t, g) = channels 64g.. of
    token t, row-major (t, g). Giving only one of them makes the other a full (all-kept) bitmap.
    """
    q = np.asarray(q)
    if q.ndim != 1 or q.shape[0] not in (64, 128):
        raise SpecError(f"q must be int8 [D] with D 64 or 128, got shape {q.shape}")
    if q.min(initial=0) < -128 or q.max(initial=0) > 127:
        raise SpecError("q must hold int8 values")
    D = q.shape[0]
    G = D // TILE
    sparse = k_tiles is not None or v_tiles is not None
    if k_tiles is not None:
        bm = np.asarray(k_tiles[0], dtype=np.uint64)
        kv, _ = unpack_bitmap_tiles(bm.reshape(-1), k_tiles[1])
        nb = bm.shape[0]
        k_full = kv.reshape(nb, D, TILE).transpose(0, 2, 1).reshape(nb * TILE, D)  # [T64, D]
        T = context if context is not None else (k.shape[0] if k is not None else nb * TILE)
    else:
        if k is None:
            raise SpecError("give K as int values (k) or as bitmap tiles (k_tiles)")
        T = k.shape[0]
        k_full = None
    if v_tiles is not None:
        vbm = np.asarray(v_tiles[0], dtype=np.uint64)
        vv, _ = unpack_bitmap_tiles(vbm.reshape(-1), v_tiles[1])
        v_full = vv.reshape(vbm.shape[0], D)
        if vbm.shape[0] < T:
            raise SpecError(f"v_tiles cover {vbm.shape[0]} tokens but the context is {T}")
    else:
        if v is None:
            raise SpecError("give V as int values (v) or as bitmap tiles (v_tiles)")
        v_full = np.asarray(v)
    if k_full is None:
        k_full = np.asarray(k)
    if k_full.shape[1] != D or v_full.shape[1] != D or v_full.shape[0] < T or k_full.shape[0] < T:
        raise SpecError(f"K and V must be [T, {D}] with T = {T}")
    for name, a in (("k", k_full), ("v", v_full)):
        if a.min(initial=0) < -8 or a.max(initial=0) > 7:
            raise SpecError(f"{name} must hold int4 values in [-8, 7]")
    mask = lambda_mask(T, sink, window)
    nb = -(-T // TILE)
    Tp = nb * TILE
    maskp = np.zeros(Tp, dtype=bool)
    maskp[:T] = mask
    kp = np.zeros((Tp, D), dtype=np.int8)
    kp[: min(Tp, k_full.shape[0])] = k_full[:Tp]
    if k_tiles is None:
        kp[T:] = 0
    vp = np.zeros((Tp, D), dtype=np.int8)
    vp[:T] = v_full[:T]
    blocks = np.nonzero(maskp.reshape(nb, TILE).any(axis=1))[0]
    selb = maskp.reshape(nb, TILE)[blocks]  # [B, 64]
    weights = np.left_shift(np.uint64(1), np.arange(TILE, dtype=np.uint64))
    sel = (selb.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)

    # K scale folding, one requantized query per block
    k_scale = np.asarray(k_scale, dtype=np.float64).reshape(-1, D)
    kg = k_group_size if k_group_size is not None else Tp
    if kg % TILE:
        raise SpecError(f"k_group_size must be a multiple of {TILE}, got {kg}")
    grp = np.minimum(blocks * TILE // kg, k_scale.shape[0] - 1)
    if (nb - 1) * TILE // kg >= k_scale.shape[0]:
        raise SpecError(f"k_scale has {k_scale.shape[0]} groups, the context needs {(nb - 1) * TILE // kg + 1}")
    qs = q.astype(np.float64)[None, :] * float(q_scale) * k_scale[grp]  # [B, D]
    s_g = np.abs(qs).max(axis=1) / 127.0
    s_g = np.where(s_g > 0, s_g, 1.0)
    qk = np.clip(np.rint(qs / s_g[:, None]), -127, 127).astype(np.int8)
    ms = [_mant_shift(float(c)) for c in s_g * _LOG2E / math.sqrt(D) * (1 << EXP_FRAC_BITS)]
    mant = np.array([m for m, _ in ms], dtype=np.int64)
    shift = np.array([s for _, s in ms], dtype=np.int64)

    # V scales folded into p per V tile
    v_scale = np.asarray(v_scale, dtype=np.float64)
    if v_scale.ndim != 2 or v_scale.shape[0] < T or G % v_scale.shape[1]:
        raise SpecError(f"v_scale must be [T, D/Gv] with Gv a multiple of {TILE}, got {v_scale.shape}")
    vs_t = np.repeat(v_scale[:T], G // v_scale.shape[1], axis=1)  # [T, G]
    vsp = np.zeros((Tp, G))
    vsp[:T] = vs_t
    sv_max = float(vsp[maskp].max()) if maskp.any() else 1.0
    sv_max = sv_max if sv_max > 0 else 1.0
    sv = np.clip(np.rint(255.0 * vsp / sv_max), 0, 255).astype(np.uint8)

    kb = kp.reshape(nb, TILE, D)[blocks]
    vb = vp.reshape(nb, TILE, D)[blocks]
    svb = sv.reshape(nb, TILE, G)[blocks]
    k_bitmap = v_bitmap = None
    if sparse:
        if k_tiles is not None:
            k_bitmap = np.asarray(k_tiles[0], dtype=np.uint64)[blocks]
        else:  # dense K in a sparse head: full tiles over the existing tokens
            full = np.zeros(Tp, dtype=bool)
            full[:T] = True
            fw = (full.reshape(nb, TILE).astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
            k_bitmap = np.repeat(fw[blocks][:, None], D, axis=1)
        if v_tiles is not None:
            vbm_p = np.zeros((Tp, G), dtype=np.uint64)
            vbm_p[:T] = np.asarray(v_tiles[0], dtype=np.uint64)[:T]
            v_bitmap = vbm_p.reshape(nb, TILE, G)[blocks]
        else:
            v_bitmap = np.full((len(blocks), TILE, G), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
        v_bitmap = np.where(selb[:, :, None], v_bitmap, np.uint64(0))  # unselected tokens are never fetched
        vb = np.where(selb[:, :, None], vb, 0).astype(np.int8)
    head = EngineHead(sel=sel, block=blocks.astype(np.int64), score_mant=mant, score_shift=shift, qk=qk,
                      k=kb, v=vb, sv=svb, k_bitmap=k_bitmap, v_bitmap=v_bitmap,
                      out_scale=sv_max * 256.0 / 255.0 / (1 << OUT_FRAC_BITS))
    head.validate()
    return head


@dataclass(frozen=True)
class FixedPointResult:
    """o: int64 [D] engine output (int16 values); out: float64 [D] = o * head.out_scale; head: its inputs."""

    o: np.ndarray
    out: np.ndarray
    head: EngineHead


def fixed_point_attention(q, q_scale, k, k_scale, v, v_scale, **kw) -> FixedPointResult:
    """prepare_head(...) then run_engine(); see :func:`prepare_head` for the arguments."""
    head = prepare_head(q, q_scale, k, k_scale, v, v_scale, **kw)
    o = run_engine(head)
    return FixedPointResult(o=o, out=o.astype(np.float64) * head.out_scale, head=head)


def dequantize_kv(k: np.ndarray, k_scale: np.ndarray, v: np.ndarray, v_scale: np.ndarray,
                  k_group_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Real K/V [T, D] from int4 values and the KV4 scales (k_scale [groups, D], v_scale [T, D/Gv])."""
    T, D = k.shape
    k_scale = np.asarray(k_scale, dtype=np.float64).reshape(-1, D)
    kg = k_group_size if k_group_size is not None else T
    kr = k.astype(np.float64) * k_scale[np.arange(T) // kg]
    v_scale = np.asarray(v_scale, dtype=np.float64)
    vr = v.astype(np.float64) * np.repeat(v_scale[:T], D // v_scale.shape[1], axis=1)
    return kr, vr


def reference_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, sink: int = 0,
                        window: int | None = None) -> np.ndarray:
    """float64 softmax(q.k / sqrt(D)) v over the Λ tokens. q: [D], k, v: [T, D] real values."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    m = lambda_mask(k.shape[0], sink, window)
    s = k[m] @ q / math.sqrt(q.shape[0])  # [T_sel]
    w = np.exp(s - s.max())
    return (w @ v[m]) / w.sum()
