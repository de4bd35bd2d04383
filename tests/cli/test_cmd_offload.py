"""`hwsim offload` (cli/cmd_offload.py): output, plot, and one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest

from cli import main

SMALL = ["--model", "opt-13b", "--batch", "8", "--prompt", "64", "--gen", "8"]


def _run(capsys, *argv):
    code = main(["offload", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--platform", "nope"], "unknown platform 'nope'; use one of a6000-csd, a6000-ssd"),
        (["--policy", "flexgen", "--placement", "100,0,50,60,100,0"], "KV cache placement gpu 0.5 + cpu 0.6 = 1.1"),
        (["--policy", "flexgen", "--placement", "100,0,50"], "--placement '100,0,50' is malformed"),
        (["--platform", "a6000-ssd", "--policy", "instinfer"], "needs computational storage drives"),
        (["--gpu-batches", "3"], "--gpu-batches 3 does not divide --batch 8"),
        (["--policy", "leoam", "--topk", "0.5"], "--topk/--topr are InstInfer settings"),
        (["--policy", "instinfer", "--placement", "100,0,0,0,100,0"], "InstInfer keeps the KV cache in the drives"),
        (["--policy", "leoam", "--cpu-attention", "on"], "--cpu-attention is FlexGen's CPU delegation"),
        (
            ["--platform", "a6000-ssd", "--policy", "flexgen", "--placement", "100,0,100,0,100,0", "--pageable"],
            "no pageable_efficiency",
        ),
        (
            ["--platform", "a6000-ssd", "--policy", "flexgen", "--batch", "257", "--prompt", "1500", "--gen", "1"],
            "gpu needs at least",
        ),  # a prime batch: one GPU batch, whose prefill workspace alone overfills the GPU
        (
            [
                "--policy",
                "flexgen",
                "--placement",
                "100,0,100,0,100,0",
                "--batch",
                "64",
                "--prompt",
                "1024",
                "--gen",
                "1024",
            ],
            "places",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    base = ["--model", "opt-13b", "--batch", "8", "--prompt", "64", "--gen", "8"]
    code, out, err = _run(capsys, *base, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hwsim: error: ")
    assert message in err
    assert out == ""


def test_model_that_cannot_fit_anywhere(capsys):
    code, _, err = _run(capsys, "--model", "llama-2-70b", "--batch", "65536", "--prompt", "2048", "--gen", "2048")
    assert code == 2 and "holds only" in err and "lower --batch" in err


def test_json_output_has_every_figure(capsys):
    code, out, err = _run(capsys, *SMALL, "--policy", "instinfer", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["fidelity"] == "simpy" and d["requests_completed"] == 8
    for key in ("throughput_tok_s", "per_token_latency_s", "busy_s", "bytes_moved", "utilisation", "stores"):
        assert key in d
    assert d["bytes_moved"]["csd_flash_read"] > 0 and d["inputs"]["policy"]["kind"] == "instinfer"


def test_table_output_and_analytical(capsys):
    code, out, _ = _run(capsys, *SMALL, "--policy", "flexgen", "--platform", "a6000-ssd", "--fidelity", "analytical")
    assert code == 0
    assert "throughput" in out and "pcie_h2d" in out and "requests completed" in out


def test_policy_yaml_and_plot(capsys, tmp_path):
    import yaml

    (tmp_path / "p.yaml").write_text(
        yaml.safe_dump({"kind": "leoam", "gpu_batch_size": 2, "kv_gpu": 0.5, "kv_cpu": 0.5, "load_fraction": 0.25})
    )
    png = tmp_path / "cmp.png"
    small = ["--model", "opt-13b", "--batch", "2", "--prompt", "64", "--gen", "8"]
    code, out, err = _run(
        capsys,
        *small,
        "--policy-yaml",
        str(tmp_path / "p.yaml"),
        "--plot",
        str(png),
        "--sweep",
        "context",
        "--sweep-values",
        "32,64",
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["inputs"]["policy"]["load_fraction"] == 0.25
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_entry_exits_2_on_bad_input():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cli import main; sys.exit(main())",
            "offload",
            "--model",
            "opt-13b",
            "--platform",
            "nope",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "hwsim: error: unknown platform 'nope'; use one of a6000-csd, "
        "a6000-ssd, t4-flexgen or a path to a platform YAML"
    ]


def test_progress_bar_on_a_terminal(monkeypatch):
    import io

    from cli import cmd_offload
    from offload import Policy, Workload, get_platform, simulate

    class Tty(io.StringIO):
        def isatty(self):
            return True

    fake = Tty()
    monkeypatch.setattr("sys.stderr", fake)
    calls = []

    def spy(*a, **kw):
        calls.append(kw.get("progress") is not None)
        return simulate(*a, **kw)

    wl = Workload.make("opt-13b", batch=8, prompt_len=64, gen_len=64)
    res = cmd_offload._simulate_with_progress(
        spy, get_platform("a6000-csd"), wl, Policy("instinfer", gpu_batch_size=8), show=True
    )
    assert calls == [True] and res.requests_completed == 8
    assert "tokens" in fake.getvalue()


def test_placement_implies_flexgen_and_cpu_attention_is_selectable(capsys):
    code, out, err = _run(capsys, *SMALL, "--placement", "100,0,0,100,100,0", "--cpu-attention", "on", "--json")
    assert code == 0, err
    pol = json.loads(out)["inputs"]["policy"]
    assert pol["kind"] == "flexgen" and pol["cpu_attention"] is True and pol["kv_cpu"] == 1.0


def test_flexgen_search_prints_the_lp_choice(capsys):
    code, out, err = _run(
        capsys,
        *SMALL,
        "--platform",
        "a6000-ssd",
        "--policy",
        "flexgen",
        "--cpu-attention",
        "off",
        "--fidelity",
        "analytical",
    )
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("FlexGen LP"))
    assert "LP predicts" in line and "analytical gives" in line and "cpu-attention" not in line
    code, out, err = _run(capsys, *SMALL, "--platform", "a6000-ssd", "--policy", "flexgen", "--json")
    assert code == 0, err
    assert json.loads(out)["search"]["lp_throughput_tok_s"] > 0
