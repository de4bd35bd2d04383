"""Issue 41: every bad input is one line on stderr with exit status 2; nothing hangs, leaks a traceback, accepts a
corrupt artifact, leaves temporaries or deletes a user's file.

A corpus of every case the issue lists (in-process through ``cli.main``; in a subprocess with a timeout where a
regression would hang), hypothesis over argv, spec-file contents and manifest edits, and a sample of the
generated cases of benchmarks/robustness.py run on its hang-guarded workers.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from base.errors import FormatError, HwsimError, SpecError

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("robustness_bench", REPO / "benchmarks" / "robustness.py")
rb = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rb  # dataclasses look their module up
_spec.loader.exec_module(rb)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``hwsim argv`` in-process; argparse's SystemExit becomes the status."""
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def refused(argv, capsys, match: str = "") -> str:
    """Assert `argv` is refused with exactly one stderr line containing `match`; returns it."""
    rc, _, err = run_cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (argv, rc, err)
    assert len(lines) == 1 and lines[0].startswith("hwsim"), err
    assert match in lines[0], (match, lines[0])
    return lines[0]


def subprocess_refused(argv, match: str = "", timeout: float = 60) -> str:
    """The same in a subprocess with a timeout (cases that used to hang)."""
    p = subprocess.run(
        [sys.executable, "-c", "import sys, cli; sys.exit(cli.main(sys.argv[1:]))", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and match in lines[0], (argv, p.returncode, p.stderr)
    return lines[0]


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    root = tmp_path_factory.mktemp("arts")
    return {name: rb.write_tiny_artifact(root / name, name) for name in ("w2a8kv4", "accllm")}


@pytest.fixture
def art(arts, tmp_path):
    dst = tmp_path / "art"
    shutil.copytree(arts["w2a8kv4"], dst)
    return dst


def edit_manifest(art: Path, fn, digest: bool = True) -> None:
    mf = art / "manifest.json"
    man = json.loads(mf.read_text())
    fn(man)
    mf.write_text(json.dumps(rb.redigest(man) if digest else man))


# ---- hangs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["estimate", "--model", "llama-7b", "--gen", str(10**12)],
        ["estimate", "--model", "llama-7b", "--gen", str(2**63)],
        ["estimate", "--model", "llama-7b", "--prompt", str(10**12)],
        ["estimate", "--model", "llama-7b", "--prompt", "1000000"],
        ["estimate", "--model", "llama-7b", "--fidelity", "cycle", "--batch", "2147483647"],
        ["offload", "--model", "opt-6.7b", "--gen", "1000000"],
        ["offload", "--model", "opt-6.7b", "--plot", "p.png", "--sweep-values", "8,9223372036854775808"],
        ["offload", "--model", "opt-6.7b", "--plot", "p.png", "--sweep", "context", "--sweep-values", "8,100000"],
    ],
)
def test_huge_lengths_refused_before_work(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(argv, capsys)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["--model", "--hardware", "--scheme"])
@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/urandom", "dir"])
def test_special_files_as_spec_paths(flag, special, tmp_path):
    if special == "fifo":
        path = tmp_path / "spec.yaml"
        os.mkfifo(path)
    elif special == "dir":
        path = tmp_path / "d.yaml"
        path.mkdir()
    else:
        path = tmp_path / "s.yaml"
        path.symlink_to(special)
    argv = ["estimate", "--model", "llama-7b", flag, path] if flag != "--model" else ["estimate", "--model", path]
    line = subprocess_refused(argv, timeout=60)
    assert "not a regular file" in line or "is a directory" in line


def test_alias_bomb_under_a_known_key(tmp_path, capsys):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(8):
        lines.append(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]")
    text = (REPO / "models/specs/llama-7b.yaml").read_text().replace("name: llama-7b", "name: *i")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n" + text)
    t0 = time.perf_counter()
    refused(["estimate", "--model", path], capsys, "after expanding aliases")
    assert time.perf_counter() - t0 < 60


