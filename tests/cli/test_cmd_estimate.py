import json
import subprocess
import sys

import pytest

from cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_headline_json(capsys):
    code, out, err = run_cli(capsys, "estimate", "--model", "llama-7b", "--kv4", "--json")
    assert code == 0 and all(line.startswith("hwsim: note:") for line in err.splitlines())
    doc = json.loads(out)
    assert doc["inputs"]["scheme"]["kv_bits"] == 4 and doc["inputs"]["model"]["name"] == "llama-7b"
    assert doc["inputs"]["hardware"]["name"] == "u280-accllm"
    for key in (
        "ttft_s",
        "tpot_s",
        "decode_tokens_per_s",
        "decode_step_s",
        "memory",
        "energy",
        "prefill_ops",
        "decode_ops",
        "breakdown",
        "bandwidth_utilisation",
    ):
        assert key in doc
    assert len(doc["decode_step_s"]) == 1024 and doc["memory"]["fits"] in (True, False)


def test_breakdown_table_and_json(capsys):
    argv = ["estimate", "--model", "llama-2-7b", "--scheme", "flightllm", "--hardware", "u280-flightllm", "--gen", "8"]
    code, out, _ = run_cli(capsys, *argv, "--breakdown")
    assert code == 0 and "mechanism" in out and "bandwidth utilisation" in out
    assert "ffn" in out and "memory" in out and "sync" in out
    code, out, _ = run_cli(capsys, *argv, "--json")
    doc = json.loads(out)
    total = sum(b["seconds_per_step"] for b in doc["breakdown"])
    assert total == pytest.approx(doc["tpot_s"], rel=1e-6) and 0 < doc["bandwidth_utilisation"] < 1


def test_mismatched_sparsity_and_precision_exit_2(capsys):
    code, _, err = run_cli(capsys, "estimate", "--model", "llama-2-7b", "--scheme", "flightllm", "--gen", "4")
    assert code == 2 and "fpga.sparse_modes" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        capsys, "estimate", "--model", "llama-2-7b", "--scheme", "fp16", "--hardware", "u280-flightllm", "--gen", "4"
    )
    assert code == 2 and "lists no precision covering w16a16" in err and len(err.strip().splitlines()) == 1


def test_table_output(capsys):
    code, out, _ = run_cli(
        capsys, "estimate", "--model", "llama-2-7b", "--scheme", "accllm", "--hardware", "u280-accllm", "--gen", "16"
    )
    assert code == 0 and "TPOT" in out and "tok/s" in out


def test_flags_compose(capsys):
    code, out, _ = run_cli(
        capsys,
        "estimate",
        "--model",
        "llama-2-7b",
        "--w2",
        "--a8",
        "--kv4",
        "--prune",
        "2:4",
        "--kv-sparsity",
        "0.5",
        "--lambda",
        "4,1020",
        "--batch",
        "2",
        "--prompt",
        "64",
        "--gen",
        "8",
        "--json",
    )
    s = json.loads(out)["inputs"]["scheme"]
    assert (
        s["weight_bits"],
        s["act_bits"],
        s["kv_bits"],
        s["weight_pruning"],
        s["kv_sparsity"],
        s["attn_sink"],
        s["attn_window"],
    ) == (2, 8, 4, "2:4", 0.5, 4, 1020)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["estimate", "--model", "llama-8b"], "unknown model 'llama-8b'"),
        (["estimate", "--model", "llama-7b", "--hardware", "u281"], "unknown hardware"),
        (["estimate", "--model", "llama-7b", "--scheme", "w3"], "unknown scheme"),
        (["estimate", "--model", "llama-7b", "--prune", "4:3"], "--prune '4:3'"),
        (["estimate", "--model", "llama-7b", "--kv-sparsity", "1.5"], "--kv-sparsity 1.5"),
        (["estimate", "--model", "llama-7b", "--lambda", "4,0"], "WINDOW"),
        (["estimate", "--model", "llama-7b", "--lambda", "four"], "malformed"),
        (["estimate", "--model", "llama-7b", "--batch", "0"], "must be >= 1"),
        (["estimate", "--model", "llama-7b", "--fidelity", "exact"], "invalid choice"),
    ],
)
def test_bad_input_one_line_exit_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) if argv[-1] in ("0", "exact") else _nullcontext() as ctx:
        code = main(argv)
    if ctx is not None and hasattr(ctx, "value"):
        code = ctx.value.code
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_malformed_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "hw.yaml"
    bad.write_text("name: x\nkind: gpu\ndescription: d\nfreq_hz: fast\n")
    code, out, err = run_cli(capsys, "estimate", "--model", "llama-7b", "--hardware", str(bad))
    assert code == 2 and "freq_hz" in err and err.count("\n") == 1
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "llama", "hidden_size": 0}')
    code, out, err = run_cli(capsys, "estimate", "--model", str(cfg))
    assert code == 2 and err.count("\n") == 1


def test_listings(capsys):
    for cmd in ("models", "hardware", "schemes"):
        code, out, _ = run_cli(capsys, cmd, "--json")
        assert code == 0 and len(json.loads(out)) >= 5


def test_console_script_subprocess():
    """The installed entry point: exit status 2 and a single stderr line, no traceback."""
    r = subprocess.run(
        [sys.executable, "-c", "from cli import entry; entry()", "estimate", "--model", "nope"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
