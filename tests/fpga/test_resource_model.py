"""fpga/resource_model.py: least-squares fits of sweep rows, their stated error, design totals, data collection."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from base.errors import FormatError, SpecError
from fpga.resource_model import (
    DEFAULT_DATA,
    EBR_BYTES,
    data_from_sweep_dir,
    fit_resource_model,
    load_resource_model,
    main,
    sweep_data,
)
from hwsim.hardware import get_hardware

AVAILABLE = {"lut": 83640, "ff": 83640, "dsp": 156, "bram": 208}


def _linear(lanes: int, d: int) -> dict:
    """Exactly linear resources, Fmax exactly linear in log2(lanes) and log2(head_dim)."""
    return {
        "head_dim": d,
        "lanes": lanes,
        "fits": True,
        "lut": 1000 + 300 * lanes + 20 * d,
        "ff": 800 + 250 * lanes,
        "dsp": 2 + lanes // 2,
        "bram": 4 + d // 32,
        "fmax_mhz": 120 - 5 * math.log2(lanes) - 3 * math.log2(d),
    }


def _data(rows: list[dict], part: str = "LFE5U-85F-6BG381C") -> dict:
    return sweep_data(rows, part=part, design="engine", available=AVAILABLE, provenance={"command": "test"})


GRID = [_linear(lanes, d) for d in (64, 128) for lanes in (2, 4, 8, 16)]


def test_exact_data_is_fitted_exactly_with_zero_error():
    m = fit_resource_model(_data(GRID))
    for lanes, d in ((2, 64), (16, 128), (8, 64)):
        want = _linear(lanes, d)
        got = m.engine(lanes, d)
        for k in ("lut", "ff", "dsp", "bram", "fmax_mhz"):
            assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-6)
    for r in m.error_rows():
        assert r["rms_rel_err"] == pytest.approx(0, abs=1e-9)
        assert r["loo_max_rel_err"] == pytest.approx(0, abs=1e-9)
    assert m.fits["lut"].features == ("1", "lanes", "head_dim")
    assert m.fits["fmax_mhz"].features == ("1", "log2_lanes", "log2_head_dim")
    assert m.lanes_range == (2, 16) and m.head_dim_range == (64, 128)


def test_fit_error_is_stated_when_the_data_are_not_linear():
    rows = [dict(r, lut=r["lut"] + (500 if r["lanes"] == 4 else 0)) for r in GRID]
    m = fit_resource_model(_data(rows))
    lut = m.fits["lut"]
    assert lut.max_rel_err > 0.01 and lut.loo_max_rel_err > lut.max_rel_err
    assert m.fits["ff"].max_rel_err == pytest.approx(0, abs=1e-9)


def test_terms_follow_what_the_data_vary_and_leave_one_out_needs_a_spare_point():
    one_dim = [_linear(lanes, 64) for lanes in (2, 8)]
    m = fit_resource_model(_data(one_dim))
    assert m.fits["lut"].features == ("1", "lanes")
    assert m.fits["lut"].loo_max_rel_err is None  # two points, two terms: nothing left to predict
    m1 = fit_resource_model(_data([_linear(2, 64)]))
    assert m1.fits["lut"].features == ("1",) and m1.engine(64, 64)["lut"] == _linear(2, 64)["lut"]


def test_points_that_do_not_fit_are_left_out():
    rows = GRID + [{"head_dim": 64, "lanes": 128, "fits": False, "does_not_fit": "too big"}]
    assert fit_resource_model(_data(rows)).lanes_range == (2, 16)
    with pytest.raises(FormatError, match="no sweep point that fits"):
        fit_resource_model(_data([rows[-1]]))


def test_design_totals_on_the_swept_part_and_on_another_family():
    m = fit_resource_model(_data(GRID))
    ecp5 = get_hardware("ecp5-85f")
    hw = replace(ecp5, fpga=replace(ecp5.fpga, attention_lanes=8, attention_engines=2, engine_dsps=8))
    d = m.design_totals(hw, 64)
    one = _linear(8, 64)
    assert d["lut"] == pytest.approx(2 * one["lut"]) and d["ff"] == pytest.approx(2 * one["ff"])
    assert d["dsp"] == pytest.approx(2 * one["dsp"] + 8)
    assert d["bram"] == pytest.approx(2 * one["bram"] * EBR_BYTES)
    assert d["fmax_mhz"] == pytest.approx(one["fmax_mhz"]) and d["fits_part"] and not d["extrapolated"]
    big = replace(hw, fpga=replace(hw.fpga, attention_engines=40))
    d = m.design_totals(big, 64)
    assert not d["fits_part"] and "lut" in d["over"]
    u280 = get_hardware("u280-accllm")
    d = m.design_totals(u280, 128)
    assert d["fmax_mhz"] is None  # Fmax is a property of the swept part only
    assert d["extrapolated"]  # 64 lanes, swept up to 16
    assert d["dsp"] == pytest.approx(u280.fpga.attention_engines * m.engine(64, 128)["dsp"] + u280.fpga.engine_dsps)
    with pytest.raises(SpecError, match="Fmax model was fitted on LFE5U-85F"):
        m.check_part(u280.fpga.part, "meets_clock")
    m.check_part(ecp5.fpga.part, "meets_clock")
    with pytest.raises(SpecError, match="head_dim 256, outside the swept 64..128"):
        m.check_head_dim(256, "some-model")


def test_load_errors_are_one_line_spec_or_format_errors(tmp_path):
    with pytest.raises(SpecError, match="no FPGA sweep data"):
        load_resource_model(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FormatError, match="not readable JSON"):
        load_resource_model(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(FormatError, match="not hwsim.fpga-sweep sweep data"):
        load_resource_model(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_data(GRID)))
    assert load_resource_model(good).fingerprint() == fit_resource_model(_data(GRID)).fingerprint()


def _report(lanes: int, d: int) -> dict:
    r = _linear(lanes, d)
    util = {k: {"used": r[k], "available": AVAILABLE[k], "bel": k} for k in ("lut", "ff", "dsp", "bram")}
    return {
        "config": {"lanes": lanes, "head_dim": d, "design": "engine", "router": "router2"},
        "utilization": util,
        "fmax_mhz": r["fmax_mhz"],
        "timing_pass": False,
        "seed": 1,
        "target_mhz": 100.0,
        "times_s": {"yosys": 1.0, "nextpnr": 2.0},
        "board": {"part": "LFE5U-85F-6BG381C", "name": "lfe5u-85f"},
        "toolchain": {"yosys": "test"},
    }


def test_collecting_a_sweep_directory_and_the_command_line(tmp_path, capsys):
    for lanes, d in ((2, 64), (8, 64), (2, 128)):
        p = tmp_path / "sweep" / f"engine-d{d}-l{lanes}"
        p.mkdir(parents=True)
        (p / "report.json").write_text(json.dumps(_report(lanes, d)))
    data = data_from_sweep_dir(tmp_path / "sweep", command="hwsim fpga sweep ...")
    assert [(r["head_dim"], r["lanes"]) for r in data["rows"]] == [(64, 2), (64, 8), (128, 2)]
    assert data["available"] == AVAILABLE and data["provenance"]["command"] == "hwsim fpga sweep ..."
    m = fit_resource_model(data)
    assert m.engine(8, 128)["lut"] == pytest.approx(_linear(8, 128)["lut"])
    out = tmp_path / "data.json"
    assert main([str(tmp_path / "sweep"), str(out), "cmd"]) == 0
    assert "lut" in capsys.readouterr().out and json.loads(out.read_text())["rows"]
    assert main([str(tmp_path / "empty"), str(out)]) == 2
    with pytest.raises(SpecError, match="no \\*/report.json"):
        data_from_sweep_dir(tmp_path / "empty")


def test_the_committed_sweep_data_fits_with_a_stated_error():
    m = load_resource_model()
    assert m.source == str(DEFAULT_DATA) and m.part == "LFE5U-85F-6BG381C" and m.design == "engine"
    assert m.provenance.get("command") and m.provenance.get("toolchain")
    for r in m.error_rows():
        assert math.isfinite(r["rms_rel_err"]) and math.isfinite(r["max_rel_err"])
    for row in json.loads(DEFAULT_DATA.read_text())["rows"]:
        if row["fits"]:  # the fit reproduces each swept point within its own stated largest error
            got = m.engine(row["lanes"], row["head_dim"])
            for k in ("lut", "ff", "dsp", "bram", "fmax_mhz"):
                assert abs(got[k] - row[k]) <= m.fits[k].max_rel_err * max(abs(row[k]), 1.0) + 1e-6