# ---- tracebacks ---------------------------------------------------------------------------------------------------
def hf_config(tmp_path: Path, **changes) -> Path:
    cfg = dict(rb._HF_CONFIG, **changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (10**400, "out of range"),
        (2**62, "out of range; it must be >= 1 and <= 10000"),
        (-4, "out of range"),
        ("4", "expected an integer"),
    ],
)
def test_config_values_out_of_range(tmp_path, capsys, value, match):
    refused(["estimate", "--model", hf_config(tmp_path, num_hidden_layers=value)], capsys, match)


def test_deep_yaml(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    refused(["estimate", "--model", path], capsys, "nested")


@pytest.mark.parametrize("command", ["estimate", "eval"])
@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["tensors"]["embed"].__setitem__("nbytes", "12"),
        lambda m: m["tensors"].__delitem__("norm"),
        lambda m: m.__setitem__("layers", {"0": 1}),
        lambda m: m["layers"][0].__delitem__("linears"),
        lambda m: m["weights_file"].__setitem__("bytes", None),
        lambda m: m.__setitem__("kv_stats", []),
        lambda m: m.__delitem__("scheme"),
        lambda m: m["tensors"]["blocks.0.q_proj"].__setitem__("meta", None),
    ],
)
def test_manifest_fields_of_wrong_type_or_missing(art, capsys, command, change):
    edit_manifest(art, change)
    argv = ["estimate", "--model", art] if command == "estimate" else ["eval", "--artifact", art]
    refused(argv, capsys, "manifest.json")


def test_output_errors(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("user data")
    monkeypatch.chdir(tmp_path)
    import models.smollm

    def no_work(*a, **k):
        raise AssertionError("the output was not checked before the work")

    monkeypatch.setattr(models.smollm, "load_weights", no_work)
    comp = ["compress", "--model", "smollm2-135m", "--scheme", "w2a8kv4"]
    refused([*comp, "--out", afile, "--force"], capsys, "is not an artifact")
    refused([*comp, "--out", afile / "art"], capsys, "is a file, not a directory")
    refused([*comp, "--out", "/dev/full/art"], capsys, "is a file, not a directory")
    refused([*comp, "--out", tmp_path / "x", "--calib-len", "1"], capsys, "--calib-len 1 is out of range")
    refused(["fpga", "build", "--design", "dot", "--lanes", "2", "--out", afile], capsys, "a file is in the way")
    refused(["fpga", "sweep", "--design", "dot", "--out", afile / "s"], capsys, "is a file, not a directory")
    refused(["offload", "--model", "opt-6.7b", "--plot", afile / "p.png"], capsys, "is a file, not a directory")
    refused(["offload", "--model", "opt-6.7b", "--plot", "/dev/null"], capsys, "file type must be one of")
    assert afile.read_text() == "user data"


def test_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    import base.outputs

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(base.outputs.os, "fsync", full)
    argv = ["offload", "--model", "opt-6.7b", "--fidelity", "analytical", "--plot", tmp_path / "sub" / "p.png"]
    refused(argv, capsys, "No space left on device; free some space or write elsewhere")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_plot_into_missing_directory_is_written(tmp_path, capsys):
    out = tmp_path / "new" / "dir" / "p.png"
    rc, stdout, _ = run_cli(["offload", "--model", "opt-6.7b", "--fidelity", "analytical", "--plot", out], capsys)
    assert rc == 0 and out.read_bytes()[:4] == b"\x89PNG" and f"plot written to {out}" in stdout


# ---- accepted corrupt or impossible input ------------------------------------------------------------------------
def _flip(art: Path, where: str) -> None:
    wf = art / "weights.safetensors"
    b = bytearray(wf.read_bytes())
    n = int.from_bytes(b[:8], "little")
    i = {"data": len(b) - 3, "header": 8 + n // 2, "length": 0}[where]
    b[i] ^= 0x10
    wf.write_bytes(bytes(b))


def _truncate_same_size(art: Path) -> None:
    wf = art / "weights.safetensors"
    b = wf.read_bytes()
    wf.write_bytes(b[: len(b) - 64] + b"\x01" * 64)


@pytest.mark.parametrize("command", ["estimate", "eval"])
@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda a: _flip(a, "data"), "SHA-256"),
        (lambda a: _flip(a, "header"), "weights.safetensors"),
        (lambda a: _flip(a, "length"), "header"),
        (_truncate_same_size, "SHA-256"),
        (
            lambda a: edit_manifest(a, lambda m: m["tensors"]["blocks.0.q_proj"].__setitem__("nbytes", -5)),
            "nbytes >= 0",
        ),
        (lambda a: edit_manifest(a, lambda m: m["scheme"].__setitem__("weight_bits", 4)), "the scheme says 4-bit"),
        (lambda a: edit_manifest(a, lambda m: m["scheme"].__setitem__("act_bits", 16)), "activations"),
        (lambda a: edit_manifest(a, lambda m: m["scheme"].__setitem__("weight_bits", 4), digest=False), "SHA-256"),
        (lambda a: edit_manifest(a, lambda m: m["layers"][1]["linears"].__setitem__("q_proj", 1)), "per-layer"),
        (lambda a: edit_manifest(a, lambda m: m["model"].__setitem__("num_layers", 3)), "tensors do not match"),
    ],
)
def test_corrupt_artifacts_refused(art, capsys, command, damage, match):
    damage(art)
    argv = ["estimate", "--model", art] if command == "estimate" else ["eval", "--artifact", art]
    refused(argv, capsys, match)


