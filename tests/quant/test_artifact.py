import json
import shutil

import pytest
import torch

from base.errors import FormatError, SpecError
from quant.artifact import load_artifact, read_estimate_inputs, write_artifact
from quant.scheme import get_scheme

N_LAYERS = 2


@pytest.fixture(scope="module")
def art(tmp_path_factory, compress_smollm2):
    scheme = get_scheme("accllm").replace(attn_window=64)
    path, model = compress_smollm2(tmp_path_factory.mktemp("a") / "acc", scheme, N_LAYERS)
    return path, model, scheme


def test_roundtrip_and_estimate_inputs(art):
    path, _, scheme = art
    a = load_artifact(path)
    assert a.scheme == scheme and a.model_spec.num_layers == N_LAYERS
    info = read_estimate_inputs(path)
    expected = sum(scheme.linear_bytes(l) for l in info.model.block_linears)  # 2:4 W2 g64: exact formula
    assert info.layer_weight_bytes == (expected,) * N_LAYERS
    assert info.lm_head_bytes is None and info.embedding_bytes == 49152 * 576 * 2
    assert info.kv_sparsity_per_layer is None  # accllm does not prune the KV cache
    assert len(info.kv_stats["layers"]) == N_LAYERS and len(info.kv_stats["layers"][0]) == 3
    prof = info.profile()
    assert prof.layer_weight_bytes == info.layer_weight_bytes
    assert "Wikipedia" in info.calibration["source"]
    assert not list(path.parent.glob(".*tmp*"))  # the temporary directory was renamed away


def test_stored_weights_equal_quantized_model(art):
    path, model, _ = art
    a = load_artifact(path)
    for i in range(N_LAYERS):
        w = torch.from_numpy(a.packed[f"blocks.{i}.down_proj"].dequantize()).float()
        torch.testing.assert_close(w, model.blocks[i].mlp.down_proj.weight, rtol=1e-6, atol=1e-7)


def test_safetensors_no_pickle(art):
    path, _, _ = art
    raw = (path / "weights.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and json.loads(raw[8 : 8 + n])["__metadata__"]["format"] == "hwsim.compressed-model"


def test_refuses_existing_out(art):
    path, model, scheme = art
    with pytest.raises(SpecError, match="exists"):
        write_artifact(path, model, load_artifact(path).model_spec, scheme, kv_stats={}, calibration={})


@pytest.mark.parametrize(
    "damage", ["truncate", "flip", "manifest_shape", "manifest_key", "manifest_json", "missing_weights"]
)
def test_corrupt_artifacts_refused(art, tmp_path, damage):
    path, _, _ = art
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    wf, mf = bad / "weights.safetensors", bad / "manifest.json"
    man = json.loads(mf.read_text())
    if damage == "truncate":
        wf.write_bytes(wf.read_bytes()[:-1000])
    elif damage == "flip":
        b = bytearray(wf.read_bytes())
        b[len(b) // 2] ^= 0xFF
        wf.write_bytes(bytes(b))
    elif damage == "manifest_shape":
        man["tensors"]["blocks.0.q_proj"]["arrays"]["qvalues"]["shape"] = [1]
        mf.write_text(json.dumps(man))
    elif damage == "manifest_key":
        del man["layers"]
        mf.write_text(json.dumps(man))
    elif damage == "manifest_json":
        mf.write_text(mf.read_text()[:100])
    else:
        wf.unlink()
    with pytest.raises(FormatError):
        load_artifact(bad)


def test_not_an_artifact(tmp_path):
    with pytest.raises(FormatError, match="hwsim compress"):
        read_estimate_inputs(tmp_path)


# ---- verification (tiny random artifacts: seconds, no real weights) ------------------------------------------------
def _bench():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "robustness.py"
    spec = importlib.util.spec_from_file_location("robustness_bench_q", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    rb = _bench()
    return rb, rb.write_tiny_artifact(tmp_path_factory.mktemp("t") / "w2", "w2a8kv4")


def test_verify_artifact_accepts_what_was_written(tiny):
    from quant.artifact import verify_artifact

    _, path = tiny
    man, model, scheme = verify_artifact(path)
    assert man["version"] == 2 and len(man["manifest_sha256"]) == 64
    assert (model.name, scheme.name) == ("tiny-llama", "w2a8kv4")
    assert read_estimate_inputs(path).total_weight_bytes == man["totals"]["weight_bytes"]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m["tensors"]["blocks.1.up_proj"]["meta"].__setitem__("bits", 4), "the scheme says 2-bit"),
        (lambda m: m["tensors"]["blocks.1.up_proj"]["meta"].__setitem__("group_size", 128), "group 128"),
        (lambda m: m["tensors"]["blocks.1.up_proj"]["meta"].__setitem__("in_features", 32), "the model's up_proj"),
        (lambda m: m["tensors"]["blocks.1.up_proj"].__setitem__("nbytes", 1), "its arrays hold"),
        (lambda m: m["tensors"]["embed"]["arrays"]["fp16"].__setitem__("shape", [256, 32]), "must be one F16 array"),
        (lambda m: m["layers"][0]["act_bits"].__setitem__("q_proj", 16), "16-bit activations"),
        (lambda m: m["layers"][0].__setitem__("norms", 3), "norm bytes"),
        (lambda m: m["totals"].__setitem__("weight_bytes", 3), "totals.weight_bytes"),
        (lambda m: m["kv_stats"]["layers"].pop(), "kv_stats.layers must list 2 layers"),
        (lambda m: m["weights_file"].__setitem__("name", "../../etc/passwd"), "weights_file must be"),
        (lambda m: m["scheme"].__setitem__("weight_bits", 16), "the scheme says 16-bit"),
        (lambda m: m["model"].__setitem__("attention_bias", True), "bias-free Llama-family"),
    ],
)
def test_manifest_consistency_with_recomputed_digest(tiny, tmp_path, edit, match):
    rb, src = tiny
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    man = json.loads((bad / "manifest.json").read_text())
    edit(man)
    (bad / "manifest.json").write_text(json.dumps(rb.redigest(man)))
    with pytest.raises(FormatError, match=match):
        read_estimate_inputs(bad)
    with pytest.raises(FormatError, match=match):
        load_artifact(bad)


def test_manifest_edit_without_digest_refused(tiny, tmp_path):
    _, src = tiny
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    man = json.loads((bad / "manifest.json").read_text())
    man["calibration"]["source"] = "edited"
    (bad / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(FormatError, match="does not match its own SHA-256"):
        read_estimate_inputs(bad)


def test_overwrite_replaces_only_an_artifact(tmp_path):
    from quant.artifact import write_artifact

    out = tmp_path / "a"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(SpecError, match="not written by hwsim"):  # refused before the model is looked at
        write_artifact(out, None, None, None, kv_stats={}, calibration={}, overwrite=True)
    assert (out / "mine.txt").read_text() == "user data"
