"""The grid of operator shapes a GPU profile measures, derived from the shipped model specs.

Every operator of `hwsim.gpuprofile.oplist` has a *key* (the shape fields that name one table: a linear layer's
(in, out, bias), attention's (q_heads, kv_heads, head_dim), ...) and one or two *axes* measured over a range
(tokens; batch x context). The keys come from the shipped model families, so a profile covers every shipped model
exactly; other shapes are scaled from the nearest key (see `hwsim.gpuprofile.profile`).

Pure Python (no torch): the profiler sends this grid to the device and records it in the profile.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "OPERATORS",
    "TOKENS",
    "BATCH",
    "CONTEXT",
    "PREFILL_SEQ",
    "KV_BYTES_MAX",
    "PREFILL_TOKENS_MAX",
    "default_grid",
    "grid_for_models",
    "shape_of",
]

# Axis values. Tokens: decode batches and prefill token counts (batch x prompt); powers of two plus 1.5x points
# where GEMM tiling changes fastest (small T).
TOKENS: tuple[int, ...] = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
BATCH: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTEXT: tuple[int, ...] = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
PREFILL_SEQ: tuple[int, ...] = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PREFILL_BATCH: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
KV_BYTES_MAX = 8 * 2**30  # one decode-attention point reads at most this much K+V (fp16); larger ones fall back
PREFILL_TOKENS_MAX = 65536  # batch x seq of one prefill-attention point

# Operator -> (key fields, axis names). The order of OPERATORS is the order a profile run measures them: the many
# cheap tables first, so that a run stopped by its deadline still holds every operator.
OPERATORS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "norm": (("kind", "width"), ("tokens",)),
    "rope_table": (("head_dim",), ("tokens",)),
    "rope": (("heads", "head_dim"), ("tokens",)),
    "activation": (("kind", "width"), ("tokens",)),
    "add": (("width",), ("tokens",)),
    "embed": (("width",), ("tokens",)),
    "kv_append": (("kv_heads", "head_dim"), ("batch",)),
    "kv_write": (("kv_heads", "head_dim"), ("tokens",)),
    "argmax": (("vocab",), ("batch",)),
    "decode_attention": (("q_heads", "kv_heads", "head_dim"), ("batch", "context")),
    "linear": (("in", "out", "bias"), ("tokens",)),
    "prefill_attention": (("q_heads", "kv_heads", "head_dim"), ("batch", "seq")),
}


def _add(keys: dict[str, list], op: str, key: dict[str, Any]) -> None:
    if key not in keys[op]:
        keys[op].append(key)


def grid_for_models(models: list[Any]) -> dict[str, Any]:
    """The grid (keys per operator, axis values) covering `models` (ModelSpec-like objects)."""
    keys: dict[str, list] = {op: [] for op in OPERATORS}
    for m in models:
        for lin in m.block_linears:
            _add(keys, "linear", {"in": lin.in_features, "out": lin.out_features, "bias": bool(lin.bias)})
        _add(keys, "linear", {"in": m.hidden_size, "out": m.vocab_size, "bias": False})
        _add(keys, "norm", {"kind": "rms" if m.norm == "rmsnorm" else "layer", "width": m.hidden_size})
        if m.positional == "rope":
            _add(keys, "rope_table", {"head_dim": m.head_dim})
            _add(keys, "rope", {"heads": m.num_heads, "head_dim": m.head_dim})
            _add(keys, "rope", {"heads": m.num_kv_heads, "head_dim": m.head_dim})
        _add(keys, "activation", {"kind": m.ffn_type, "width": m.ffn_hidden_size})
        _add(keys, "add", {"width": m.hidden_size})
        _add(keys, "embed", {"width": m.hidden_size})
        att = {"q_heads": m.num_heads, "kv_heads": m.num_kv_heads, "head_dim": m.head_dim}
        _add(keys, "decode_attention", att)
        _add(keys, "prefill_attention", att)
        _add(keys, "kv_append", {"kv_heads": m.num_kv_heads, "head_dim": m.head_dim})
        _add(keys, "kv_write", {"kv_heads": m.num_kv_heads, "head_dim": m.head_dim})
        _add(keys, "argmax", {"vocab": m.vocab_size})
    for op in keys:
        keys[op].sort(key=lambda k: tuple(str(v).zfill(8) for v in k.values()))
    return {
        "keys": keys,
        "axes": {
            "tokens": list(TOKENS),
            "batch": list(BATCH),
            "context": list(CONTEXT),
            "seq": list(PREFILL_SEQ),
            "prefill_batch": list(PREFILL_BATCH),
        },
        "limits": {"kv_bytes_max": KV_BYTES_MAX, "prefill_tokens_max": PREFILL_TOKENS_MAX},
        "models": sorted(m.name for m in models),
    }


def default_grid() -> dict[str, Any]:
    """The grid covering every shipped model spec (models/specs/*.yaml)."""
    from models.spec import get_model, list_models

    return grid_for_models([get_model(n) for n in list_models()])


def shape_of(spec: Any) -> dict[str, Any]:
    """The fields of a ModelSpec that the reference model needs, as plain data."""
    fields = (
        "name",
        "num_layers",
        "hidden_size",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "ffn_hidden_size",
        "ffn_type",
        "vocab_size",
        "norm",
        "positional",
        "attention_bias",
        "mlp_bias",
        "tied_embeddings",
        "sliding_window",
        "max_position_embeddings",
    )
    return {f: getattr(spec, f) for f in fields}