def test_swapped_weights_refused(arts, tmp_path, capsys):
    dst = tmp_path / "a"
    shutil.copytree(arts["w2a8kv4"], dst)
    shutil.copyfile(arts["accllm"] / "weights.safetensors", dst / "weights.safetensors")
    refused(["estimate", "--model", dst], capsys, "weights.safetensors")


def test_intact_artifact_accepted(art, capsys):
    rc, out, err = run_cli(["estimate", "--model", art, "--prompt", "64", "--gen", "64", "--json"], capsys)
    assert rc == 0, err
    assert json.loads(out)["inputs"]["artifact"] == str(art)


def test_eval_seq_len_beyond_context(art, capsys):
    refused(["eval", "--artifact", art, "--seq-len", "4096"], capsys, "exceeds tiny-llama's context of 512")


def test_hidden_size_not_divisible_by_heads(tmp_path, capsys):
    refused(
        ["estimate", "--model", hf_config(tmp_path, num_attention_heads=7)],
        capsys,
        "hidden_size 512 is not divisible by the 7 attention heads",
    )


@pytest.mark.parametrize(
    ("suffix", "text", "match"),
    [
        (".yaml", "name: a\nname: b\n", "duplicate key 'name' at line 2"),
        (".json", '{"model_type": "llama", "model_type": "opt"}', "duplicate key 'model_type'"),
    ],
)
def test_duplicate_keys(tmp_path, capsys, suffix, text, match):
    path = tmp_path / f"spec{suffix}"
    path.write_text(text)
    refused(["estimate", "--model", path], capsys, match)


def test_prompt_beyond_context(capsys):
    refused(
        ["estimate", "--model", "llama-7b", "--prompt", "2000", "--gen", "100"],
        capsys,
        "2,100 tokens exceeds llama-7b's context of 2,048 tokens",
    )


