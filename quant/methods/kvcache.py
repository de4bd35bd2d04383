"""Compressed KV cache: KV4 (KIVI-style: K per channel over groups of tokens, V per token over groups of channels,
symmetric int, fp16 scales) and Mustafar bitmap sparsity (per token, each head's K and V vectors keep their
largest-magnitude elements), both with a dense recent window.

Which tokens are compressed follows quant/scheme.py exactly: the cache compresses whole chunks of CHUNK_TOKENS
tokens; the newest `dense_recent` tokens plus the not-yet-full chunk stay dense fp16. When query i is decoded the
cache holds i + 1 tokens, of which the first floor(max(0, i + 1 - dense_recent) / CHUNK) * CHUNK are compressed.
`KVCodec.compressed_mask` gives that per (query, key) pair, so one parallel forward computes exactly what
token-by-token decoding against the compressed cache computes. K is compressed after RoPE (as a cache stores it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from base.errors import SpecError
from quant.methods._prims import quant_sym_int
from quant.quantize import register
from quant.scheme import CHUNK_TOKENS, kept_per_token

__all__ = ["KV4Config", "KVBitmapConfig", "KVCodec", "prune_per_token", "kv_statistics"]


@dataclass(frozen=True)
class KV4Config:
    bits: int = 4
    group_size: int = 64
    dense_recent: int = 32

    def __post_init__(self) -> None:
        if self.bits not in (2, 4, 8):
            raise SpecError(f"KV quantization supports 2, 4 or 8 bits, got {self.bits}")
        if self.group_size < 1 or self.dense_recent < 0:
            raise SpecError("KV group_size must be >= 1 and dense_recent >= 0")


@dataclass(frozen=True)
class KVBitmapConfig:
    sparsity: float = 0.7
    dense_recent: int = 32

    def __post_init__(self) -> None:
        if not 0 < self.sparsity < 1:
            raise SpecError(f"KV bitmap sparsity must be in (0, 1), got {self.sparsity}")


def prune_per_token(x: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero all but the kept_per_token(D, sparsity) largest-|x| elements of every vector x[..., :] (Mustafar)."""
    d = x.shape[-1]
    keep = kept_per_token(d, sparsity)
    idx = x.abs().topk(keep, dim=-1).indices
    mask = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, idx, True)
    return torch.where(mask, x, torch.zeros_like(x))


