"""Decode attention (one new query token per head) over packed KV caches, with Λ masking and GQA.

    out[i] = sum_t softmax_t(scale * q[i] . K[h(i), t] + mask[t]) V[h(i), t],   h(i) = i // (Hq / Hkv)

The cache holds tokens 0..T-1 (the current token's K/V already appended, so the query is token T-1). Λ attention
(LM-Infinite, as in CompressionScheme): token t is attended iff t < sink or t >= T - window (window None: all).

Kernels (float32 arithmetic on the cache's exact dequantized values, softmax in float64):
* DenseKV: GEMV (numpy einsum) on an fp32 copy made once per cache object (CPUs have no fast fp16 GEMV; converting
  the fp16 cache every step costs more than the attention itself).
* QuantKV and BitmapKV: compiled tile kernels (quant.kernels._tiles, numba) read the packed bytes directly: each
  64-token chunk is decoded into one float32 tile (int lanes unpacked and scaled; bitmap tiles expanded from their
  packed values), multiplied with the query rows, then overwritten by the next chunk. Working memory is the packed
  cache, the fp32 copy of the dense recent window, one tile and the score rows; chunks that no query attends (Λ)
  are skipped. A bitmap cache is never expanded to dense or converted to another sparse format.
The dense recent window is a small fp32 GEMV in every case. Plans (the recent window's fp32 copy and views of the
packed arrays) are cached per cache object, weakly: a plan holds no reference to its cache, so it dies with it.

`window_attention` computes, for every token of a sequence at once (the evaluation path), what decode attention
over the cache a token-by-token decoder holds after appending that token gives: the sequence is packed once, its
compressed part unpacked to its exact values by the format's vectorised decode, and each block of queries is two
GEMMs (torch) against those values and the fp16 ones, chosen per (query, key) pair. Tests hold it to the
kernels above, token by token.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from base.errors import SpecError
from quant.formats.kv import BitmapKV, DenseKV, KVCache, QuantKV, compress_kv
from quant.scheme import CHUNK_TOKENS, CompressionScheme

__all__ = [
    "decode_attention",
    "window_attention",
    "reference_decode_attention",
    "attended_mask",
    "plan_for",
    "plan_bytes",
]


def attended_mask(n_tokens: int, sink: int = 0, window: int | None = None) -> np.ndarray:
    """bool [n_tokens]: which cached tokens a decode step attends under Λ attention."""
    t = np.arange(n_tokens)
    if window is None:
        return np.ones(n_tokens, bool)
    return (t < sink) | (t >= n_tokens - window)


def _check_lambda(sink: int, window: int | None) -> None:
    if sink < 0 or window is not None and window < 1:
        raise SpecError(f"Λ attention needs sink >= 0 and window >= 1 (or None), got sink={sink} window={window}")
    if sink and window is None:
        raise SpecError("Λ attention: sink tokens need a window; pass window=")


def _gqa(q: np.ndarray, num_kv_heads: int, head_dim: int) -> int:
    if q.ndim != 2 or q.shape[1] != head_dim:
        raise SpecError(f"q must be [num_heads, head_dim={head_dim}], got shape {q.shape}")
    if q.shape[0] % num_kv_heads:
        raise SpecError(f"GQA needs num_heads ({q.shape[0]}) to be a multiple of the cache's kv heads ({num_kv_heads})")
    return q.shape[0] // num_kv_heads


def reference_decode_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    sink: int = 0,
    window: int | None = None,
    softmax_scale: float | None = None,
) -> np.ndarray:
    """Plain float64 decode attention. q [Hq, D], k/v [Hkv, T, D] -> [Hq, D]."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    _check_lambda(sink, window)
    g = _gqa(q, k.shape[0], k.shape[2])
    scale = 1.0 / math.sqrt(k.shape[2]) if softmax_scale is None else softmax_scale
    kk = np.repeat(k, g, axis=0)  # [Hq, T, D]
    vv = np.repeat(v, g, axis=0)
    s = np.einsum("hd,htd->ht", q, kk) * scale
    s = np.where(attended_mask(k.shape[1], sink, window)[None], s, -np.inf)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.einsum("ht,htd->hd", p, vv)


