"""explore/run.py: exhaustive and NSGA-II runs, the output directory, resuming a killed run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from explore_sweep import sweep_file

from base.errors import SpecError
from base.executor import LocalExecutor
from explore import compare_fronts, load_space, pareto_front, run_space

SPACE = {
    "name": "run",
    "hardware": "a100-80gb",
    "models": ["smollm2-135m"],
    "schemes": ["fp16", "w4a16", "accllm"],
    "objectives": ["decode_tokens_per_s", "ttft_s", "memory_bytes"],
    "hardware_axes": {
        "memory.bandwidth_bytes_per_s": {"start": 0.2e12, "stop": 2.0e12, "num": 6},
        "freq_hz": [0.8e9, 1.0e9, 1.4e9],
    },
    "workload": {"batch": [1, 16], "prompt_len": [256], "gen_len": [8]},
    "search": {"chunk": 7},
}


def same_records(a: list[dict], b: list[dict]) -> bool:
    """Equal records, floats to 1e-9 (a point's figures come from the lean path or the full estimate, which add the
    same terms in a different order)."""
    return len(a) == len(b) and all(
        x.keys() == y.keys()
        and all(x[k] == pytest.approx(y[k], rel=1e-9) if isinstance(x[k], float) else x[k] == y[k] for k in x)
        for x, y in zip(a, b)
    )


def _space(tmp_path: Path, **over) -> object:
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump({**SPACE, **over}))
    return load_space(p)


def test_exhaustive_run_writes_every_point_the_front_and_a_plot(tmp_path):
    sp = _space(tmp_path)
    seen = []
    res = run_space(sp, LocalExecutor(), tmp_path / "out", progress=lambda d, t: seen.append((d, t)))
    assert res.method == "exhaustive" and res.n_points == sp.n_points == 108 and res.n_evaluated == 108
    lines = (tmp_path / "out" / "points.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == list(range(108))
    summary = json.loads((tmp_path / "out" / "pareto.json").read_text())
    assert summary["n_points"] == 108 and summary["pareto"] == res.pareto
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen[-1] == (108, 108)
    assert {r["id"] for r in res.pareto} == {r["id"] for r in pareto_front(res.records, tuple(SPACE["objectives"]))}
    assert all(r["feasible"] for r in res.pareto)


def test_a_killed_run_resumes_from_its_output(tmp_path):
    sp = _space(tmp_path)
    out = tmp_path / "out"
    full = run_space(sp, LocalExecutor(), out)
    pts = out / "points.jsonl"
    lines = pts.read_text().splitlines(keepends=True)
    pts.write_text("".join(lines[:40]) + lines[40][:17])  # killed mid-write: 40 whole records and a torn one
    again = run_space(sp, LocalExecutor(), out)
    assert again.n_resumed == 40 and again.n_evaluated == 68
    assert same_records(again.records, full.records) and same_records(again.pareto, full.pareto)
    ids = [json.loads(x)["id"] for x in pts.read_text().splitlines()]
    assert sorted(ids) == list(range(108))
    done = run_space(sp, LocalExecutor(), out)
    assert done.n_evaluated == 0 and done.n_resumed == 108
    other = _space(tmp_path, schemes=["fp16"])
    with pytest.raises(SpecError, match="holds a run of a different space"):
        run_space(other, LocalExecutor(), out)


def test_process_workers_give_the_same_records(tmp_path):
    sp = _space(tmp_path)
    one = run_space(sp, LocalExecutor(), None)
    with LocalExecutor(2) as ex:
        two = run_space(sp, ex, None)
    assert same_records(two.records, one.records) and two.workers == 2


def _fpga_space(tmp_path: Path, **search) -> object:
    """U280 lanes x engines x bandwidth x scheme, speed against LUTs (synthetic sweep data: linear resources)."""
    sweep_file(tmp_path)
    return _space(
        tmp_path,
        hardware="u280-accllm",
        models=["llama-2-7b"],
        schemes=["w4a16", "w2a8kv4", "accllm"],
        hardware_axes={
            "fpga.attention_lanes": [2, 4, 8, 16],
            "fpga.attention_engines": [1, 2, 4, 8, 16, 32],
            "memory.bandwidth_bytes_per_s": [230e9, 460e9],
        },
        objectives=["decode_tokens_per_s", "lut"],
        resource_model="sweep.json",
        workload={"batch": [1], "prompt_len": [2048], "gen_len": [64]},
        search=search,
    )


def test_nsga2_against_brute_force(tmp_path):
    brute = run_space(_fpga_space(tmp_path), LocalExecutor(), None)
    sp = _fpga_space(tmp_path, method="nsga2", trials=80, population=16, seed=1)
    res = run_space(sp, LocalExecutor(), tmp_path / "nsga")
    assert res.method == "nsga2" and res.n_points <= 80 and brute.n_points == 144
    cmp = compare_fronts(res.pareto, brute.pareto, ("decode_tokens_per_s", "lut"))
    assert cmp["recall"] >= 0.75


def test_nsga2_on_part_of_the_space_returns_non_dominated_evaluated_points(tmp_path):
    sp = _space(tmp_path, search={"method": "nsga2", "trials": 40, "population": 10, "seed": 0})
    res = run_space(sp, LocalExecutor(), None)
    assert 10 <= res.n_points <= 40
    assert {r["id"] for r in res.pareto} == {r["id"] for r in pareto_front(res.records, tuple(SPACE["objectives"]))}
    again = run_space(sp, LocalExecutor(), None)
    assert [r["id"] for r in again.records] == [r["id"] for r in res.records]  # seeded: reproducible
