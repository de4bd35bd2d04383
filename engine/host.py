"""The host (sequencer) side of the attention engine: a real-valued KV4 head -> the engine's integer inputs, and the
float64 attention the engine's output is measured against.

* :func:`prepare_head` (floating point allowed): applies the Λ selection, folds the scales and produces an
  :class:`~engine.datapath.EngineHead` -- the integer-only inputs the engine receives;
* :func:`fixed_point_attention`: :func:`prepare_head`, then :func:`engine.datapath.run_engine`, plus dequantization
  of the output;
* :func:`reference_attention`: float64 softmax attention over the same Λ tokens (the comparison target).

Token blocks and Λ selection
----------------------------
Tokens are grouped in blocks of 64 at absolute positions (block ``b`` = tokens ``64b .. 64b+63``), the same
grid as the K bitmap tiles (TEAM.md: a K tile runs along 64 consecutive tokens of one channel). The Λ set is
``{t < sink} ∪ {t >= T - window}`` (``window=None``: all tokens). Only blocks that intersect Λ are sent to
the engine, in increasing order; each carries a 64-bit ``sel`` mask (bit i <=> token ``64b+i`` is in Λ and
``< T``). Tokens outside Λ are never computed: their scores are gated to 0 and excluded from the max, their
p is 0 and their V rows are never fetched. The only masked data that is *fetched* are the kept K values of
masked tokens inside the (at most 3) boundary tiles of a sparse head, because the packed values of a bitmap
tile cannot be split without decoding it; the engine gates them off (they cost lane slots, see engine/cycles.py).

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

Error bound vs fp32/fp64 attention
----------------------------------
Against :func:`reference_attention` evaluated on the *dequantized* int4 K/V (so only the fixed-point datapath
is measured, not the int4 quantization of the cache): the per-token weights carry a relative error of at
most ~1.1 % from the 5-bit exp table, 0.27 % from the floor of X, ~0.4 % from the int8 requantization of the
folded query (times the score magnitude) and the absolute rounding of the 8-bit p and p' (<= 0.5/128 relative
for the dominant tokens). A normalised weighted mean with relative weight errors ``eps`` moves by at most
``2 eps max|v|``; tokens whose ``p`` rounds to 0 (``ne >= 9 * 2^F``, i.e. weight < 2^-9 of the max) are
dropped. The documented, tested bound (tests/engine/test_host.py) is::

    max_c |out[c] - ref[c]| <= 0.04 * max_{t in Λ, c} |v_real[t, c]|

for head_dim 64/128, contexts up to a few thousand tokens, score magnitudes typical of attention
(|log2-domain scores| < 64). Measured: <= 0.023 on random KV4 heads (benchmarks/rtl_cycles.py prints it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from base.errors import SpecError
from engine.datapath import EngineHead, run_engine
from engine.params import HEAD_DIMS, MAX_CONTEXT, TILE
from engine.widths import EXP_FRAC_BITS, MANT_BITS, MAX_SHIFT, OUT_FRAC_BITS, VALUE_BITS
from quant.formats._bits import from_codes, unpack_tiles

__all__ = [
    "lambda_mask",
    "prepare_head",
    "unpack_values",
    "FixedPointResult",
    "fixed_point_attention",
    "dequantize_kv",
    "reference_attention",
]

_LOG2E = 1.0 / math.log(2.0)


def unpack_values(bitmaps: np.ndarray, packed: np.ndarray, what: str) -> np.ndarray:
    """int4 bitmap tiles (quant's tile packing) -> their values int8 [N, 64], 0 where not kept."""
    _, codes = unpack_tiles(np.asarray(bitmaps, dtype=np.uint64), np.asarray(packed), VALUE_BITS, what)
    return from_codes(codes, VALUE_BITS)


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


def prepare_head(
    q: np.ndarray,
    q_scale: float,
    k: np.ndarray | None,
    k_scale: np.ndarray,
    v: np.ndarray | None,
    v_scale: np.ndarray,
    *,
    sink: int = 0,
    window: int | None = None,
    k_group_size: int | None = None,
    k_tiles: tuple[np.ndarray, np.ndarray] | None = None,
    v_tiles: tuple[np.ndarray, np.ndarray] | None = None,
    context: int | None = None,
) -> EngineHead:
    """Build the engine inputs of one head.

    q: int8 [D], q_scale: float. k, v: int4 values int [T, D] (or None when given as bitmap tiles).
    k_scale: float [ceil(T / k_group_size), D] (one scale per channel per group of k_group_size tokens, a
    multiple of 64; None = one group). v_scale: float [T, D / Gv] with Gv a multiple of 64.
    k_tiles: (bitmaps uint64 [ceil(T/64), D], packed uint8), tile (b, d) = tokens 64b.. of channel d, tiles in
    row-major (b, d) order. v_tiles: (bitmaps uint64 [T, D/64], packed uint8), tile (t, g) = channels 64g.. of
    token t, row-major (t, g). Giving only one of them makes the other a full (all-kept) bitmap.
    """
    q = np.asarray(q)
    if q.ndim != 1 or q.shape[0] not in HEAD_DIMS:
        raise SpecError(f"q must be int8 [D] with D 64 or 128, got shape {q.shape}")
    if q.min(initial=0) < -128 or q.max(initial=0) > 127:
        raise SpecError("q must hold int8 values")
    D = q.shape[0]
    G = D // TILE
    sparse = k_tiles is not None or v_tiles is not None
    if k_tiles is not None:
        bm = np.asarray(k_tiles[0], dtype=np.uint64)
        kv = unpack_values(bm.reshape(-1), k_tiles[1], "k_tiles")
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
        vv = unpack_values(vbm.reshape(-1), v_tiles[1], "v_tiles")
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
    head = EngineHead(
        sel=sel,
        block=blocks.astype(np.int64),
        score_mant=mant,
        score_shift=shift,
        qk=qk,
        k=kb,
        v=vb,
        sv=svb,
        k_bitmap=k_bitmap,
        v_bitmap=v_bitmap,
        out_scale=sv_max * 256.0 / 255.0 / (1 << OUT_FRAC_BITS),
    )
    head.validate()
    return head


@dataclass(frozen=True)
class FixedPointResult:
    """o: int64 [D] engine output (int16 values); out: float64 [D] = o * head.out_scale; head: its inputs."""

    o: np.ndarray
    out: np.ndarray
    head: EngineHead


def fixed_point_attention(
    q: np.ndarray,
    q_scale: float,
    k: np.ndarray | None,
    k_scale: np.ndarray,
    v: np.ndarray | None,
    v_scale: np.ndarray,
    **kw: Any,
) -> FixedPointResult:
    """prepare_head(...) then run_engine(); see :func:`prepare_head` for the arguments."""
    head = prepare_head(q, q_scale, k, k_scale, v, v_scale, **kw)
    o = run_engine(head)
    return FixedPointResult(o=o, out=o.astype(np.float64) * head.out_scale, head=head)


def dequantize_kv(
    k: np.ndarray, k_scale: np.ndarray, v: np.ndarray, v_scale: np.ndarray, k_group_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Real K/V [T, D] from int4 values and the KV4 scales (k_scale [groups, D], v_scale [T, D/Gv])."""
    T, D = k.shape
    k_scale = np.asarray(k_scale, dtype=np.float64).reshape(-1, D)
    kg = k_group_size if k_group_size is not None else T
    kr = k.astype(np.float64) * k_scale[np.arange(T) // kg]
    v_scale = np.asarray(v_scale, dtype=np.float64)
    vr = v.astype(np.float64) * np.repeat(v_scale[:T], D // v_scale.shape[1], axis=1)
    return kr, vr


def reference_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, sink: int = 0, window: int | None = None
) -> np.ndarray:
    """float64 softmax(q.k / sqrt(D)) v over the Λ tokens. q: [D], k, v: [T, D] real values."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    m = lambda_mask(k.shape[0], sink, window)
    s = k[m] @ q / math.sqrt(q.shape[0])  # [T_sel]
    w = np.exp(s - s.max())
    return (w @ v[m]) / w.sum()
