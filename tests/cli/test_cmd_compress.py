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


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--scheme", "w1"], "unknown scheme"),
        (["--scheme", "fp16", "--model", "llama-2-7b"], "offline weights"),
        (["--scheme", "fp16", "--layers", "99"], "exceeds"),
    ],
)
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


USER_ARGS = ["--calib-windows", "2", "--calib-len", "128"]


def _text_file(tmp_path):
    from models.data import wiki_leads

    p = tmp_path / "text.txt"
    p.write_text("\n\n".join(t for _, t in wiki_leads()[300:360]), encoding="utf-8")
    return p


def test_user_checkpoint_compress_eval_estimate(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "art"
    assert (
        main(
            [
                "compress",
                "--model",
                str(tiny_checkpoint),
                "--scheme",
                "w2a8kv4",
                "--out",
                str(out),
                *USER_ARGS,
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "tiny-llama" and doc["layers"] == 2 and doc["scheme"] == "w2a8kv4"
    assert (out / "tokenizer.json").read_bytes() == (tiny_checkpoint / "tokenizer.json").read_bytes()
    man = json.loads((out / "manifest.json").read_text())
    assert man["calibration"]["tokenizer"]["bos_id"] == 1 and "tokenizer.json" in man["files"]
    text = _text_file(tmp_path)
    res = {}
    for path in ("fake", "packed"):
        assert (
            main(
                [
                    "eval",
                    "--artifact",
                    str(out),
                    "--text",
                    str(text),
                    "--seq-len",
                    "128",
                    "--max-tokens",
                    "256",
                    "--path",
                    path,
                    "--json",
                ]
            )
            == 0
        )
        res[path] = json.loads(capsys.readouterr().out)
    assert res["packed"]["tokens"] == 256 and res["packed"]["windows"] == 2 and res["packed"]["text"] == str(text)
    assert res["fake"]["perplexity"] == pytest.approx(res["packed"]["perplexity"], rel=1e-2)
    assert 1 < res["packed"]["perplexity"] < 10 * 400  # a random model: about the vocabulary size, not overflow
    assert main(["estimate", "--model", str(out), "--prompt", "512", "--gen", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)


def test_user_checkpoint_tampered_tokenizer(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "art"
    assert main(["compress", "--model", str(tiny_checkpoint), "--scheme", "fp16", "--out", str(out), *USER_ARGS]) == 0
    (out / "tokenizer.json").write_text((out / "tokenizer.json").read_text().replace('"<s>"', '"<S>"'))
    capsys.readouterr()
    assert main(["eval", "--artifact", str(out), "--text", str(_text_file(tmp_path)), "--seq-len", "64"]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.json" in err and "SHA-256" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "damage,needle",
    [
        ("shard", "shard 'model-00001-of-00002.safetensors'"),
        ("shape", "config.json implies"),
        ("arch", "model_type 'opt' is not supported"),
        ("vocab", "does not belong to this checkpoint"),
    ],
)
def test_user_checkpoint_bad_input(tiny_checkpoint, write_checkpoint, tmp_path, capsys, damage, needle):
    import shutil

    ck = tmp_path / "ck"
    if damage == "vocab":
        write_checkpoint(ck, shards=1, vocab_size=300)
    else:
        shutil.copytree(tiny_checkpoint, ck)
    cfg = json.loads((ck / "config.json").read_text())
    if damage == "shard":
        (ck / "model-00001-of-00002.safetensors").unlink()
    elif damage == "shape":
        cfg["hidden_size"] = 96
    elif damage == "arch":
        cfg["model_type"] = "opt"
    (ck / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    rc = main(["compress", "--model", str(ck), "--scheme", "w2a8kv4", "--out", str(out), *USER_ARGS])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1, err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["ck"]  # nothing written
