"""`hwsim explore`: table and JSON output, files in --out, and one-line exit-2 errors before any work."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from cli import main

SPACE = {
    "name": "cli",
    "hardware": "a100-80gb",
    "models": ["smollm2-135m"],
    "schemes": ["fp16", "w4a16"],
    "objectives": ["decode_tokens_per_s", "memory_bytes"],
    "hardware_axes": {"memory.bandwidth_bytes_per_s": [1.0e12, 2.0e12], "freq_hz": [1.0e9, 1.4e9]},
    "workload": {"batch": [1, 4], "prompt_len": [64], "gen_len": [8]},
}


def _space(tmp_path: Path, **over) -> str:
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump({**SPACE, **over}))
    return str(p)


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_and_files(tmp_path, capsys):
    code, out, err = run_cli(capsys, "explore", _space(tmp_path), "--out", str(tmp_path / "o"), "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["n_points"] == doc["space_points"] == 16 and doc["method"] == "exhaustive"
    assert doc["pareto"] and all(r["feasible"] for r in doc["pareto"])
    for k in ("points", "pareto", "plot"):
        assert Path(doc["files"][k]).is_file()
    code, out, _ = run_cli(capsys, "explore", _space(tmp_path), "--out", str(tmp_path / "o"), "--json")
    assert json.loads(out)["n_resumed"] == 16 and json.loads(out)["n_evaluated"] == 0


def test_table_output(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "explore", _space(tmp_path), "--out", str(tmp_path / "o"), "--workers", "1")
    assert code == 0 and "Pareto front" in out and "points evaluated" in out and "pareto.png" in out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "change, extra, msg",
    [
        ({"hardware_axes": {"memory.bandwith": [1]}}, [], "memory has no field 'bandwith'"),
        ({"hardware_axes": {"fpga.attention_lanes": [1]}}, [], "a100-80gb has no 'fpga' section"),
        ({"hardware_axes": {"memory.bandwidth_bytes_per_s": []}}, [], "is empty"),
        ({"hardware_axes": {"freq_hz": {"start": 2.0e9, "stop": 1.0e9, "step": 1.0e8}}}, [], "below start"),
        ({"objectives": ["decode_tokens_per_s", "ppl_ratio"]}, [], "has no quality data"),
        ({}, ["--ray-address", "127.0.0.1:1"], "--ray-address needs --executor ray"),
        ({}, ["--executor", "ray", "--ray-address", "127.0.0.1:{port}"], "cannot reach the Ray cluster"),
        ({}, ["--executor", "ray", "--ray-address", "nonsense"], "is not host:port"),
    ],
)
def test_bad_input_is_one_line_exit_2_before_any_work(tmp_path, capsys, change, extra, msg):
    extra = [x.format(port=_closed_port()) for x in extra]
    out_dir = tmp_path / "o"
    code, out, err = run_cli(capsys, "explore", _space(tmp_path, **change), "--out", str(out_dir), *extra)
    assert code == 2 and out == "" and msg in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out_dir.exists()  # nothing was started


def test_a_missing_space_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "explore", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in err and err.count("\n") == 1