# ---- plans ------------------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """What a kernel keeps per cache object: the fp32 recent window and (subclasses) views of the packed arrays.

    scores(q [Hkv, M, D] f32, need bool [C]) -> [Hkv, M, Tc] f32: q . K over the compressed tokens (0 in chunks
    not needed); apply_v(p [Hkv, M, Tc] f32) -> [Hkv, M, D] f32: p . V over the compressed tokens.
    """

    k_recent: np.ndarray  # [Hkv, Tr, D] float32
    v_recent: np.ndarray
    n_compressed: int

    def scores(self, q: np.ndarray, need: np.ndarray) -> np.ndarray:
        return np.zeros((q.shape[0], q.shape[1], 0), np.float32)

    def apply_v(self, p: np.ndarray) -> np.ndarray:
        return np.zeros((p.shape[0], p.shape[1], self.k_recent.shape[2]), np.float32)

    def packed_bytes(self) -> int:
        """Bytes of the packed arrays the kernel reads (views of the cache, not copies)."""
        return 0

    def nbytes(self) -> int:
        """Working memory of a decode step: packed arrays read, fp32 recent window, one decode tile."""
        d = self.k_recent.shape[2]
        tile = 0 if self.n_compressed == 0 else 4 * CHUNK_TOKENS * -(-d // CHUNK_TOKENS) * CHUNK_TOKENS
        return self.packed_bytes() + self.k_recent.nbytes + self.v_recent.nbytes + tile


def _tiles():
    from quant.kernels import _tiles  # compiled on first use (numba caches the machine code on disk)

    return _tiles


@dataclass
class _QuantPlan(_Plan):
    """QuantKV: lanes of the packed bytes hold consecutive tokens of a K channel row / channels of a V token row."""

    bits: int = 4
    group_size: int = 64
    kq: np.ndarray | None = None  # uint8 [H, C, 64*D*bits/8]
    ks16: np.ndarray | None = None  # uint16 [H, C, D, G] fp16 bit patterns
    vq: np.ndarray | None = None
    vs16: np.ndarray | None = None  # uint16 [H, C, 64, G]

    def scores(self, q, need):
        out = np.empty((q.shape[0], q.shape[1], self.n_compressed), np.float32)
        if self.n_compressed:
            _tiles().quant_scores(self.kq, self.ks16, self.bits, self.group_size, q, need, out)
        return out

    def apply_v(self, p):
        out = np.empty((p.shape[0], p.shape[1], self.k_recent.shape[2]), np.float32)
        if self.n_compressed:
            _tiles().quant_apply_v(self.vq, self.vs16, self.bits, self.group_size, p, out)
        else:
            out[:] = 0.0
        return out

    def packed_bytes(self) -> int:
        return sum(a.nbytes for a in (self.kq, self.ks16, self.vq, self.vs16))


@dataclass
class _BitmapPlan(_Plan):
    """BitmapKV: K tiles per (head, chunk, channel), V tiles per (head, chunk, token, 64-channel slice)."""

    bits: int = 16
    group_size: int = 64
    kbm: np.ndarray | None = None  # uint64 [H, C, D]
    kpay: np.ndarray | None = None  # uint8, the K tiles' packed values in tile order
    ks16: np.ndarray | None = None
    vbm: np.ndarray | None = None  # uint64 [H, C, 64, ceil(D/64)]
    vpay: np.ndarray | None = None
    vs16: np.ndarray | None = None

    def scores(self, q, need):
        out = np.empty((q.shape[0], q.shape[1], self.n_compressed), np.float32)
        if self.n_compressed:
            _tiles().bitmap_scores(self.kbm, self.kpay, self.bits, self.group_size, self.ks16, q, need, out)
        return out

    def apply_v(self, p):
        out = np.empty((p.shape[0], p.shape[1], self.k_recent.shape[2]), np.float32)
        if self.n_compressed:
            _tiles().bitmap_apply_v(self.vbm, self.vpay, self.bits, self.group_size, self.vs16, p, out)
        else:
            out[:] = 0.0
        return out

    def packed_bytes(self) -> int:
        return sum(a.nbytes for a in (self.kbm, self.kpay, self.ks16, self.vbm, self.vpay, self.vs16))


_PLANS: weakref.WeakKeyDictionary[KVCache, _Plan] = weakref.WeakKeyDictionary()


def _u16(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.float16).view(np.uint16)


def _check_payload(bitmaps: np.ndarray, payload: np.ndarray, bits: int, what: str) -> None:
    """The kernels walk the payload by popcount: refuse a payload that does not match the bitmaps."""
    need = int(((np.bitwise_count(bitmaps.reshape(-1)).astype(np.int64) * bits + 7) // 8).sum())
    if payload.size != need:
        raise SpecError(
            f"{what}: bitmaps need {need} payload bytes, the cache holds {payload.size}; rebuild it with "
            "quant.formats.compress_kv"
        )


def _make_plan(cache: KVCache) -> _Plan:
    recent = [np.ascontiguousarray(x, np.float32) for x in (cache.k_recent, cache.v_recent)]
    if isinstance(cache, DenseKV):
        return _Plan(*recent, 0)
    if isinstance(cache, QuantKV):
        per = 8 // cache.bits
        if cache.head_dim % per:
            raise SpecError(f"KV{cache.bits} kernel needs head_dim divisible by {per}, got {cache.head_dim}")
        return _QuantPlan(
            *recent,
            cache.n_compressed,
            cache.bits,
            cache.group_size,
            np.ascontiguousarray(cache.kq),
            _u16(cache.ks),
            np.ascontiguousarray(cache.vq),
            _u16(cache.vs),
        )
    if isinstance(cache, BitmapKV):
        kbm, vbm = (np.ascontiguousarray(b, np.uint64) for b in (cache.k_bitmaps, cache.v_bitmaps))
        kpay, vpay = (np.ascontiguousarray(p, np.uint8).reshape(-1) for p in (cache.k_payload, cache.v_payload))
        _check_payload(kbm, kpay, cache.bits, f"{cache.FORMAT} K tiles")
        _check_payload(vbm, vpay, cache.bits, f"{cache.FORMAT} V tiles")
        return _BitmapPlan(
            *recent,
            cache.n_compressed,
            cache.bits,
            cache.group_size,
            kbm,
            kpay,
            _u16(cache.ks),
            vbm,
            vpay,
            _u16(cache.vs),
        )
    raise SpecError(
        f"decode_attention has no kernel for {type(cache).__name__}; use a cache from quant.formats.compress_kv"
    )


def plan_for(cache: KVCache) -> _Plan:
    """The kernel's per-cache working form (built on first use, cached while the cache object lives)."""
    plan = _PLANS.get(cache)
    if plan is None:
        plan = _make_plan(cache)
        _PLANS[cache] = plan
    return plan


