"""Compressed KV cache: KV4 (KIVI-style: K per channel over groups of tokens, V per token over groups of channels,
symmetric int, fp16 scales) and Mustafar bitmap sparsity (per token, each head's K and V vectors keep their
largest-magnitude elements), both with a dense recent window.

Which tokens are compressed follows quant/scheme.py exactly: the cache compresses whole chunks of CHUNK_TOKENS
tokens; the newest `dense_recent` tokens plus the not-yet-full chunk stay dense fp16. When query i is decoded the
cache holds i + 1 tokens, of which the first floor(max(0, i + 1 - dense_recent) / CHUNK) * CHUNK are compressed.
`KVCodec.compressed_mask` gives that per (query, key) pair, so one parallel forward computes exactly what
token-by-token decoding against the compressed cache computes. K is compressed after RoPE (as a cache stores it).

Bitmap variants (all in the same bitmap-tile format, so their bytes are exact in `kv_statistics`), measured against
plain per-token magnitude (Mustafar, arXiv 2505.22913 Sec. 3) on SmolLM2 in benchmarks/data/quality_*.json (whole
texts, GPU) and benchmarks/data/kv_bitmap_probe_cpu.json (benchmarks/kv_bitmap_probe.py: text slices, CPU):

- ``sink``: the first tokens of the sequence are never pruned (attention sinks, Xiao et al. 2023, arXiv
  2309.17453): their tiles hold all elements.
- ``selection="output_aware"``: an element's score is its magnitude times the typical size of what multiplies it
  (K channel d: the RMS of the queries' channel pair (d, d ± D/2), RoPE-invariant; V channel d: the norm of the
  o_proj columns it feeds, over the query heads sharing the KV head), measured on calibration text.
- ``k_granularity="channel"``: K keeps, per channel, the largest elements of each 64-token tile (the K tile's own
  axis) instead of the largest channels of each token; the kept count per tile equals the per-token count.
- ``allocation="sensitivity"``: per-layer kept counts chosen by dynamic programming to minimise the summed
  per-layer KL(uncompressed || pruned) measured on calibration text, with the same total kept count as uniform.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from base.errors import SpecError
from quant.methods._prims import quant_sym_int
from quant.quantize import register
from quant.scheme import CHUNK_TOKENS, kept_per_token

__all__ = [
    "KV4Config",
    "KVBitmapConfig",
    "KVCodec",
    "prune_per_token",
    "prune_per_channel",
    "kv_statistics",
    "output_weights",
    "allocate_layers",
]


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
    """sparsity: mean fraction of K/V elements pruned; dense_recent: newest tokens kept dense; sink, selection,
    k_granularity, allocation: the variants of the module docstring; calib_windows: calibration windows that the
    output-aware scores and the sensitivity allocation are measured on."""

    sparsity: float = 0.7
    dense_recent: int = 32
    sink: int = 0
    selection: str = "magnitude"
    k_granularity: str = "token"
    allocation: str = "uniform"
    calib_windows: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.sparsity < 1:
            raise SpecError(f"KV bitmap sparsity must be in (0, 1), got {self.sparsity}")
        if self.sink < 0 or self.calib_windows < 1:
            raise SpecError("KV bitmap sink must be >= 0 and calib_windows >= 1")
        for key, allowed in (("selection", SELECTIONS), ("k_granularity", GRANULARITIES), ("allocation", ALLOCATIONS)):
            if getattr(self, key) not in allowed:
                raise SpecError(f"KV bitmap {key} {getattr(self, key)!r} unknown; use one of {', '.join(allowed)}")

    @property
    def needs_calibration(self) -> bool:
        return self.selection != "magnitude" or self.allocation != "uniform"


SELECTIONS = ("magnitude", "output_aware")
GRANULARITIES = ("token", "channel")
ALLOCATIONS = ("uniform", "sensitivity")


def prune_per_token(x: torch.Tensor, sparsity: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Zero all but the kept_per_token(D, sparsity) largest elements of every vector x[..., :] (Mustafar), by |x|
    or by |x| * weight (weight broadcast against x, e.g. [Hkv, 1, D] for x [B, Hkv, T, D])."""
    d = x.shape[-1]
    keep = kept_per_token(d, sparsity)
    score = x.abs() if weight is None else x.abs() * weight
    idx = score.topk(keep, dim=-1).indices
    mask = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, idx, True)
    return torch.where(mask, x, torch.zeros_like(x))


