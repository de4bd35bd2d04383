import json

import pytest

from cli import main

ARGS = ["--model", "smollm2-135m", "--layers", "1", "--calib-windows", "2", "--calib-len", "64"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "art"
    assert main(["compress", *ARGS, "--scheme", "w2a8kv4", "--out", str(out)]) == 0
    return out


def test_compress_writes_artifact(artifact, capsys):
    assert (artifact / "manifest.json").is_file() and (artifact / "weights.safetensors").is_file()
    man = json.loads((artifact / "manifest.json").read_text())
    assert man["scheme"]["name"] == "w2a8kv4" and man["model"]["num_layers"] == 1
    assert man["methods"][0]["method"] == "gptq"


def test_compress_json_and_force(artifact, capsys):
    capsys.readouterr()
    assert main(["compress", *ARGS, "--scheme", "mustafar70", "--out", str(artifact), "--force", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scheme"] == "mustafar70" and 0.25 < doc["kv_mean_density"] < 0.35
    assert main(["compress", *ARGS, "--scheme", "w2a8kv4", "--out", str(artifact), "--force"]) == 0


@pytest.mark.parametrize("extra,needle", [
    (["--scheme", "w1"], "unknown scheme"),
    (["--scheme", "fp16", "--model", "llama-2-7b"], "offline weights"),
    (["--scheme", "fp16", "--layers", "99"], "exceeds"),
])
def test_bad_input_one_line(tmp_path, capsys, extra, needle):
    rc = main(["compress", *ARGS, "--out", str(tmp_path / "x"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1


def test_existing_out_refused(artifact, capsys):
    assert main(["compress", *ARGS, "--scheme", "fp16", "--out", str(artifact)]) == 2
    assert "--force" in capsys.readouterr().err


def test_estimate_accepts_artifact(artifact, capsys):
    capsys.readouterr()
    assert main(["estimate", "--model", str(artifact), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc
