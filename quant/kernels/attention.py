"""Decode attention (one new query token per head) over packed KV caches, with Λ masking and GQA.

    out[i] = sum_t softmax_t(scale * q[i] . K[h(i), t] + mask[t]) V[h(i), t],   h(i) = i // (Hq / Hkv)

The cache holds tokens 0..T-1 (the current token's K/V already appended, so the query is token T-1). Λ attention
(LM-Infinite, as in CompressionScheme): token t is attended iff t < sink or t >= T - window (window None: all).

Kernels (float32 arithmetic on the cache's exact dequantized values, softmax in float64):
* DenseKV: GEMV (numpy einsum) on an fp32 copy made once per cache object (CPUs have no fast fp16 GEMV; converting
  the fp16 cache every step costs more than the attention itself).
* QuantKV: each call unpacks the int codes lane by lane (int8 shift pair -> float32, contiguous per lane), folds the
  per-channel K scales into q (and per-token V scales into p when a group spans head_dim), then batched GEMVs.
* BitmapKV (fp16 or int values): a real sparse kernel. Once per cache object the bitmap tiles are decoded into two
  CSR matrices holding only the kept elements (dequantized fp32 values, int32 indices); each call is then two sparse
  matrix-vector products (MKL SpMV via torch.mv): scores = K_csr[(h, t), (h, d)] @ q and
  out = V^T_csr[(h, d), (h, t)] @ p. Work and bytes scale with the kept fraction; nothing is unpacked to dense.
The dense recent window is a small fp32 GEMV in every case. Plans are cached per cache object (weakly); a cache is
immutable, so in a decoding loop a plan is built once per compressed chunk set (the build time is reported by
benchmarks/kernels.py).
"""

from __future__ import annotations

import functools
import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from base.errors import SpecError
from quant.formats.kv import BitmapKV, DenseKV, KVCache, QuantKV
from quant.scheme import CHUNK_TOKENS, CompressionScheme

__all__ = ["decode_attention", "reference_decode_attention", "attended_mask", "plan_for", "plan_bytes"]


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
        raise SpecError(f"GQA needs num_heads ({q.shape[0]}) to be a multiple of the cache's kv heads "
                        f"({num_kv_heads})")
    return q.shape[0] // num_kv_heads


def reference_decode_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, sink: int = 0,
                               window: int | None = None, softmax_scale: float | None = None) -> np.ndarray:
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
    """What a kernel keeps per cache object: the compressed-part operator and the fp32 recent window."""

    k_recent: np.ndarray  # [Hkv, Tr, D] float32
    v_recent: np.ndarray

    def scores(self, qg: torch.Tensor) -> torch.Tensor:  # qg [Hkv, g, D] -> [Hkv, g, Tc]
        raise NotImplementedError

    def apply_v(self, p: torch.Tensor) -> torch.Tensor:  # p [Hkv, g, Tc] -> [Hkv, g, D]
        raise NotImplementedError

    def nbytes(self) -> int:
        return self.k_recent.nbytes + self.v_recent.nbytes