# ---- data loss -----------------------------------------------------------------------------------------------------
def test_fpga_build_never_deletes_user_files(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.json").write_text("my report")
    (mine / "top.bit").write_bytes(b"mine")
    refused(
        ["fpga", "build", "--design", "dot", "--lanes", "2", "--head-dim", "16", "--out", mine],
        capsys,
        "already holds files hwsim did not write",
    )
    assert (mine / "report.json").read_text() == "my report" and (mine / "top.bit").read_bytes() == b"mine"


def test_fpga_sweep_validates_every_point_first(tmp_path, capsys, monkeypatch):
    import fpga._sweep

    def no_build(*a, **k):
        raise AssertionError("a point was built before every point was validated")

    monkeypatch.setattr(fpga._sweep, "build", no_build)
    refused(["fpga", "sweep", "--lanes", "2,128", "--out", tmp_path / "s"], capsys, "128")
    assert not (tmp_path / "s").exists()


_TERM_SCRIPT = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    from cli import _Terminated
    from base.outputs import atomic_dir

    def term(signum, frame):
        raise _Terminated

    signal.signal(signal.SIGTERM, term)
    try:
        with atomic_dir(Path(sys.argv[1])) as tmp:
            (tmp / "weights.safetensors").write_bytes(b"half")
            print("ready", flush=True)
            time.sleep(60)
    except _Terminated:
        sys.exit(143)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_write_leaves_no_temporaries(tmp_path, sig):
    out = tmp_path / "art"
    with subprocess.Popen(
        [sys.executable, "-c", _TERM_SCRIPT, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO
    ) as p:
        assert p.stdout.readline().strip() == "ready"
        p.send_signal(sig)
        p.wait(30)
    left = [q.name for q in tmp_path.iterdir()]
    if sig == signal.SIGTERM:  # the CLI's handler turns SIGTERM into an exception: the temporary is removed
        assert left == []
    else:  # SIGKILL cannot be caught: the next write of the same name removes the dead process's temporary
        assert left == [f".art.tmp-{p.pid}"]
        from base.outputs import atomic_dir

        with atomic_dir(out) as tmp:
            (tmp / "x").write_text("1")
        assert sorted(q.name for q in tmp_path.iterdir()) == ["art"]


# ---- unclear output ------------------------------------------------------------------------------------------------
def test_sexagesimal_tag_and_encoding_messages(tmp_path, capsys):
    s = tmp_path / "s.yaml"
    s.write_text("name: x\nweight_pruning: 2:4\nsource: t\n")
    refused(["estimate", "--model", "llama-7b", "--scheme", s], capsys, 'quote it ("2:4")')
    s.write_text("name: !!python/object:os.system x\n")
    refused(["estimate", "--model", "llama-7b", "--scheme", s], capsys, "unsupported tag '!!python/object:os.system'")
    s.write_bytes(b"name: caf\xe9\n")
    refused(["estimate", "--model", "llama-7b", "--scheme", s], capsys, "not UTF-8 text (byte 0xe9 at offset 9)")


def test_config_json_model_name(tmp_path, capsys):
    d = tmp_path / "folder"
    d.mkdir()
    path = hf_config(d)
    rc, out, _ = run_cli(["estimate", "--model", d, "--json"], capsys)
    assert rc == 0 and json.loads(out)["inputs"]["model"]["name"] == str(path)
    path.write_text(json.dumps(dict(rb._HF_CONFIG, _name_or_path="org/my-model")))
    rc, out, _ = run_cli(["estimate", "--model", path, "--json"], capsys)
    assert json.loads(out)["inputs"]["model"]["name"] == "org/my-model"


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["estimate", "--model", "llama-7b", "--gen", "-1e3"], "argument --gen: '-1e3' is not an integer"),
        (["estimate", "--model", "llama-7b", "--lambda", "-1,5"], "--lambda -1,5: need 0 <= SINK"),
        (["estimate", "--model", "llama-7b", "--batch", "-5"], "argument --batch: -5 must be >= 1"),
        (["offload", "--model", "opt-6.7b", "--policy", "instinfer", "--topk", "-0.5"], "--topk -0.5 is out of range"),
        (["fpga", "sweep", "--lanes", "-2,4"], "give integers >= 1"),
    ],
)
def test_negative_values_name_the_flag(capsys, argv, match):
    assert "expected one argument" not in refused(argv, capsys, match)


def test_markup_is_not_eaten():
    from rich.console import Console

    from cli._common import esc

    con = Console(record=True, width=200)
    con.print(f"smollm2 {esc('[w2a8kv4]')} on wikitext2")
    assert "[w2a8kv4]" in con.export_text()


def test_energy_units_and_does_not_fit(capsys):
    rc, out, _ = run_cli(["estimate", "--model", "llama-7b", "--scheme", "fp16"], capsys)
    text = " ".join(out.split())
    assert rc == 0 and "J/token" in text and "e+0" not in text and "mJ/token" not in text
    assert "DOES NOT FIT" in text
    rc, out, _ = run_cli(["estimate", "--model", "llama-7b", "--scheme", "fp16", "--json"], capsys)
    notes = json.loads(out)["notes"]
    assert notes and notes[0].startswith("DOES NOT FIT: needs")


