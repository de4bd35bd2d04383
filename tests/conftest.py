"""Shared pytest configuration: hypothesis profiles (CI: deterministic, bounded), repo paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def write_tiny_checkpoint(
    out: Path, *, dtype: str = "bfloat16", shards: int = 2, layers: int = 2, seed: int = 0, **config
) -> Path:
    """A tiny random Llama checkpoint in the Hugging Face layout: config.json, `shards` *.safetensors files with
    model.safetensors.index.json (one model.safetensors when shards == 1), and a byte-level BPE tokenizer.json
    trained with the `tokenizers` library on Wikipedia leads. `config` overrides config.json keys."""
    import json

    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from models.data import wiki_leads

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([t for _, t in wiki_leads()[:200]], trainer)
    tok.save(str(out / "tokenizer.json"))
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "num_hidden_layers": layers,
        "vocab_size": 400,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "torch_dtype": dtype,
    }
    cfg.update(config)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    g = torch.Generator().manual_seed(seed)
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (h, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, h),
                p + "mlp.gate_proj.weight": (f, h),
                p + "mlp.up_proj.weight": (f, h),
                p + "mlp.down_proj.weight": (h, f),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        )
    tensors = {
        n: (1.0 + 0.1 * torch.randn(s, generator=g)) if len(s) == 1 else torch.randn(s, generator=g) / s[-1] ** 0.5
        for n, s in shapes.items()
    }
    tensors = {n: t.to(getattr(torch, dtype)).contiguous() for n, t in tensors.items()}
    if shards == 1:
        save_file(tensors, str(out / "model.safetensors"))
        return out
    names = list(tensors)
    wmap = {}
    for j in range(shards):
        part = names[j::shards]
        fname = f"model-{j + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(out / fname))
        wmap.update(dict.fromkeys(part, fname))
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}, indent=1))
    return out


@pytest.fixture(name="tiny_checkpoint", scope="session")
def _tiny_checkpoint(tmp_path_factory):
    """Path of a tiny random Llama checkpoint (bf16, two shards, trained tokenizer); see write_tiny_checkpoint.
    Tests that modify a checkpoint copy it first."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama")


@pytest.fixture(name="write_checkpoint", scope="session")
def _write_checkpoint():
    """The checkpoint writer itself, for tests that need a variant (dtype, shards, config overrides)."""
    return write_tiny_checkpoint
