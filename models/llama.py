"""The project's own one-file Llama model (torch): RMSNorm, rotate-half RoPE, GQA attention, SwiGLU, tied embeddings.

Made to be compressed. Every projection is an `nn.Module` attribute (`q_proj`, `k_proj`, `v_proj`, `o_proj`,
`gate_proj`, `up_proj`, `down_proj`) that quantization swaps for another module with the same call signature
(`[..., in] -> [..., out]`). Attention takes two hooks:

- `kv_codec`: an object that models a compressed KV cache (KV4, bitmap sparsity, ...): `compress(k, v)` returns the
  values the cache gives back for the compressed part, and `compressed_mask(T)` says, for query i and key j, whether
  key j is read from the compressed store when token i is decoded (the newest tokens stay dense). Attention is then
  evaluated exactly as token-by-token decoding against that cache would compute it, in one parallel pass.
- `attn_impl`: replaces the whole attention computation: (q [B, H, T, D], k, v [B, Hkv, T, D] after RoPE, layer)
  -> [B, H, T, D] (used to run the reference decode kernels over packed caches).
- `attn_mask_fn`: a function (T, device) -> bool [T, T] of allowed (query, key) pairs, e.g. the Λ mask (sinks + local
  window, LM-Infinite). It replaces the plain causal mask and must be a subset of it.

Shapes: B batch, T tokens, H query heads, Hkv KV heads, D head dim, C model width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

__all__ = ["LlamaConfig", "Llama", "Block", "Attention", "KVCodec", "causal_mask", "LINEAR_NAMES"]

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a Llama model (the dimensions the torch model needs)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    vocab_size: int
    rope_theta: float
    norm_eps: float
    max_seq_len: int
    tie_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_spec(cls, spec) -> LlamaConfig:
        """From a models.spec.ModelSpec of the llama family (SwiGLU, RMSNorm, RoPE)."""
        from base.errors import SpecError

        if spec.ffn_type != "swiglu" or spec.norm != "rmsnorm" or spec.positional != "rope":
            raise SpecError(
                f"model {spec.name!r} is not Llama-like (SwiGLU + RMSNorm + RoPE); models.llama cannot run it"
            )
        if spec.head_dim * spec.num_heads != spec.hidden_size:
            raise SpecError(f"model {spec.name!r}: head_dim * num_heads != hidden_size is not supported")
        return cls(
            n_layers=spec.num_layers,
            d_model=spec.hidden_size,
            n_heads=spec.num_heads,
            n_kv_heads=spec.num_kv_heads,
            d_ff=spec.ffn_hidden_size,
            vocab_size=spec.vocab_size,
            rope_theta=float(spec.rope_theta or 10000.0),
            norm_eps=spec.norm_eps,
            max_seq_len=spec.max_position_embeddings,
            tie_embeddings=spec.tied_embeddings,
        )


class KVCodec(Protocol):
    """A compressed KV cache as seen by attention (see module docstring)."""

    def compress(self, k: torch.Tensor, v: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: [B, Hkv, T, D] (k after RoPE). Returns what the compressed store yields for every token."""
        ...

    def compressed_mask(self, t: int, device: torch.device) -> torch.Tensor:
        """bool [T, T]: True where query i reads key j from the compressed store."""
        ...