def prune_per_channel(
    x: torch.Tensor, sparsity: float, weight: torch.Tensor | None = None, tile: int = CHUNK_TOKENS
) -> torch.Tensor:
    """x [..., T, D]: in every tile of `tile` consecutive tokens (token 0 aligned) keep, per channel, the
    kept_per_token(tile, sparsity) largest |x| (* weight) elements; a last partial tile keeps the same fraction."""
    t, d = x.shape[-2:]
    pad = (-t) % tile
    score = x.abs() if weight is None else x.abs() * weight
    sp = torch.nn.functional.pad(score, (0, 0, 0, pad), value=-1.0)  # padding never selected
    sp = sp.reshape(*x.shape[:-2], (t + pad) // tile, tile, d)
    keep = kept_per_token(tile, sparsity)
    idx = sp.topk(keep, dim=-2).indices
    mask = torch.zeros_like(sp, dtype=torch.bool).scatter_(-2, idx, True)
    mask = mask.reshape(*x.shape[:-2], t + pad, d)[..., :t, :]
    if pad:  # the partial tile: keep its own share
        last = t - t % tile
        n = t - last
        part = score[..., last:, :]
        k2 = kept_per_token(n, sparsity)
        idx2 = part.topk(k2, dim=-2).indices
        mask[..., last:, :] = torch.zeros_like(part, dtype=torch.bool).scatter_(-2, idx2, True)
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
    sink: int = 0  # first tokens never pruned
    k_granularity: str = "token"
    layer_sparsity: tuple[float, ...] | None = None  # per-layer sparsity (overrides `sparsity` where given)
    # output-aware scores: per layer, [Hkv * D] weights of K / V channels (None: plain magnitude)
    k_weight: tuple[tuple[float, ...], ...] | None = dataclasses.field(default=None, repr=False)
    v_weight: tuple[tuple[float, ...], ...] | None = dataclasses.field(default=None, repr=False)

    @property
    def compressing(self) -> bool:
        return self.bits < 16 or self.sparsity > 0

    def layer_sparsity_of(self, layer: int) -> float:
        if self.layer_sparsity is not None and self.sparsity > 0:
            return self.layer_sparsity[layer]
        return self.sparsity

    def prune(self, k: torch.Tensor, v: torch.Tensor, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The bitmap pruning alone (k, v [B, Hkv, T, D] or [Hkv, T, D])."""
        sp = self.layer_sparsity_of(layer)
        if sp <= 0:
            return k, v
        kw = vw = None
        if self.k_weight is not None:
            kw = torch.tensor(self.k_weight[layer], dtype=k.dtype, device=k.device).view(-1, 1, k.shape[-1])
        if self.v_weight is not None:
            vw = torch.tensor(self.v_weight[layer], dtype=v.dtype, device=v.device).view(-1, 1, v.shape[-1])
        kp = prune_per_channel(k, sp, kw, self.chunk) if self.k_granularity == "channel" else prune_per_token(k, sp, kw)
        vp = prune_per_token(v, sp, vw)
        if self.sink:
            kp = torch.cat([k[..., : self.sink, :], kp[..., self.sink :, :]], dim=-2)
            vp = torch.cat([v[..., : self.sink, :], vp[..., self.sink :, :]], dim=-2)
        return kp, vp

    def compress(self, k: torch.Tensor, v: torch.Tensor, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: [B, Hkv, T, D]
        if self.sparsity > 0:
            k, v = self.prune(k, v, layer)
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
        raise SpecError(
            f"KV methods disagree on the dense recent window ({old.dense_recent} vs {new_recent}); "
            "use one value for KV quantization and KV sparsity"
        )


@register(KV4Config)
def _kv4(model, cfg: KV4Config, calibration=None) -> dict:
    old = _current_codec(model)
    _check_recent(old, cfg.dense_recent)
    model.set_kv_codec(
        dataclasses.replace(old, bits=cfg.bits, group_size=cfg.group_size, dense_recent=cfg.dense_recent)
    )
    return {"method": "kv4", **dataclasses.asdict(cfg)}


def output_weights(model, ids: torch.Tensor) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """Output-aware channel weights per layer (module docstring), each [Hkv * D] flattened: K from the RMS of the
    query channel pairs on `ids` [N, T], V from the o_proj column norms."""
    cfg = model.cfg
    h, hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    rep = h // hkv
    acc: dict[int, torch.Tensor] = {}
    hooks = []
    for li, blk in enumerate(model.blocks):

        def hook(mod, inp, out, li=li):
            q = out.detach().float().reshape(-1, hkv, rep, d)  # [tokens, Hkv, rep, D]
            pair = q.pow(2) + torch.roll(q, d // 2, dims=-1).pow(2)  # rotation-invariant energy of (d, d +- D/2)
            acc[li] = acc.get(li, 0) + pair.sum(dim=(0, 2))

        hooks.append(blk.attn.q_proj.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for i in range(ids.shape[0]):
                model(ids[i : i + 1])
    finally:
        for hk in hooks:
            hk.remove()
    n = ids.numel() * rep * 2
    kw, vw = [], []
    for li, blk in enumerate(model.blocks):
        kw.append(tuple((acc[li] / n).sqrt().flatten().cpu().tolist()))
        wo = blk.attn.o_proj.weight.detach().float()  # [C, H * D]
        col = wo.pow(2).sum(0).view(hkv, rep, d).sum(1).sqrt()  # [Hkv, D]
        vw.append(tuple(col.flatten().cpu().tolist()))
    return tuple(kw), tuple(vw)


def _mean_kl(model, ref_logp: torch.Tensor, ids: torch.Tensor) -> float:
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).float(), -1)
    return float(
        torch.nn.functional.kl_div(lp.flatten(0, 1), ref_logp.flatten(0, 1), log_target=True, reduction="batchmean")
    )


def allocate_layers(
    model, codec: KVCodec, ids: torch.Tensor, step: int = 4, span: int = 3
) -> tuple[tuple[float, ...], dict]:
    """Per-layer sparsities with the same total kept count as `codec.sparsity` (module docstring).

    Each layer's KL(uncompressed || only this layer pruned) is measured on `ids` for kept counts k0 + step * j,
    j = -span..span (k0 the uniform per-token count); a dynamic programme picks one count per layer minimising the
    summed KL with the counts summing to L * k0 (KL of layers taken as additive).
    """
    d = model.cfg.head_dim
    n_layers = len(model.blocks)
    k0 = kept_per_token(d, codec.sparsity)
    levels = [k0 + step * j for j in range(-span, span + 1) if 1 <= k0 + step * j <= d]
    with torch.no_grad():
        model.set_kv_codec(None)
        ref = torch.log_softmax(model(ids).float(), -1)
    cost = torch.zeros(n_layers, len(levels), dtype=torch.float64)
    try:
        for li in range(n_layers):
            for j, k in enumerate(levels):
                sp = [0.0] * n_layers
                sp[li] = (d - k) / d
                c = dataclasses.replace(codec, layer_sparsity=tuple(sp))
                model.set_kv_codec(c)
                cost[li, j] = _mean_kl(model, ref, ids)
    finally:
        model.set_kv_codec(codec)
    # DP over layers: offset = sum of (k - k0) / step so far, kept in [-span * L, span * L]
    off = {0: (0.0, [])}
    for li in range(n_layers):
        nxt: dict[int, tuple[float, list[int]]] = {}
        for o, (c, path) in off.items():
            for j, k in enumerate(levels):
                o2 = o + (k - k0) // step
                c2 = c + float(cost[li, j])
                if o2 not in nxt or c2 < nxt[o2][0]:
                    nxt[o2] = (c2, path + [k])
        off = nxt
    kept = off[0][1]
    return tuple((d - k) / d for k in kept), {
        "levels": levels,
        "kept_per_layer": kept,
        "layer_kl": [[round(float(x), 6) for x in r] for r in cost],
    }


@register(KVBitmapConfig)
def _kvbitmap(model, cfg: KVBitmapConfig, calibration=None) -> dict:
    old = _current_codec(model)
    _check_recent(old, cfg.dense_recent)
    codec = dataclasses.replace(
        old, sparsity=cfg.sparsity, dense_recent=cfg.dense_recent, sink=cfg.sink, k_granularity=cfg.k_granularity
    )
    rep: dict = {"method": "kv_bitmap", **dataclasses.asdict(cfg)}
    if cfg.needs_calibration:
        from quant.methods._calib import require_calibration

        ids = require_calibration(calibration, f"KV bitmap ({cfg.selection}, {cfg.allocation})")
        ids = ids[: cfg.calib_windows].to(model.embed.weight.device)
        rep["calibration"] = dict(calibration.provenance)
        if cfg.selection == "output_aware":
            model.set_kv_codec(old)
            kw, vw = output_weights(model, ids)
            codec = dataclasses.replace(codec, k_weight=kw, v_weight=vw)
        if cfg.allocation == "sensitivity":
            sp, info = allocate_layers(model, codec, ids)
            codec = dataclasses.replace(codec, layer_sparsity=sp)
            rep["allocation_detail"] = info
    model.set_kv_codec(codec)
    return rep


def kv_statistics(model, windows, scheme, max_windows: int = 4) -> dict:
    """Per-layer, per-KV-head statistics of the cache on calibration windows, as stored in the artifact manifest.

    For each layer and KV head: `k_density` / `v_density` (fraction of elements stored non-zero in the compressed
    format: after per-token pruning, or the natural fraction of non-zeros when the scheme does not prune),
    `k_tile_nnz_max` (largest kept count in a K tile of 64 tokens of one channel: per-token pruning makes K tiles
    uneven), and `bytes_per_token` (exact compressed bytes of K + V per token of this head, bitmaps, padding and
    scales included, measured on whole chunks). Also the all-layer mean density and bytes per token.
    """
    from quant.scheme import BITMAP_TILE

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
    layers = []
    tot_bytes = tot_tok = 0
    dens = []
    for layer in sorted(acc):
        k = torch.cat([a[0] for a in acc[layer]], dim=2)[0].cpu()  # [Hkv, T, D]
        v = torch.cat([a[1] for a in acc[layer]], dim=2)[0].cpu()
        if scheme.kv_sparsity > 0:
            if codec.sparsity > 0:  # the codec's own selection rule (variants included)
                k, v = codec.prune(k, v, layer)
            else:
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
                nbytes = scheme.kv_head_bytes(t, d, kt.flatten().tolist(), vt.flatten().tolist())
                entry["k_tile_nnz_max"] = int(kt.max())
            else:
                nbytes = scheme.kv_head_bytes(t, d)
            entry["bytes_per_token"] = round(nbytes / t, 4)
            tot_bytes += nbytes
            tot_tok += t
            dens.append((kd + vd) / 2)
            heads.append(entry)
        layers.append(heads)
    return {
        "tokens_per_head": tot_tok // max(1, len(dens)),
        "codec": {k: v for k, v in dataclasses.asdict(codec).items() if k not in ("k_weight", "v_weight")}
        | {"output_aware": codec.k_weight is not None},
        "mean_density": round(sum(dens) / max(1, len(dens)), 6),
        "mean_bytes_per_token_per_head": round(tot_bytes / max(1, tot_tok), 4),
        "layers": layers,
    }
