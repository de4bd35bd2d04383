"""explore/evaluate.py and explore/_lean.py: records equal hwsim.estimate's figures; resources and constraints."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from explore_sweep import AVAILABLE, sweep_file

from explore import load_space
from explore._lean import LeanEvaluator, lean_ops, lean_times
from explore.evaluate import evaluate_job, evaluate_point
from hwsim.estimate import estimate


def space_file(tmp_path: Path, **over) -> Path:
    data = {
        "name": "gpu",
        "hardware": "a100-80gb",
        "models": ["smollm2-135m"],
        "schemes": ["fp16", "w4a16", "accllm", "mustafar70"],
        "objectives": ["decode_tokens_per_s", "ttft_s", "tokens_per_j"],
        "hardware_axes": {"memory.bandwidth_bytes_per_s": [0.5e12, 1.0e12, 2.0e12], "freq_hz": [1.0e9, 1.4e9]},
        "workload": {"batch": [1, 8], "prompt_len": [100, 700], "gen_len": [17]},
    }
    data.update(over)
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_every_record_equals_the_full_estimate(tmp_path):
    sp = load_space(space_file(tmp_path))
    fp = sp.fingerprint()
    recs = evaluate_job((fp, sp, list(range(sp.n_points))))
    assert [r["id"] for r in recs] == list(range(sp.n_points))
    for r in recs:
        v, w, _, h = sp.decode(r["id"])
        var = sp.variants[v]
        e = estimate(var.model, sp.hardware(h), var.scheme, sp.workloads[w])
        assert r["ttft_s"] == pytest.approx(e.ttft_s, rel=1e-9)
        assert r["decode_tokens_per_s"] == pytest.approx(e.decode_tokens_per_s, rel=1e-9)
        assert r["tokens_per_j"] == pytest.approx(e.tokens_per_j, rel=1e-9)
        assert r["memory_bytes"] == e.memory_bytes and r["fits_memory"] == e.fits
        assert r["feasible"] == e.fits and r["scheme"] == var.label


def test_the_lean_path_is_checked_and_a_disagreeing_group_falls_back(tmp_path, monkeypatch):
    sp = load_space(space_file(tmp_path))
    var, wl = sp.variants[2], sp.workloads[3]
    hw0, hw1 = sp.hardware(0), sp.hardware(5)
    ops = lean_ops(var.model, hw0, var.scheme, wl)
    e1 = estimate(var.model, hw1, var.scheme, wl)
    ttft, total = lean_times(ops, hw1)  # operators built on one hardware, priced on another
    assert ttft == pytest.approx(e1.ttft_s, rel=1e-12) and total == pytest.approx(e1.decode_total_s, rel=1e-12)
    ev = LeanEvaluator()
    import explore._lean as lean

    monkeypatch.setattr(lean, "lean_times", lambda ops, hw: (1.0, 1.0))  # a lean path that disagrees
    est, t, _, _ = ev.times(("k",), var.model, hw0, var.scheme, wl, None)
    assert est is not None and t == est.ttft_s and ev.groups[("k",)]["ok"] is False
    est, t, _, _ = ev.times(("k",), var.model, hw1, var.scheme, wl, None)
    assert est is not None and t == pytest.approx(e1.ttft_s)  # the whole group goes through estimate


def test_a_combination_the_spec_forbids_is_an_infeasible_record(tmp_path):
    sweep = sweep_file(tmp_path)
    sp = load_space(
        space_file(
            tmp_path,
            hardware="u280-accllm",
            models=["llama-2-7b"],
            schemes=["w2a8kv4"],
            hardware_axes={"fpga.engine_dsps": [4096, 9000, 20000]},
            objectives=["decode_tokens_per_s", "lut"],
            resource_model=str(sweep),
            workload={"batch": [1], "prompt_len": [64], "gen_len": [8]},
        )
    )
    recs = [evaluate_point(sp, pid) for pid in range(sp.n_points)]
    assert recs[0]["feasible"] and "error" not in recs[0]
    bad = recs[2]
    assert not bad["feasible"] and "engine_dsps=20000" in bad["error"] and "exceeds" in bad["error"]
    assert bad["decode_tokens_per_s"] is None


def test_resources_fit_part_and_clock_come_from_the_resource_model(tmp_path):
    sweep = sweep_file(tmp_path)
    sp = load_space(
        space_file(
            tmp_path,
            hardware="ecp5-85f",
            models=["smollm2-135m"],
            schemes=["w2a8kv4"],
            hardware_axes={
                "fpga.attention_lanes": [2, 8, 16],
                "fpga.attention_engines": [1, 4],
                "freq_hz": [60e6, 100e6],
            },
            objectives=["decode_tokens_per_s", "lut"],
            resource_model=str(sweep),
            constraints={"fits_memory": False, "fits_part": True, "meets_clock": True},
            workload={"batch": [1], "prompt_len": [64], "gen_len": [8]},
        )
    )
    m = sp.resource_model
    for pid in range(sp.n_points):
        r = evaluate_point(sp, pid)
        lanes, engines, f = r["fpga.attention_lanes"], r["fpga.attention_engines"], r["freq_hz"]
        one = m.engine(lanes, 64)
        assert r["lut"] == pytest.approx(engines * one["lut"])
        assert r["dsp"] == pytest.approx(engines * one["dsp"] + 8)  # + the linear engine's engine_dsps
        fits = engines * one["lut"] <= AVAILABLE["lut"] and engines * one["ff"] <= AVAILABLE["ff"]
        assert r["fits_part"] == fits
        assert r["meets_clock"] == (one["fmax_mhz"] * 1e6 >= f)
        assert r["feasible"] == (fits and r["meets_clock"])