def plan_bytes(cache: KVCache) -> int:
    """Working memory of a decode step over `cache`: the packed arrays the kernel reads, the fp32 copy of the dense
    recent window (of everything, for DenseKV) and one decode tile."""
    return plan_for(cache).nbytes()


def _softmax_rows(s: np.ndarray) -> np.ndarray:
    """float32 softmax along the last axis of float64 scores (rows with -inf only where masked); overwrites s.
    Normalised in float64 (times the reciprocal of the row's sum: a float64 division costs several multiplies),
    then rounded to float32."""
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    total = s.sum(axis=-1, keepdims=True)
    s *= np.reciprocal(total, out=total)
    return s.astype(np.float32)


def _chunks_needed(cols: np.ndarray, n_compressed: int) -> np.ndarray:
    """bool [C]: chunks holding at least one token flagged in cols (bool [..., >= n_compressed])."""
    if n_compressed == 0:
        return np.zeros(0, bool)
    c = cols[..., :n_compressed].reshape(-1, n_compressed // CHUNK_TOKENS, CHUNK_TOKENS)
    return np.ascontiguousarray(c.any(axis=(0, 2)))


def decode_attention(
    q: np.ndarray | torch.Tensor,
    cache: KVCache,
    scheme: CompressionScheme | None = None,
    *,
    sink: int | None = None,
    window: int | None = None,
    softmax_scale: float | None = None,
) -> np.ndarray | torch.Tensor:
    """One decode step of attention for one layer.

    q: [num_heads, head_dim] (numpy or torch); cache: a KV cache of this layer from quant.formats (compress_kv).
    Λ masking comes from `scheme` (attn_sink, attn_window) unless `sink`/`window` are given. softmax_scale defaults
    to 1/sqrt(head_dim). Returns [num_heads, head_dim] float32, torch if q is torch, else numpy.
    """
    if not isinstance(cache, KVCache):
        raise SpecError(f"decode_attention needs a KV cache from quant.formats, got {type(cache).__name__}")
    if scheme is not None:
        sink = scheme.attn_sink if sink is None else sink
        window = scheme.attn_window if window is None else window
    sink = sink or 0
    _check_lambda(sink, window)
    is_torch = isinstance(q, torch.Tensor)
    qn = q.detach().cpu().numpy() if is_torch else np.asarray(q)
    if not np.issubdtype(qn.dtype, np.floating):
        raise SpecError(f"q must be a float array, got dtype {qn.dtype}")
    hkv, d, n = cache.num_heads, cache.head_dim, cache.n_tokens
    g = _gqa(qn, hkv, d)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    plan = plan_for(cache)
    tc = cache.n_compressed
    qg = np.ascontiguousarray(qn, np.float32).reshape(hkv, g, d)  # [Hkv, g, D]
    mask = attended_mask(n, sink, window)  # [T]
    s = np.empty((hkv, g, n), np.float32)
    s[:, :, :tc] = plan.scores(qg, _chunks_needed(mask, tc))
    # dense part: numpy einsum was the fastest dense GEMV for [32, 4096, 128] on this 2-core CPU (torch bmm about
    # 1.5-2x slower, per-head torch.mv about 1.3x, numpy matmul far slower)
    s[:, :, tc:] = np.einsum("hjd,htd->hjt", qg, plan.k_recent)
    s64 = np.multiply(s, scale, dtype=np.float64)  # float64(score) * scale, one pass
    if not mask.all():
        s64[:, :, ~mask] = -math.inf
    p = _softmax_rows(s64)  # [Hkv, g, T]
    out = plan.apply_v(np.ascontiguousarray(p[..., :tc])) + np.einsum("hjt,htd->hjd", p[..., tc:], plan.v_recent)
    out = out.reshape(hkv * g, d)
    return torch.from_numpy(out) if is_torch else out


def window_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scheme: CompressionScheme,
    *,
    softmax_scale: float | None = None,
    block_tokens: int = 128,
) -> np.ndarray:
    """Decode attention of every token of a sequence over the cache a token-by-token decoder holds, in one pass.

    q: [Hq, T, D]; k, v: [Hkv, T, D] (float, K after RoPE). Query i attends keys 0..i (Λ mask from `scheme`); of
    these the oldest scheme.kv_split(i + 1)[0] are read from the packed format (compress_kv of the whole sequence:
    a chunk's packed form depends only on its own 64 tokens) and the rest from fp16, exactly as decode_attention over
    compress_kv(k[:, :i+1], v[:, :i+1], scheme) would. The packed cache is built once; queries are processed in
    blocks of `block_tokens` (memory O(Hq * block_tokens * T)). Returns [Hq, T, D] float32.
    """
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    if q.ndim != 3 or k.ndim != 3 or k.shape != v.shape or q.shape[1:] != k.shape[1:]:
        raise SpecError(
            f"window_attention needs q [Hq, T, D] and k, v [Hkv, T, D], got {q.shape}, {k.shape}, {v.shape}"
        )
    hkv, t, d = k.shape
    g = _gqa(q[:, 0], hkv, d)
    sink, window = scheme.attn_sink, scheme.attn_window
    _check_lambda(sink, window)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    cache = compress_kv(k, v, scheme)
    tc = cache.n_compressed
    # what the cache returns: fp16 values for the dense part; for the compressed part its packed format's exact
    # values (vectorised unpack, each exactly a float32: an fp16 value, or an int code times an fp16 scale)
    kd = torch.from_numpy(k.astype(np.float16).astype(np.float32))
    vd = torch.from_numpy(v.astype(np.float16).astype(np.float32))
    if tc:
        kc64, vc64 = cache.dequantize()
        kc = torch.from_numpy(np.ascontiguousarray(kc64[:, :tc], np.float32))
        vc = torch.from_numpy(np.ascontiguousarray(vc64[:, :tc], np.float32))
        del kc64, vc64
    n_comp = np.array([scheme.kv_split(i + 1)[0] for i in range(t)])  # [T] compressed tokens seen by query i
    qg = torch.from_numpy(np.ascontiguousarray(q, np.float32)).reshape(hkv, g, t, d)
    out = np.empty((hkv, g, t, d), np.float32)
    j = np.arange(t)
    # the products are torch GEMMs: they run on torch's threads, which the evaluated model already owns
    for i0 in range(0, t, block_tokens):
        i1 = min(t, i0 + block_tokens)
        b = i1 - i0
        rows = np.arange(i0, i1)[:, None]  # [B, 1] query positions
        keys = j[None, :i1]
        allowed = keys <= rows
        if window is not None:
            allowed &= (keys < sink) | (keys >= rows + 1 - window)
        comp = keys < n_comp[i0:i1, None]  # [B, i1]: read from the packed format
        qb = qg[:, :, i0:i1].reshape(hkv, g * b, d)
        s = torch.matmul(qb, kd[:, :i1].transpose(1, 2)).numpy().reshape(hkv, g, b, i1)
        tcb = min(tc, i1)
        if tcb:
            sc = torch.matmul(qb, kc[:, :tcb].transpose(1, 2)).numpy().reshape(hkv, g, b, tcb)
            s[..., :tcb] = np.where(comp[:, :tcb], sc, s[..., :tcb])
        s64 = s.astype(np.float64) * scale
        s64[:, :, ~allowed] = -math.inf
        p = _softmax_rows(s64)  # [Hkv, g, B, i1]
        pd = torch.from_numpy(np.where(comp, 0.0, p).astype(np.float32).reshape(hkv, g * b, i1))
        o = torch.matmul(pd, vd[:, :i1])
        if tcb:
            pc = torch.from_numpy(np.where(comp[:, :tcb], p[..., :tcb], 0.0).astype(np.float32))
            o += torch.matmul(pc.reshape(hkv, g * b, tcb), vc[:, :tcb])
        out[:, :, i0:i1] = o.numpy().reshape(hkv, g, b, d)
    return out.reshape(hkv * g, t, d)
