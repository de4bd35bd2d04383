"""The operators of an fp16 transformer forward pass, as plain PyTorch calls.

These functions ARE the reference implementation: the profiler times each of them over a grid of shapes, and the
end-to-end validation model (`hwsim.gpuprofile.validate`) is built from the very same calls, so a profile composes
into a step time with no hidden glue. Every function takes preallocated tensors and returns new ones; nothing here
synchronises with the host, so every call can be captured in a CUDA graph.

Shapes: T tokens (batch x new tokens), h hidden size, Hq / Hkv query / KV heads, D head_dim, C cached tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "linear",
    "norm",
    "rope_table",
    "rope",
    "activation",
    "add",
    "embed",
    "kv_append",
    "kv_write",
    "decode_attention",
    "prefill_attention",
    "argmax",
]


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """y[T, out] = x[T, in] @ w[out, in]^T (+ b): one cuBLAS GEMM (bias in its epilogue)."""
    return F.linear(x, w, b)


def norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm (b is None) or LayerNorm over the last dimension of x[T, h]."""
    if b is None:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def rope_table(pos: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin rows of the tokens' positions: [T, 1, D/2] each (once per forward pass)."""
    return cos_t.index_select(0, pos).unsqueeze(1), sin_t.index_select(0, pos).unsqueeze(1)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (Su et al. 2021, eq. 34, half-split layout) of x[T, H, D]; returns [T, H, D]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def activation(kind: str, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """FFN nonlinearity: swiglu = silu(gate) * up; gelu; relu."""
    if kind == "swiglu":
        return F.silu(a) * b
    if kind == "gelu":
        return F.gelu(a, approximate="tanh")
    return F.relu(a)


def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Residual add."""
    return x + y


def embed(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Embedding rows of ids[T]: [T, h]."""
    return F.embedding(ids, table)


def kv_append(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
) -> None:
    """Decode: write one token's K and V (k, v [B, Hkv*D]) at cache index pos[1] of caches [B, Hkv, C, D]."""
    B, Hkv, _, D = k_cache.shape
    k_cache.index_copy_(2, pos, k.view(B, Hkv, 1, D))
    v_cache.index_copy_(2, pos, v.view(B, Hkv, 1, D))


def kv_write(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Prefill: write P tokens' K and V (k, v [B, P, Hkv, D]) into caches [B, Hkv, C, D] at positions 0..P-1."""
    P = k.shape[1]
    k_cache[:, :, :P].copy_(k.transpose(1, 2))
    v_cache[:, :, :P].copy_(v.transpose(1, 2))


def decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: int, end: int
) -> torch.Tensor:
    """One new query token per sequence, q[B, Hq*D], over cached tokens start..end-1; returns [B, Hq*D].

    torch SDPA (FlashAttention-2 on Hopper for fp16; GQA without copying K/V via enable_gqa).
    """
    B, Hkv, _, D = k_cache.shape
    Hq = q.shape[1] // D
    o = F.scaled_dot_product_attention(
        q.view(B, Hq, 1, D), k_cache[:, :, start:end], v_cache[:, :, start:end], enable_gqa=Hq != Hkv
    )
    return o.view(B, Hq * D)


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal self-attention of P new tokens: q[B, P, Hq, D], k/v [B, P, Hkv, D] -> [B*P, Hq*D]."""
    B, P, Hq, D = q.shape
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=Hq != k.shape[2]
    )
    return o.transpose(1, 2).reshape(B * P, Hq * D)


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """Greedy sampling: index of the largest logit of each row of logits[B, V]."""
    return logits.argmax(dim=-1)