def test_plot_dir_wording(tmp_path, capsys):
    refused(["offload", "--model", "opt-6.7b", "--plot", tmp_path], capsys, "is a directory; give a file name")


# ---- the headline command -------------------------------------------------------------------------------------------
def test_headline_defaults_to_the_design_point(capsys):
    rc, out, err = run_cli(["estimate", "--model", "llama-7b", "--kv4", "--json"], capsys)
    d = json.loads(out)
    s = d["inputs"]["scheme"]
    assert rc == 0 and (s["weight_bits"], s["act_bits"], s["kv_bits"]) == (2, 8, 4)
    assert d["memory"]["fits"] and "u280-accllm is built for w2a8kv4" in err
    rc, out, err = run_cli(["estimate", "--model", "llama-7b", "--kv4", "--hardware", "a100-80gb", "--json"], capsys)
    assert json.loads(out)["inputs"]["scheme"]["weight_bits"] == 16 and "built for" not in err


# ---- hypothesis ----------------------------------------------------------------------------------------------------
_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
    st.sampled_from(["2:4", "4,256", "-1", "1e400", "nan", "", "--json"]),
)
_flags = st.sampled_from(
    ["--prompt", "--gen", "--batch", "--prune", "--kv-sparsity", "--lambda", "--scheme", "--hardware", "--fidelity"]
)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.lists(st.tuples(_flags, _values), max_size=4),
    switches=st.sets(st.sampled_from(["--kv4", "--w2", "--a8", "--json"])),
)
def test_fuzz_estimate_argv(capsys, pairs, switches):
    argv = ["estimate", "--model", "llama-7b"]
    for flag, value in pairs:
        argv += [flag, value]
    argv += sorted(switches)
    rc, _, err = run_cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 0 or rc == 2 and len(lines) == 1, (argv, rc, err)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=300)), kind=st.sampled_from(["yaml", "json"]))
def test_fuzz_spec_file_contents(tmp_path, content, kind):
    from hwsim.hardware import get_hardware
    from models.spec import get_model
    from quant.scheme import get_scheme

    path = tmp_path / f"spec.{kind}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    for load in (get_model, get_hardware) + ((get_scheme,) if kind == "yaml" else ()):
        try:
            load(str(path))
        except HwsimError as exc:
            assert "\n" not in str(exc).strip() or len(str(exc)) < 2000


_leaf_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_manifest_edits(arts, tmp_path_factory, data):
    from quant.artifact import read_estimate_inputs

    src = arts[data.draw(st.sampled_from(sorted(arts)))]
    man = json.loads((src / "manifest.json").read_text())
    subtree = data.draw(st.sampled_from(["tensors", "layers", "weights_file", "scheme", "model"]))
    leaves = list(rb._leaves(man[subtree]))
    path, old = data.draw(st.sampled_from(leaves))
    new = data.draw(_leaf_values)
    art = tmp_path_factory.mktemp("m") / "a"
    shutil.copytree(src, art)
    rb._set(man[subtree], path, new)
    (art / "manifest.json").write_text(json.dumps(rb.redigest(man)))
    try:
        read_estimate_inputs(art)
    except FormatError:
        return
    # accepted: only an equal value, or a field the stored tensors do not witness (names, KV and attention
    # settings, the context length, constants of the arithmetic) may pass
    assert not rb.witnessed(json.loads((src / "manifest.json").read_text()), subtree, path, old, new), (
        subtree,
        path,
        old,
        new,
    )


def test_generated_cases_of_the_benchmark(arts, tmp_path):
    """60 generated cases of benchmarks/robustness.py on its hang-guarded workers: no problem of any kind."""
    (tmp_path / "cases").mkdir()
    results = rb.run(60, 41, 1, 60.0, tmp_path / "cases", arts)
    problems = [r for r in results if r["problems"]]
    assert len(results) == 60 and not problems, problems[:3]


def test_spec_error_types_still_distinct():
    assert issubclass(SpecError, HwsimError) and issubclass(FormatError, HwsimError)
