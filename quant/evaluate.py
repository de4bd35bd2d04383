"""Perplexity of a (compressed) model on text: 512-token non-overlapping windows, BOS first
(shared/data/README.md protocol; see models.data.eval_windows)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["PerplexityResult", "perplexity", "window_nll", "model_from_artifact", "artifact_tokenizer", "PATHS"]


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    nll_sum: float
    n_tokens: int
    n_windows: int


def window_nll(model, window: list[int]) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of window[1:] given the prefix, and the number of scored tokens."""
    import torch

    with torch.no_grad():
        x = torch.tensor([window], dtype=torch.long, device=model.embed.weight.device)
        logits = model(x)[0, :-1]  # [T-1, V]
        nll = torch.nn.functional.cross_entropy(logits.float(), x[0, 1:], reduction="sum")
    return float(nll), len(window) - 1


def perplexity(model, windows: list[list[int]], progress: Callable[[int], None] | None = None) -> PerplexityResult:
    """exp(total NLL / scored tokens) over all windows; `progress(i)` is called after each window."""
    nll, n = 0.0, 0
    for i, w in enumerate(windows):
        a, b = window_nll(model, w)
        nll += a
        n += b
        if progress is not None:
            progress(i + 1)
    return PerplexityResult(ppl=math.exp(nll / max(1, n)), nll_sum=nll, n_tokens=n, n_windows=len(windows))


