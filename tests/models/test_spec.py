import json

import pytest

from base.errors import SpecError
from models.spec import get_model, list_models, model_from_hf_config

# Published parameter counts (exact where the model card / config gives the exact figure).
PUBLISHED = {
    "llama-7b": 6_738_415_616,  # LLaMA-1 7B (huggyllama/llama-7b)
    "llama-2-7b": 6_738_415_616,  # "6.74 B"
    "llama-2-13b": 13_015_864_320,
    "llama-2-70b": 68_976_648_192,
    "llama-3-8b": 8_030_261_248,
    "llama-3.1-8b": 8_030_261_248,
    "mistral-7b": 7_241_732_096,
    "opt-6.7b": 6_658_473_984,
    "opt-13b": 12_853_473_280,
    "smollm2-135m": 134_515_008,  # shared/data/README.md: 134.5 M
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_count_matches_published(name):
    assert get_model(name).param_count == PUBLISHED[name]


def test_opt_30b_is_30b():
    # OPT paper Table 1 gives "30B"; the exact count from the config is 29.97 B.
    assert abs(get_model("opt-30b").param_count / 30e9 - 1) < 0.002


def test_every_shipped_spec_names_its_source():
    names = list_models()
    assert len(names) >= 11
    for n in names:
        m = get_model(n)
        assert m.name == n and len(m.source) > 10


def test_gqa_kv_width():
    m = get_model("llama-2-70b")
    assert m.kv_dim == 8 * 128 and m.q_dim == 8192 and m.gqa_group == 8
    assert m.kv_elems_per_token == 2 * 80 * 1024


def test_unknown_name_lists_known_names():
    with pytest.raises(SpecError) as err:
        get_model("llama-8b")
    assert "llama-2-7b" in str(err.value) and "llama-8b" in str(err.value)


def _write(tmp_path, cfg, name="config.json"):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


LLAMA_CFG = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "architectures": ["LlamaForCausalLM"],
    "torch_dtype": "float16",
}


def test_hf_config_llama_matches_shipped(tmp_path):
    m = get_model(_write(tmp_path, LLAMA_CFG))
    assert m.param_count == PUBLISHED["llama-2-7b"]
    assert get_model(tmp_path).param_count == m.param_count  # a directory holding config.json


def test_hf_config_gpt2_small():
    cfg = {
        "model_type": "gpt2",
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_positions": 1024,
        "vocab_size": 50257,
        "n_inner": None,
    }
    assert model_from_hf_config(cfg, "gpt2/config.json").param_count == 124_439_808  # GPT-2 small


def test_hf_config_opt_and_mistral():
    opt = {
        "model_type": "opt",
        "hidden_size": 4096,
        "ffn_dim": 16384,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "vocab_size": 50272,
        "max_position_embeddings": 2048,
        "word_embed_proj_dim": 4096,
        "do_layer_norm_before": True,
    }
    assert model_from_hf_config(opt, "x").param_count == PUBLISHED["opt-6.7b"]
    mis = dict(
        LLAMA_CFG,
        model_type="mistral",
        intermediate_size=14336,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        sliding_window=4096,
    )
    m = model_from_hf_config(mis, "x")
    assert m.param_count == PUBLISHED["mistral-7b"] and m.sliding_window == 4096


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"hidden_size": -4096}, "out of range"),
        ({"num_hidden_layers": "32"}, "expected an integer"),
        ({"num_key_value_heads": 5}, "multiple"),
        ({"model_type": "bert"}, "unsupported model_type"),
        ({"num_hidden_layers": None}, "missing key"),
    ],
)
def test_malformed_hf_config(tmp_path, change, fragment):
    cfg = dict(LLAMA_CFG, **change)
    if change.get("num_hidden_layers", 0) is None:
        del cfg["num_hidden_layers"]
    with pytest.raises(SpecError, match=fragment):
        get_model(_write(tmp_path, cfg))


def test_malformed_json_and_yaml(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="malformed JSON"):
        get_model(bad)
    y = tmp_path / "m.yaml"
    y.write_text("name: x\nfamily: llama\nbogus: 1\n")
    with pytest.raises(SpecError, match="unknown key 'bogus'"):
        get_model(y)