def _tbytes(*ts: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


@dataclass
class _DensePlan(_Plan):
    def scores(self, qg):
        return qg.new_zeros(qg.shape[0], qg.shape[1], 0)

    def apply_v(self, p):
        return p.new_zeros(p.shape[0], p.shape[1], self.k_recent.shape[2])


LANE_BLOCK_ELEMS = 1 << 18  # float32 elements of one unpacked lane per block (1 MiB: fits this CPU's L2)


def _lane(x8: torch.Tensor, i: int, bits: int) -> torch.Tensor:
    """Lane i (bits [i*bits, (i+1)*bits)) of every byte of int8 `x8`, sign-extended, as float32."""
    if bits == 8:
        return x8.to(torch.float32)
    left = 8 - bits * (i + 1)
    return (((x8 << left) if left else x8) >> (8 - bits)).to(torch.float32)


@dataclass
class _QuantPlan(_Plan):
    """Per call: lane i of each packed byte holds elements i, i+per, i+2*per... (per = 8 / bits) of a K channel row
    (tokens) or a V token row (channels), so each lane is unpacked contiguously (int8 shift pair -> float32) and
    multiplied on its own; only the small score / output tensors are interleaved. Heads are processed in blocks whose
    unpacked lane fits in cache (2x less CPU time than unpacking whole tensors). Per-channel K scales fold into q;
    per-token V scales fold into p when one group spans head_dim, else they multiply the unpacked lane."""

    c: Any = None  # the QuantKV

    def __post_init__(self) -> None:
        c = self.c
        g = c.group_size
        self.per = 8 // c.bits
        if c.head_dim % self.per:
            raise SpecError(f"KV{c.bits} kernel needs head_dim divisible by {self.per}, got {c.head_dim}")
        self.kq = torch.from_numpy(c.kq).view(torch.int8)
        self.vq = torch.from_numpy(c.vq).view(torch.int8)
        ks, vs = torch.from_numpy(c.ks.astype(np.float32)), torch.from_numpy(c.vs.astype(np.float32))
        self.ks_fold = ks[..., 0] if ks.shape[-1] == 1 else None  # [H, C, D]
        self.ks_full = None if ks.shape[-1] == 1 else ks[..., np.arange(CHUNK_TOKENS) // g]  # [H, C, D, 64]
        self.vs_fold = vs[..., 0].reshape(c.num_heads, -1) if vs.shape[-1] == 1 else None  # [H, Tc]
        self.vs_full = (None if vs.shape[-1] == 1 else
                        vs[..., np.arange(c.head_dim) // g].reshape(c.num_heads, -1, c.head_dim))  # [H, Tc, D]

    def _head_block(self) -> int:
        """KV heads per block so that one unpacked lane (float32) stays near 1 MiB, in cache."""
        per_head = self.c.n_compressed * self.c.head_dim // self.per
        return max(1, LANE_BLOCK_ELEMS // max(per_head, 1))

    def scores(self, qg):
        c, per = self.c, self.per
        h, n, d, g = c.num_heads, c.n_chunks, c.head_dim, qg.shape[1]
        if n == 0:
            return qg.new_zeros(h, g, 0)
        if self.ks_fold is None:
            qc = qg[:, None].expand(h, n, g, d)
        else:
            qc = qg[:, None] * self.ks_fold[:, :, None, :]  # [H, C, g, D]: q scaled per channel per chunk
        qc = qc.reshape(h * n, g, d)
        kb = self.kq.view(h * n, d, CHUNK_TOKENS // per)  # byte j of a channel row: tokens per*j + i
        s = qg.new_empty(h * n, g, CHUNK_TOKENS // per, per)
        step = self._head_block() * n
        for r in range(0, h * n, step):  # blocks of heads (cache-sized), then the <= 4 lanes of a byte
            for i in range(per):
                k = _lane(kb[r:r + step], i, c.bits)  # [rows, D, 64/per] codes of tokens i, i+per, ...
                if self.ks_fold is None:
                    k.mul_(self.ks_full.view(h * n, d, CHUNK_TOKENS)[r:r + step, :, i::per])
                s[r:r + step, :, :, i] = torch.bmm(qc[r:r + step], k)  # (out= a strided view is slow)
        s = s.view(h, n, g, CHUNK_TOKENS)  # token per*j + i
        return s.permute(0, 2, 1, 3).reshape(h, g, c.n_compressed)

    def apply_v(self, p):
        c, per = self.c, self.per
        h, g, d = c.num_heads, p.shape[1], c.head_dim
        if c.n_compressed == 0:
            return p.new_zeros(h, g, d)
        if self.vs_fold is not None:
            p = p * self.vs_fold[:, None, :]
        vb = self.vq.view(h, c.n_compressed, d // per)  # byte j of a token row: channels per*j + i
        out = p.new_empty(h, g, d // per, per)
        step = self._head_block()
        for r in range(0, h, step):
            for i in range(per):
                v = _lane(vb[r:r + step], i, c.bits)  # [heads, Tc, D/per]
                if self.vs_fold is None:
                    v.mul_(self.vs_full[r:r + step, :, i::per])
                out[r:r + step, :, :, i] = torch.bmm(p[r:r + step], v)
        return out.reshape(h, g, d)

    def nbytes(self) -> int:
        return super().nbytes() + _tbytes(self.kq, self.vq) + self.c.ks.nbytes + self.c.vs.nbytes


def _csr(crow: np.ndarray, col: np.ndarray, val: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    idx = np.int32 if max(size) < 2**31 and val.size < 2**31 else np.int64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta": informational
        return torch.sparse_csr_tensor(torch.from_numpy(crow.astype(idx)), torch.from_numpy(col.astype(idx)),
                                       torch.from_numpy(val.astype(np.float32)), size=size, check_invariants=False)


def _crow(rows: np.ndarray, n_rows: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))])


@dataclass
class _SparsePlan(_Plan):
    c: Any = None  # the BitmapKV

    def __post_init__(self) -> None:
        c = self.c
        h, d, tc = c.num_heads, c.head_dim, c.n_compressed
        t = c.tiles()
        # K: rows (head, token) = h*Tc + t, cols (head, channel); flat indices of the kept elements of K laid out
        # [H, Tc, D] enumerate them in row-major (row, col) order, as CSR needs
        k = np.ascontiguousarray(t["k_vals"].transpose(0, 1, 3, 2), np.float32).reshape(-1)  # [H, C, 64, D]
        flat = np.flatnonzero(t["k_mask"].transpose(0, 1, 3, 2))
        rows = flat // d
        self.k = _csr(_crow(rows, h * tc), (rows // max(tc, 1)) * d + flat % d, k[flat], (h * tc, h * d))
        # V^T: rows (head, channel) = h*D + d, cols (head, token); V^T laid out [H, D, Tc]
        v = np.ascontiguousarray(t["v_vals"].transpose(0, 3, 1, 2), np.float32).reshape(-1)  # [H, D, C, 64]
        flat = np.flatnonzero(t["v_mask"].transpose(0, 3, 1, 2))
        rows = flat // max(tc, 1)
        self.vt = _csr(_crow(rows, h * d), (rows // d) * tc + flat % max(tc, 1), v[flat], (h * d, h * tc))

    # one sparse matrix-vector product per query head of a GQA group (torch.mv on CSR is MKL's SpMV, several times
    # faster than CSR @ [n, 1]); the loop runs over the <= 8 heads sharing a KV head, not over elements
    def scores(self, qg):
        h, g, d = qg.shape
        cols = [torch.mv(self.k, qg[:, j].reshape(h * d)) for j in range(g)]  # each [H*Tc]
        return torch.stack(cols, dim=1).view(h, self.c.n_compressed, g).permute(0, 2, 1) if g > 1 else \
            cols[0].view(h, 1, self.c.n_compressed)

    def apply_v(self, p):
        h, g, tc = p.shape
        cols = [torch.mv(self.vt, p[:, j].reshape(h * tc)) for j in range(g)]  # each [H*D]
        return torch.stack(cols, dim=1).view(h, self.c.head_dim, g).permute(0, 2, 1) if g > 1 else \
            cols[0].view(h, 1, self.c.head_dim)

    def nbytes(self) -> int:
        ts = [self.k.crow_indices(), self.k.col_indices(), self.k.values(), self.vt.crow_indices(),
              self.vt.col_indices(), self.vt.values()]
        return super().nbytes() + _tbytes(*ts)


_PLANS: "weakref.WeakKeyDictionary[KVCache, _Plan]" = weakref.WeakKeyDictionary()


@functools.singledispatch
def _make_plan(cache: KVCache, recent: tuple[np.ndarray, np.ndarray]) -> _Plan:
    raise SpecError(f"decode_attention has no kernel for {type(cache).__name__}; use a cache from "
                    "quant.formats.compress_kv")


@_make_plan.register
def _(cache: DenseKV, recent):
    return _DensePlan(*recent)


@_make_plan.register
def _(cache: QuantKV, recent):
    return _QuantPlan(*recent, c=cache)


@_make_plan.register
def _(cache: BitmapKV, recent):
    return _SparsePlan(*recent, c=cache)


def plan_for(cache: KVCache) -> _Plan:
    """The kernel's per-cache working form (built on first use, cached while the cache object lives)."""
    plan = _PLANS.get(cache)
    if plan is None:
        recent = tuple(np.ascontiguousarray(x, np.float32) for x in (cache.k_recent, cache.v_recent))
        plan = _make_plan(cache, recent)
        _PLANS[cache] = plan
    return plan


def plan_bytes(cache: KVCache) -> int:
    """Bytes the kernel's working form of `cache` occupies (what a decode step streams on this CPU)."""
    return plan_for(cache).nbytes()


def decode_attention(q: np.ndarray | torch.Tensor, cache: KVCache, scheme: CompressionScheme | None = None, *,
                     sink: int | None = None, window: int | None = None,
                     softmax_scale: float | None = None) -> np.ndarray | torch.Tensor:
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
    qg = torch.from_numpy(np.ascontiguousarray(qn, np.float32)).view(hkv, g, d)  # [Hkv, g, D]
    s_c = plan.scores(qg)  # [Hkv, g, Tc]
    # dense part: numpy einsum was the fastest dense GEMV for [32, 4096, 128] on this 2-core CPU (torch bmm about
    # 1.5-2x slower, per-head torch.mv about 1.3x, numpy matmul far slower; measured 2026-11-23 while benchmarking)
    s_r = torch.from_numpy(np.einsum("hjd,htd->hjt", qg.numpy(), plan.k_recent))  # [Hkv, g, Tr]
    s = torch.cat([s_c, s_r], dim=2).to(torch.float64) * scale  # [Hkv, g, T]
    mask = torch.from_numpy(attended_mask(n, sink, window))
    s = s.masked_fill(~mask, -math.inf)
    p = torch.softmax(s, dim=2).to(torch.float32)
    tc = cache.n_compressed
    out_r = np.einsum("hjt,htd->hjd", np.ascontiguousarray(p[..., tc:].numpy()), plan.v_recent)
    out = plan.apply_v(p[..., :tc].contiguous()) + torch.from_numpy(out_r)  # [Hkv, g, D]
    out = out.reshape(hkv * g, d)
    return out if is_torch else out.numpy()
