"""explore/space.py and explore/quality.py: the strict space file, field paths, ranges, variants and quality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from base.errors import SpecError
from explore import load_space
from explore.space import RangeSpec, apply_hardware, expand_axis, hardware_field
from hwsim.hardware import get_hardware

BASE = {
    "name": "t",
    "hardware": "a100-80gb",
    "models": ["smollm2-135m"],
    "schemes": ["fp16", "w4a16"],
    "objectives": ["decode_tokens_per_s", "ttft_s"],
    "hardware_axes": {
        "memory.bandwidth_bytes_per_s": [1.0e12, 2.0e12],
        "freq_hz": {"start": 1.0e9, "stop": 1.4e9, "step": 0.2e9},
    },
    "workload": {"batch": [1, 4], "prompt_len": [128], "gen_len": [16]},
}


def _write(tmp_path: Path, data: dict, name: str = "space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_a_space_expands_every_axis_and_numbers_its_points(tmp_path):
    sp = load_space(_write(tmp_path, BASE))
    assert [v.label for v in sp.variants] == ["fp16", "w4a16"]
    assert dict(sp.hw_axes)["freq_hz"] == (1.0e9, 1.2e9, 1.4e9)
    assert sp.n_hw == 6 and sp.n_points == 2 * 2 * 1 * 6
    for pid in (0, 7, sp.n_points - 1):
        assert sp.encode(*sp.decode(pid)) == pid
    c = sp.coordinates(sp.n_points - 1)
    assert c["scheme"] == "w4a16" and c["batch"] == 4 and c["freq_hz"] == 1.4e9
    assert sp.hw_index(sp.hw_values(5)) == 5
    assert sp.fingerprint() == load_space(_write(tmp_path, BASE, "again.yaml")).fingerprint()
    assert sp.fingerprint() != load_space(_write(tmp_path, {**BASE, "schemes": ["fp16"]}, "b.yaml")).fingerprint()


def test_the_clock_moves_the_rates_that_follow_it():
    a100 = get_hardware("a100-80gb")
    hw = apply_hardware(a100, {"freq_hz": a100.freq_hz * 2})
    assert hw.compute.vector_ops_per_s == pytest.approx(2 * a100.compute.vector_ops_per_s)
    for k, v in a100.compute.peak_ops_per_s.items():
        assert hw.compute.peak_ops_per_s[k] == pytest.approx(2 * v)
    given = apply_hardware(a100, {"freq_hz": a100.freq_hz * 2, "compute.vector_ops_per_s": 5.0e12})
    assert given.compute.vector_ops_per_s == 5.0e12
    u280 = get_hardware("u280-accllm")
    hw = apply_hardware(u280, {"freq_hz": 300e6, "fpga.attention_lanes": 16})
    assert hw.fpga.attention_lanes == 16 and hw.freq_hz == 300e6 and "attention_lanes=16" in hw.name
    assert hw.matrix_rate(8, 8)[0] == pytest.approx(u280.matrix_rate(8, 8)[0] * 300 / 225)


def test_field_paths_are_checked_against_the_spec():
    u280 = get_hardware("u280-accllm")
    assert hardware_field(u280, "fpga.attention_lanes")[0] is int
    assert hardware_field(u280, "memory.bandwidth_bytes_per_s")[0] is float
    for bad, msg in (
        ("fpga.attention_lane", "has no field 'attention_lane'"),
        ("memory", "not a numeric field"),
        ("fpga.part", "not a numeric field"),
        ("freq_hz.x", "is a number, not a section"),
        ("nosuch", "HardwareSpec has no field 'nosuch'"),
    ):
        with pytest.raises(SpecError, match=msg):
            hardware_field(u280, bad)
    with pytest.raises(SpecError, match="has no 'fpga' section"):
        hardware_field(get_hardware("a100-80gb"), "fpga.attention_lanes")
    a100 = get_hardware("a100-80gb")
    key = next(iter(a100.compute.peak_ops_per_s))
    assert hardware_field(a100, f"compute.peak_ops_per_s.{key}")[0] is float
    with pytest.raises(SpecError, match="has no key 'w1a1'"):
        hardware_field(a100, "compute.peak_ops_per_s.w1a1")


def test_engine_shapes_are_axes_by_index():
    fl = get_hardware("u280-flightllm")
    assert hardware_field(fl, "fpga.decode_engine.shape.1") == (int, {"ge": 1})
    wide = apply_hardware(fl, {"fpga.decode_engine.shape.1": 2 * fl.fpga.decode_engine.shape[1]})
    assert wide.fpga.decode_engine.shape == (fl.fpga.decode_engine.shape[0], 2 * fl.fpga.decode_engine.shape[1])
    assert wide.matrix_rate(4, 8)[0] == pytest.approx(2 * fl.matrix_rate(4, 8)[0])
    for bad, msg in (
        ("fpga.decode_engine.shape", "not a numeric field"),
        ("fpga.decode_engine.shape.9", "has 2"),
        ("fpga.decode_engine.shape.x", "name one numeric element by its index"),
    ):
        with pytest.raises(SpecError, match=msg):
            hardware_field(fl, bad)


@pytest.mark.parametrize(
    "axis, msg",
    [
        ([], "is empty"),
        (RangeSpec(start=2.0, stop=1.0, step=1.0), "stop 1 is below start 2"),
        (RangeSpec(start=1.0, stop=2.0), "exactly one of step or num"),
        (RangeSpec(start=1.0, stop=2.0, step=0.5, num=3), "exactly one of step or num"),
        (RangeSpec(start=1.0, stop=2.0, num=1), "num 1 cannot span"),
        (RangeSpec(start=0.0, stop=2.0, num=3, log=True), "log range needs start > 0"),
        ((1.0, 1.0), "given twice"),
        ((0.0,), "out of range"),
    ],
)
def test_empty_or_contradictory_ranges_are_refused(axis, msg):
    with pytest.raises(SpecError, match=msg):
        expand_axis("memory.bandwidth_bytes_per_s", axis, float, {"gt": 0})


def test_integer_fields_take_integers_and_ranges_expand_exactly():
    assert expand_axis("l", RangeSpec(start=8, stop=64, num=4, log=True), int, {"ge": 0}) == (8, 16, 32, 64)
    assert expand_axis("l", RangeSpec(start=2, stop=8, step=2), int, {"ge": 0}) == (2, 4, 6, 8)
    with pytest.raises(SpecError, match="not an integer"):
        expand_axis("l", (2.5,), int, {"ge": 0})


@pytest.mark.parametrize(
    "change, msg",
    [
        ({"hardware_axes": {"memory.bandwith_bytes_per_s": [1.0e12]}}, "no field 'bandwith_bytes_per_s'"),
        ({"hardware_axes": {"memory.efficiency": [0.5, 1.5]}}, "out of range"),
        ({"objectives": ["speed"]}, "unknown objective 'speed'"),
        ({"objectives": []}, "objectives is empty"),
        ({"schemes": []}, "schemes is empty"),
        ({"schemes": ["w9"]}, "unknown scheme 'w9'"),
        ({"models": ["nosuch-model"]}, "nosuch-model"),
        ({"fidelity": ["exact"]}, "'exact' is not allowed"),
        ({"workload": {"batch": []}}, "workload.batch is empty"),
        ({"workload": {"batch": [0]}}, "out of range"),
        ({"surprise": 1}, "unknown key 'surprise'"),
        ({"objectives": ["decode_tokens_per_s", "ppl_ratio"]}, "w4a16 on smollm2-135m has no quality data"),
        ({"objectives": ["lut"]}, "need an FPGA hardware spec"),
        ({"search": {"method": "random"}}, "'random' is not allowed"),
    ],
)
def test_bad_space_files_fail_before_any_work(tmp_path, change, msg):
    with pytest.raises(SpecError, match=msg):
        load_space(_write(tmp_path, {**BASE, **change}))


def test_hardware_axes_cannot_move_a_measured_profile(tmp_path):
    from base.specio import read_yaml
    from hwsim.hardware import HARDWARE_DIR

    data = read_yaml(HARDWARE_DIR / "a100-80gb.yaml")
    data["profile"] = "a100-profile.json"  # operators priced from measurements: axes would not change them
    (tmp_path / "measured.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="prices operators from a measured profile"):
        load_space(_write(tmp_path, {**BASE, "hardware": "measured.yaml"}))


def _eval(tmp_path: Path, name: str, ppl: float, **over) -> str:
    data = {
        "artifact": name,
        "model": "smollm2-135m",
        "layers": 30,
        "scheme": name,
        "text": "wikitext2",
        "path": "packed",
        "seq_len": 512,
        "perplexity": ppl,
        "tokens": 1000,
        "windows": 2,
        **over,
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(data))
    return f"{name}.json"


def test_quality_comes_from_stored_eval_results_relative_to_the_space_file(tmp_path):
    base = _eval(tmp_path, "fp16", 20.0)
    w4 = _eval(tmp_path, "w4a16", 21.0)
    sp = load_space(
        _write(
            tmp_path,
            {
                **BASE,
                "schemes": ["fp16", {"scheme": "w4a16", "eval": w4}],
                "baseline_eval": base,
                "objectives": ["decode_tokens_per_s", "ppl_ratio"],
            },
        )
    )
    assert [v.ppl_ratio for v in sp.variants] == [1.0, pytest.approx(1.05)]
    assert sp.variants[1].ppl == 21.0 and sp.variants[1].quality_source.endswith("w4a16.json")
    with pytest.raises(SpecError, match="no baseline_eval"):
        load_space(_write(tmp_path, {**BASE, "schemes": [{"scheme": "w4a16", "eval": w4}]}))
    other = _eval(tmp_path, "w4b", 21.0, seq_len=256)
    with pytest.raises(SpecError, match="differ in seq_len"):
        load_space(_write(tmp_path, {**BASE, "schemes": [{"scheme": "w4a16", "eval": other}], "baseline_eval": base}))
    (tmp_path / "junk.json").write_text(json.dumps({"perplexity": 3}))
    with pytest.raises(SpecError, match="not a `hwsim eval --json` result"):
        load_space(_write(tmp_path, {**BASE, "schemes": [{"scheme": "w4a16", "eval": "junk.json"}]}))


def test_a_directory_that_is_not_an_artifact_is_refused(tmp_path):
    from quant.artifact import read_estimate_inputs

    art = tmp_path / "art"
    art.mkdir()
    sp_dir = tmp_path
    with pytest.raises(Exception, match="not an artifact directory"):
        read_estimate_inputs(art)
    with pytest.raises(Exception, match="not an artifact directory"):
        load_space(_write(sp_dir, {**BASE, "schemes": ["art"]}))


def test_the_shipped_examples_load():
    root = Path(__file__).resolve().parents[2] / "examples" / "explore"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        sp = load_space(f)
        assert sp.n_points > 0
    from base.executor import LocalExecutor
    from explore import run_space

    ecp5 = load_space(root / "ecp5-engine.yaml")
    res = run_space(ecp5, LocalExecutor(), None)
    assert res.pareto and 0 < res.n_feasible < res.n_points  # the part and the predicted Fmax drop designs
    assert all(r["fits_part"] and r["meets_clock"] for r in res.pareto)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A real artifact: the first layer of SmolLM2-135M at w4a16 (round to nearest), written by `hwsim compress`."""
    from cli import main

    out = tmp_path_factory.mktemp("art") / "w4"
    assert (
        main(
            [
                "compress",
                "--model",
                "smollm2-135m",
                "--scheme",
                "w4a16",
                "--method",
                "rtn",
                "--layers",
                "1",
                "--calib-windows",
                "2",
                "--calib-len",
                "64",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    return out


def test_artifacts_bring_their_model_measured_sizes_and_quality(tmp_path, artifact, capsys):
    import shutil

    from explore.evaluate import evaluate_point
    from hwsim.estimate import estimate

    capsys.readouterr()
    bare = tmp_path / "bare"
    shutil.copytree(artifact, bare)
    evald = tmp_path / "evald"
    shutil.copytree(artifact, evald)
    base = _eval(tmp_path, "fp16", 20.0, layers=1)
    (evald / "eval.json").write_text((tmp_path / _eval(tmp_path, "w4x", 22.0, layers=1)).read_text())
    space = {
        **BASE,
        "models": [],
        "schemes": ["evald"],
        "baseline_eval": base,
        "objectives": ["decode_tokens_per_s", "ppl_ratio"],
    }
    sp = load_space(_write(tmp_path, space))
    (v,) = sp.variants
    assert v.label == "w4a16@evald" and v.ppl_ratio == pytest.approx(1.1) and v.model.num_layers == 1
    assert v.profile is not None and v.quality_source.endswith("eval.json")
    rec = evaluate_point(sp, 0)
    _, w, _, h = sp.decode(0)
    e = estimate(v.model, sp.hardware(h), v.scheme, sp.workloads[w], profile=v.profile)
    assert rec["memory_bytes"] == e.memory_bytes and rec["ppl_ratio"] == pytest.approx(1.1)
    assert rec["decode_tokens_per_s"] == pytest.approx(e.decode_tokens_per_s, rel=1e-9)
    with pytest.raises(SpecError, match="w4a16@bare on smollm2-135m has no quality data"):
        load_space(_write(tmp_path, {**space, "schemes": ["bare"]}))
    assert load_space(_write(tmp_path, {**BASE, "schemes": ["bare"]})).variants[0].ppl_ratio is None
    other = _eval(tmp_path, "w4y", 22.0, layers=30)
    with pytest.raises(SpecError, match="differ in layers"):
        load_space(_write(tmp_path, {**space, "schemes": [{"scheme": "bare", "eval": other}]}))
