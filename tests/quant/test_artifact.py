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


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest_shape", "manifest_key", "manifest_json",
                                    "missing_weights"])
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