def causal_mask(t: int, device: torch.device | None = None) -> torch.Tensor:
    """bool [T, T], True where key j <= query i."""
    i = torch.arange(t, device=device)
    return i[None, :] <= i[:, None]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rope_tables(t: int, head_dim: int, theta: float, device=None, dtype=torch.float32):
    """cos, sin: [T, D] for rotate-half RoPE (Su et al. 2021; HF Llama layout)."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim))
    ang = torch.arange(t, device=device, dtype=torch.float64)[:, None] * inv[None, :]  # [T, D/2]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [B, H, T, D]
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.layer = layer
        d, hd = cfg.d_model, cfg.head_dim
        self.q_proj = nn.Linear(d, cfg.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, cfg.n_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * hd, d, bias=False)
        self.kv_codec: KVCodec | None = None
        self.attn_mask_fn: Callable[[int, torch.device], torch.Tensor] | None = None
        self.kv_observer: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None
        self.attn_impl: Callable[..., torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        cfg = self.cfg
        hd, h, hkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
        q = self.q_proj(x).view(b, t, h, hd).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(x).view(b, t, hkv, hd).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(x).view(b, t, hkv, hd).transpose(1, 2)  # [B, Hkv, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.kv_observer is not None:
            self.kv_observer(self.layer, k, v)
        if self.attn_impl is not None:  # e.g. token-by-token decode attention over a packed cache
            out = self.attn_impl(q, k, v, self.layer)  # [B, H, T, D]
            return self.o_proj(out.transpose(1, 2).reshape(b, t, h * hd))
        allowed = self.attn_mask_fn(t, x.device) if self.attn_mask_fn is not None else causal_mask(t, x.device)
        rep = h // hkv
        scale = 1.0 / math.sqrt(hd)
        if self.kv_codec is None:
            kr = k.repeat_interleave(rep, dim=1)
            vr = v.repeat_interleave(rep, dim=1)
            out = torch.nn.functional.scaled_dot_product_attention(q, kr, vr, attn_mask=allowed, scale=scale)
        else:
            kc, vc = self.kv_codec.compress(k, v, self.layer)
            mc = self.kv_codec.compressed_mask(t, x.device)  # [T, T]
            if getattr(self.kv_codec, "fp16_cache", False):  # the dense part of the cache is stored fp16
                k, v = k.half().to(q.dtype), v.half().to(q.dtype)
            kr, kcr = k.repeat_interleave(rep, dim=1), kc.repeat_interleave(rep, dim=1)
            vr, vcr = v.repeat_interleave(rep, dim=1), vc.repeat_interleave(rep, dim=1)
            s = torch.where(mc, q @ kcr.transpose(-1, -2), q @ kr.transpose(-1, -2)) * scale  # [B, H, T, T]
            s = s.masked_fill(~allowed, float("-inf"))
            p = torch.softmax(s.float(), dim=-1).to(q.dtype)
            zero = torch.zeros((), dtype=p.dtype, device=p.device)
            out = torch.where(mc, zero, p) @ vr + torch.where(mc, p, zero) @ vcr
        out = out.transpose(1, 2).reshape(b, t, h * hd)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.ffn_norm(x))

    def linears(self) -> dict[str, nn.Module]:
        """The block's seven projections by name (q_proj ... down_proj)."""
        a, m = self.attn, self.mlp
        return {n: getattr(a if n.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else m, n) for n in LINEAR_NAMES}

    def set_linear(self, name: str, module: nn.Module) -> None:
        """Swap one projection for another module with the same [..., in] -> [..., out] signature."""
        owner = self.attn if name in ("q_proj", "k_proj", "v_proj", "o_proj") else self.mlp
        setattr(owner, name, module)


class Llama(nn.Module):
    """Decoder-only Llama. forward(ids [B, T]) -> logits [B, T, vocab] (fp32)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids)

    def rope(self, t: int, device=None, dtype=torch.float32):
        return rope_tables(t, self.cfg.head_dim, self.cfg.rope_theta, device, dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids)  # [B, T, C]
        cos, sin = self.rope(ids.shape[1], ids.device, x.dtype)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        return self.lm_head(self.norm(x)).float()

    def set_kv_codec(self, codec: KVCodec | None) -> None:
        for blk in self.blocks:
            blk.attn.kv_codec = codec

    def set_attn_mask(self, fn: Callable[[int, torch.device], torch.Tensor] | None) -> None:
        for blk in self.blocks:
            blk.attn.attn_mask_fn = fn