def _quant_k(k: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """K [B, H, T, D]: one scale per channel per group of `group` consecutive tokens (token 0 aligned)."""
    b, h, t, d = k.shape
    pad = (-t) % group
    kp = torch.nn.functional.pad(k, (0, 0, 0, pad))
    kg = kp.view(b, h, (t + pad) // group, group, d)
    deq, _, _ = quant_sym_int(kg, bits, dim=3)
    return deq.view(b, h, t + pad, d)[:, :, :t]


def _quant_v(v: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """V [B, H, T, D]: one scale per token per group of `group` consecutive channels."""
    b, h, t, d = v.shape
    pad = (-d) % group
    vp = torch.nn.functional.pad(v, (0, pad))
    vg = vp.view(b, h, t, (d + pad) // group, group)
    deq, _, _ = quant_sym_int(vg, bits, dim=4)
    return deq.view(b, h, t, d + pad)[..., :d]


@dataclass(frozen=True)
class KVCodec:
    """The compressed part of the cache as attention sees it (models.llama.KVCodec protocol)."""

    bits: int = 16
    group_size: int = 64
    sparsity: float = 0.0
    dense_recent: int = 0
    chunk: int = CHUNK_TOKENS
    fp16_cache: bool = False  # round what the cache stores as fp16 (dense tokens, fp16-valued sparse tiles)

    @property
    def compressing(self) -> bool:
        return self.bits < 16 or self.sparsity > 0

    def compress(self, k: torch.Tensor, v: torch.Tensor, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: [B, Hkv, T, D]
        if self.sparsity > 0:
            k, v = prune_per_token(k, self.sparsity), prune_per_token(v, self.sparsity)
        if self.bits < 16:
            k, v = _quant_k(k, self.bits, self.group_size), _quant_v(v, self.bits, self.group_size)
        elif self.fp16_cache:
            k, v = k.half().to(k.dtype), v.half().to(v.dtype)
        return k, v

    def compressed_mask(self, t: int, device=None) -> torch.Tensor:
        i = torch.arange(t, device=device)
        if not self.compressing:
            return torch.zeros(t, t, dtype=torch.bool, device=device)
        n_comp = torch.clamp(i + 1 - self.dense_recent, min=0) // self.chunk * self.chunk  # per query
        return i[None, :] < n_comp[:, None]


def _current_codec(model) -> KVCodec:
    c = model.blocks[0].attn.kv_codec
    return c if isinstance(c, KVCodec) else KVCodec()


def _check_recent(old: KVCodec, new_recent: int) -> None:
    if (old.bits < 16 or old.sparsity > 0) and old.dense_recent != new_recent:
        raise SpecError(f"KV methods disagree on the dense recent window ({old.dense_recent} vs {new_recent}); "
                        "use one value for KV quantization and KV sparsity")


@register(KV4Config)
def _kv4(model, cfg: KV4Config, calibration=None) -> dict:
    old = _current_codec(model)
    _check_recent(old, cfg.dense_recent)
    model.set_kv_codec(dataclasses.replace(old, bits=cfg.bits, group_size=cfg.group_size,
                                           dense_recent=cfg.dense_recent))
    return {"method": "kv4", **dataclasses.asdict(cfg)}


@register(KVBitmapConfig)
def _kvbitmap(model, cfg: KVBitmapConfig, calibration=None) -> dict:
    old = _current_codec(model)
    _check_recent(old, cfg.dense_recent)
    model.set_kv_codec(dataclasses.replace(old, sparsity=cfg.sparsity, dense_recent=cfg.dense_recent))
    return {"method": "kv_bitmap", **dataclasses.asdict(cfg)}


def kv_statistics(model, windows, scheme, max_windows: int = 4) -> dict:
    """Per-layer, per-KV-head statistics of the cache on calibration windows, as stored in the artifact manifest.

    For each layer and KV head: `k_density` / `v_density` (fraction of elements stored non-zero in the compressed
    format: after per-token pruning, or the natural fraction of non-zeros when the scheme does not prune),
    `k_tile_nnz_max` (largest kept count in a K tile of 64 tokens of one channel: per-token pruning makes K tiles
    uneven), and `bytes_per_token` (exact compressed bytes of K + V per token of this head, bitmaps, padding and
    scales included, measured on whole chunks). Also the all-layer mean density and bytes per token.
    """
    from quant.scheme import BITMAP_TILE, FP16_BYTES, bitmap_tile_bytes, packed_bytes

    codec = _current_codec(model)
    chunk = CHUNK_TOKENS
    acc: dict[int, list] = {}

    def obs(layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        acc.setdefault(layer, []).append((k.detach(), v.detach()))

    for blk in model.blocks:
        blk.attn.kv_observer = obs
    try:
        with torch.no_grad():
            for w in windows[:max_windows]:
                acc_len = (len(w) // chunk) * chunk
                if acc_len == 0:
                    raise SpecError(f"calibration windows must hold at least {chunk} tokens")
                model(torch.tensor([w[:acc_len]], device=model.embed.weight.device))
    finally:
        for blk in model.blocks:
            blk.attn.kv_observer = None
    bits = scheme.kv_bits
    layers = []
    tot_bytes = tot_tok = 0
    dens = []
    for layer in sorted(acc):
        k = torch.cat([a[0] for a in acc[layer]], dim=2)[0].cpu()  # [Hkv, T, D]
        v = torch.cat([a[1] for a in acc[layer]], dim=2)[0].cpu()
        if scheme.kv_sparsity > 0:
            k, v = prune_per_token(k, scheme.kv_sparsity), prune_per_token(v, scheme.kv_sparsity)
        heads = []
        for h in range(k.shape[0]):
            kh, vh = k[h], v[h]  # [T, D]
            t, d = kh.shape
            kd = float((kh != 0).float().mean())
            vd = float((vh != 0).float().mean())
            entry = {"k_density": round(kd, 6), "v_density": round(vd, 6)}
            if scheme.kv_sparsity > 0:
                kt = (kh != 0).view(t // BITMAP_TILE, BITMAP_TILE, d).sum(1)  # [tiles, D] nnz per K tile
                vt_n = -(-d // BITMAP_TILE)
                vpad = torch.nn.functional.pad((vh != 0), (0, vt_n * BITMAP_TILE - d))
                vt = vpad.view(t, vt_n, BITMAP_TILE).sum(-1)
                val_bits = bits if bits < 16 else 16
                nbytes = sum(bitmap_tile_bytes(int(n), val_bits) for n in kt.flatten())
                nbytes += sum(bitmap_tile_bytes(int(n), val_bits) for n in vt.flatten())
                entry["k_tile_nnz_max"] = int(kt.max())
            else:
                nbytes = 2 * t * packed_bytes(d, bits) if bits < 16 else 2 * t * d * FP16_BYTES
            if bits < 16:
                nbytes += d * -(-t // scheme.kv_group_size) * FP16_BYTES  # K scales
                nbytes += t * -(-d // scheme.kv_group_size) * FP16_BYTES  # V scales
            entry["bytes_per_token"] = round(nbytes / t, 4)
            tot_bytes += nbytes
            tot_tok += t
            dens.append((kd + vd) / 2)
            heads.append(entry)
        layers.append(heads)
    return {
        "tokens_per_head": tot_tok // max(1, len(dens)),
        "codec": dataclasses.asdict(codec),
        "mean_density": round(sum(dens) / max(1, len(dens)), 6),
        "mean_bytes_per_token_per_head": round(tot_bytes / max(1, tot_tok), 4),
        "layers": layers,
    }
