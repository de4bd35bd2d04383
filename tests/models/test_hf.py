import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from base.errors import FormatError, SpecError
from models.hf import is_checkpoint_dir, load_checkpoint, open_checkpoint


def test_load_sharded_bf16(tiny_checkpoint):
    assert is_checkpoint_dir(tiny_checkpoint) and not is_checkpoint_dir(tiny_checkpoint / "config.json")
    model, tok, spec = load_checkpoint(tiny_checkpoint)
    assert (spec.family, spec.num_layers, spec.hidden_size, spec.num_kv_heads, spec.vocab_size) == (
        "llama",
        2,
        128,
        1,
        400,
    )
    assert spec.name == "tiny-llama" and not spec.tied_embeddings
    index = json.loads((tiny_checkpoint / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(index.values())) == 2
    for hf_name, got in [
        ("model.layers.1.self_attn.k_proj.weight", model.blocks[1].attn.k_proj.weight),
        ("model.layers.0.post_attention_layernorm.weight", model.blocks[0].ffn_norm.weight),
        ("lm_head.weight", model.lm_head.weight),
        ("model.embed_tokens.weight", model.embed.weight),
    ]:
        with safe_open(str(tiny_checkpoint / index[hf_name]), framework="pt") as f:
            want = f.get_tensor(hf_name)
        assert want.dtype == torch.bfloat16 and torch.equal(got, want.float())
    assert (tok.bos_id, tok.eos_id) == (1, 2) and tok.vocab_size <= spec.vocab_size
    ids = tok.encode("The history of the city", bos=True)
    assert ids[0] == 1 and tok.decode(ids[1:]) == "The history of the city"
    logits = model(torch.tensor([ids]))
    assert logits.shape == (1, len(ids), 400) and torch.isfinite(logits).all()


@pytest.mark.parametrize("dtype,shards", [("float16", 1), ("float32", 3)])
def test_dtypes_and_layouts(tmp_path, write_checkpoint, dtype, shards):
    path = write_checkpoint(tmp_path / "m", dtype=dtype, shards=shards, layers=3, tie_word_embeddings=True)
    model, _, spec = load_checkpoint(path, n_layers=2)
    assert spec.num_layers == 2 and len(model.blocks) == 2 and spec.tied_embeddings
    assert model.lm_head.weight is model.embed.weight
    assert (path / "model.safetensors").is_file() == (shards == 1)


def _copy(src, tmp_path):
    dst = tmp_path / "ck"
    shutil.copytree(src, dst)
    return dst


def _edit_config(path, **kv):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(kv)
    for k in [k for k, v in kv.items() if v is None]:
        cfg.pop(k)
    (path / "config.json").write_text(json.dumps(cfg))


def test_missing_shard(tiny_checkpoint, tmp_path):
    path = _copy(tiny_checkpoint, tmp_path)
    (path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FormatError, match="shard 'model-00002-of-00002.safetensors'.*missing"):
        open_checkpoint(path)
    (path / "model.safetensors.index.json").unlink()
    with pytest.raises(FormatError, match="no model.safetensors.index.json"):
        open_checkpoint(path)


@pytest.mark.parametrize(
    "edit,err,needle",
    [
        (dict(intermediate_size=192), FormatError, r"shape \[256, 128\] but config.json implies \[192, 128\]"),
        (dict(num_hidden_layers=3), FormatError, "model.layers.2.* is missing"),
        (dict(model_type="gpt2"), SpecError, "model_type 'gpt2' is not supported"),
        (dict(rope_scaling={"type": "linear", "factor": 2.0}), SpecError, "rope_scaling"),
        (dict(attention_bias=True), SpecError, "attention_bias"),
        (dict(bos_token_id=None), SpecError, "bos_token_id"),
        (dict(bos_token_id=4000), SpecError, "bos_token_id"),
    ],
)
def test_bad_config(tiny_checkpoint, tmp_path, edit, err, needle):
    path = _copy(tiny_checkpoint, tmp_path)
    _edit_config(path, **edit)
    with pytest.raises(err, match=needle):
        open_checkpoint(path)


def test_bos_from_tokenizer_config(tiny_checkpoint, tmp_path):
    path = _copy(tiny_checkpoint, tmp_path)
    _edit_config(path, bos_token_id=None, eos_token_id=None)
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"}}))
    ck = open_checkpoint(path)
    assert (ck.bos_id, ck.eos_id) == (1, 2)


def test_tokenizer_mismatch_and_missing(tmp_path, write_checkpoint, tiny_checkpoint):
    path = write_checkpoint(tmp_path / "small-vocab", shards=1, vocab_size=300)  # the tokenizer has 384 tokens
    with pytest.raises(FormatError, match="384 tokens but config.json's vocab_size is 300"):
        open_checkpoint(path)
    path = _copy(tiny_checkpoint, tmp_path)
    (path / "tokenizer.json").unlink()
    with pytest.raises(FormatError, match="no tokenizer.json"):
        open_checkpoint(path)
    (path / "tokenizer.json").write_text("{not json")
    with pytest.raises(FormatError, match="not a readable tokenizer.json"):
        open_checkpoint(path)


def test_bad_tensors(tiny_checkpoint, tmp_path):
    from safetensors.numpy import save_file

    path = _copy(tiny_checkpoint, tmp_path)
    wm = json.loads((path / "model.safetensors.index.json").read_text())
    wm["weight_map"]["model.layers.0.self_attn.q_proj.bias"] = "extra.safetensors"
    save_file({"model.layers.0.self_attn.q_proj.bias": np.zeros(128, np.float32)}, str(path / "extra.safetensors"))
    (path / "model.safetensors.index.json").write_text(json.dumps(wm))
    with pytest.raises(FormatError, match="q_proj.bias"):
        open_checkpoint(path)
    save_file({"model.layers.0.self_attn.q_proj.bias": np.zeros(128, np.int32)}, str(path / "extra.safetensors"))
    shard = path / "model-00001-of-00002.safetensors"
    shard.write_bytes(b"\xff" * 16)
    with pytest.raises(FormatError, match="not a readable safetensors"):
        open_checkpoint(path)