def artifact_tokenizer(art):
    """The tokenizer of a loaded artifact: the tokenizer.json stored in it (a user's checkpoint, checked against the
    manifest's SHA-256, BOS/EOS ids from the manifest), else the shipped model's (models.smollm)."""
    from base.errors import FormatError
    from models.hf import TOKENIZER_FILE
    from models.smollm import load_tokenizer
    from models.tokenizer import tokenizer_from_json
    from quant.artifact import read_artifact_file

    data = read_artifact_file(art.path, TOKENIZER_FILE)
    if data is None:
        return load_tokenizer(art.model_spec.name)
    prov = art.manifest.get("calibration", {}).get("tokenizer")
    ids = [prov.get(k) if isinstance(prov, dict) else None for k in ("bos_id", "eos_id")]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise FormatError(
            f"{art.path}: the manifest gives no bos_id/eos_id for {TOKENIZER_FILE}; write the artifact "
            "again with `hwsim compress`"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{art.path / TOKENIZER_FILE} is not UTF-8 JSON; write the artifact again") from None
    return tokenizer_from_json(art.path / TOKENIZER_FILE, ids[0], ids[1], text=text)


# ---- an artifact as a runnable model ------------------------------------------------------------------------------
PATHS = ("packed", "fake")


def _packed_linear(obj, act_bits: int):
    """nn.Module computing y = x W^T through the packed object `obj` and the reference kernels.

    int weights with int8 activations run `quant.kernels.w_a8_gemm` (exact integer accumulation per group). A 2:4
    weight is handed to that kernel as the equivalent dense group-quantized weight (pruned entries = zero point,
    which contributes exactly 0 to every integer accumulator) because the kernel's 2:4 gather path needs
    tokens x out x in/2 float64 temporaries; tests check both paths give identical accumulators. Everything else
    (fp16 activations, bitmap-sparse weights) multiplies by the format's own `dequantize()`.
    """
    import numpy as np
    import torch
    from torch import nn

    from quant.formats import GroupQuantWeight, Int8Activation, Sparse24Weight
    from quant.kernels import w_a8_gemm

    kernel_w = None
    if act_bits == 8 and getattr(obj, "bits", 16) < 16:
        if isinstance(obj, GroupQuantWeight):
            kernel_w = obj
        elif isinstance(obj, Sparse24Weight):
            codes = np.zeros((obj.out_features, obj.in_features), np.uint8)
            cols = obj.kept_columns()
            z = obj.zeros()
            codes[:] = z[:, np.arange(obj.in_features) // obj.group_size]  # pruned -> zero point
            np.put_along_axis(codes, cols, obj.kept_codes().astype(np.uint8), axis=1)
            kernel_w = GroupQuantWeight.from_codes(codes, obj.scales, z, obj.bits, obj.group_size)
    dense = None if kernel_w is not None else torch.from_numpy(obj.dequantize())  # float64 [out, in]

    class _Packed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            x2 = x.detach().reshape(-1, shape[-1]).double().numpy()
            if kernel_w is not None:
                y = torch.from_numpy(w_a8_gemm(Int8Activation.from_float(x2), kernel_w))
            else:
                xx = (
                    torch.from_numpy(Int8Activation.from_float(x2).dequantize())
                    if act_bits == 8
                    else torch.from_numpy(x2)
                )
                y = xx @ dense.T
            return y.to(x.dtype).reshape(*shape[:-1], -1)

    m = _Packed()
    m.packed, m.act_bits = obj, act_bits
    return m


def _decode_attention_impl(scheme):
    """attn_impl for models.llama.Attention: decode attention of every token over the cache a token-by-token
    decoder holds, packed in `scheme`'s KV format (quant.kernels.window_attention: the packed cache of a sequence is
    built once per layer and unpacked to its exact values; Λ mask from the scheme)."""
    import torch

    from quant.kernels import window_attention

    def impl(q, k, v, layer):
        # q: [B, H, T, D]; k, v: [B, Hkv, T, D] (after RoPE). The cache is compressed from float64 K/V as the
        # fake path's codec does, so both paths quantize the same numbers.
        out = torch.empty_like(q)
        qn = q.detach().float().numpy()
        kn, vn = k.detach().double().numpy(), v.detach().double().numpy()
        for bi in range(q.shape[0]):
            out[bi] = torch.from_numpy(window_attention(qn[bi], kn[bi], vn[bi], scheme)).to(q.dtype)
        return out

    return impl


def model_from_artifact(art, path: str = "packed"):
    """A models.llama.Llama running a loaded artifact (quant.artifact.load_artifact).

    path='packed': every projection computes through its packed format and the reference GEMM kernel; attention
    is the reference decode kernel for every token over the cache a decoder holds, packed in the scheme's KV format
    (all tokens of a window in one pass per layer: quant.kernels.window_attention).
    path='fake': the same stored weights dequantized once, int8 activations and the KV cache fake-quantized in
    torch (quant.methods; the cache rounded to fp16 where the format stores fp16), attention evaluated in one
    parallel pass with exact decode-equivalent masking.
    """
    import torch

    from base.errors import SpecError
    from models.llama import LINEAR_NAMES, Llama, LlamaConfig
    from quant.methods import KVCodec, LambdaMask
    from quant.methods._prims import QuantLinear

    if path not in PATHS:
        raise SpecError(f"evaluation path {path!r} unknown; use one of {', '.join(PATHS)}")
    cfg = LlamaConfig.from_spec(art.model_spec)
    model = Llama(cfg)
    fp = {k: torch.from_numpy(v.astype("float32")) for k, v in art.fp16.items()}
    with torch.no_grad():
        model.embed.weight.copy_(fp["embed"])
        model.norm.weight.copy_(fp["norm"])
        if not cfg.tie_embeddings:
            model.lm_head.weight.copy_(fp["lm_head"])
        for i, blk in enumerate(model.blocks):
            blk.attn_norm.weight.copy_(fp[f"blocks.{i}.attn_norm"])
            blk.ffn_norm.weight.copy_(fp[f"blocks.{i}.ffn_norm"])
            for n in LINEAR_NAMES:
                key = f"blocks.{i}.{n}"
                act = art.act_bits[i][n]
                if key in art.packed:
                    obj = art.packed[key]
                    if path == "packed":
                        blk.set_linear(n, _packed_linear(obj, act))
                        continue
                    w = torch.from_numpy(obj.dequantize()).float()
                else:
                    w = fp[key]  # a projection kept fp16 (no packed format): both paths multiply by it
                blk.set_linear(n, QuantLinear(w, act_bits=act))
    model.eval().requires_grad_(False)
    s = art.scheme
    if path == "packed":
        for blk in model.blocks:
            blk.attn.attn_impl = _decode_attention_impl(s)
    else:
        # the cache stores fp16 (dense tokens too), as the packed KV formats do
        model.set_kv_codec(
            KVCodec(
                bits=s.kv_bits,
                group_size=s.kv_group_size,
                sparsity=s.kv_sparsity,
                dense_recent=s.kv_dense_recent,
                fp16_cache=True,
            )
        )
        if s.attn_window is not None:
            model.set_attn_mask(LambdaMask(s.attn_sink, s.attn_window))
    return model
