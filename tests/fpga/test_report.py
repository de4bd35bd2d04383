"""fpga/_report.py: fit check from Yosys counts, nextpnr report parsing, the HardwareSpec of a build (no tools)."""

import json

import pytest

from base.errors import FormatError
from fpga._report import (
    DoesNotFit,
    critical_path,
    hardware_from_build,
    parse_nextpnr,
    part_resources,
    precheck,
    synth_counts,
    synth_estimate,
)
from hwsim.hardware import get_hardware


def _nextpnr_report(path, *, comb=513, ff=199, dsp=8, ebr=3, fmax=(("clk", 104.5, 100.0),)):
    util = {
        "TRELLIS_COMB": {"available": 83640, "used": comb},
        "TRELLIS_FF": {"available": 83640, "used": ff},
        "MULT18X18D": {"available": 156, "used": dsp},
        "DP16KD": {"available": 208, "used": ebr},
        "TRELLIS_IO": {"available": 365, "used": 10},
    }
    seg = lambda t, d, a, b, **kw: {"type": t, "delay": d, "from": {"cell": a}, "to": {"cell": b}, **kw}  # noqa: E731
    paths = [
        {
            "from": "posedge clk",
            "to": "posedge clk",
            "path": [
                seg("clk-to-q", 0.5, "ff_a", "ff_a"),
                seg("routing", 2.0, "ff_a", "lut", net="x", sources=["/share/ecp5/cells_map.v:1", "rtl/softmax.py:42"]),
                seg("logic", 1.25, "lut", "lut"),
                seg("routing", 1.0, "lut", "ff_b", net="y", sources=["rtl/softmax.py:42", "rtl/engine.py:7"]),
                seg("setup", 0.25, "ff_b", "ff_b"),
            ],
        },
        {"from": "posedge clk", "to": "<async>", "path": [seg("routing", 50.0, "a", "b")]},
    ]
    path.write_text(
        json.dumps(
            {
                "utilization": util,
                "fmax": {n: {"achieved": a, "constraint": c} for n, a, c in fmax},
                "critical_paths": paths,
            }
        )
    )
    return path


def test_part_resources_come_from_the_hardware_spec():
    hw = get_hardware("ecp5-85f")
    assert part_resources(hw) == {
        "lut": hw.fpga.luts,
        "ff": hw.fpga.ffs,
        "dsp": hw.fpga.dsps,
        "bram": hw.fpga.bram_bytes // 2304,
    }
    assert part_resources(hw)["bram"] == 208  # 479232 bytes / 18 Kb per EBR


def test_synth_estimate_counts_carry_cells_as_two_luts():
    assert synth_estimate({"LUT4": 100, "CCU2C": 7, "TRELLIS_FF": 5, "MULT18X18D": 2, "DP16KD": 1, "PFUMX": 9}) == {
        "lut": 114,
        "ff": 5,
        "dsp": 2,
        "bram": 1,
    }


def test_precheck_names_every_overflowing_resource():
    avail = {"lut": 1000, "ff": 1000, "dsp": 156, "bram": 208}
    assert precheck({"LUT4": 10, "MULT18X18D": 156}, avail, what="x", part="P")["dsp"] == 156
    with pytest.raises(DoesNotFit) as exc:
        precheck(
            {"LUT4": 990, "CCU2C": 10, "MULT18X18D": 157, "DP16KD": 3}, avail, what="engine lanes=64", part="LFE5U-85F"
        )
    msg = str(exc.value)
    assert "engine lanes=64 does not fit LFE5U-85F" in msg
    assert "1,010 LUT4 (TRELLIS_COMB) of 1,000" in msg and "157 DSP (MULT18X18D) of 156" in msg
    assert "BRAM" not in msg and "FF" not in msg and "fewer --lanes" in msg


def test_synth_counts_reads_yosys_stat(tmp_path):
    p = tmp_path / "stat.json"
    p.write_text(json.dumps({"design": {"num_cells_by_type": {"$scopeinfo": 1, "LUT4": 3, "DP16KD": 2}}}))
    assert synth_counts(p) == {"LUT4": 3, "DP16KD": 2}
    p.write_text("{}")
    with pytest.raises(FormatError, match="stat -json"):
        synth_counts(p)


def test_parse_nextpnr_and_critical_path(tmp_path):
    rep = parse_nextpnr(_nextpnr_report(tmp_path / "r.json"))
    assert rep["utilization"]["lut"] == {"used": 513, "available": 83640, "bel": "TRELLIS_COMB"}
    assert rep["utilization"]["bram"]["used"] == 3 and rep["utilization"]["TRELLIS_IO"]["used"] == 10
    assert rep["clocks"] == {"clk": {"achieved_mhz": 104.5, "target_mhz": 100.0}}
    cp = critical_path(rep["critical_paths"])
    # the async path (not register to register) is ignored; Yosys techmap sources are dropped
    assert cp["delay_ns"] == 5.0 and cp["logic_ns"] == 2.0 and cp["routing_ns"] == 3.0
    assert (cp["from_cell"], cp["to_cell"], cp["start_net"], cp["end_net"]) == ("ff_a", "ff_b", "x", "y")
    assert cp["sources"] == ["rtl/softmax.py:42", "rtl/engine.py:7"]
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(FormatError, match="nextpnr --report"):
        parse_nextpnr(tmp_path / "bad.json")


def test_hardware_from_build_scales_compute_and_keeps_the_part(tmp_path):
    base = get_hardware("ecp5-85f")
    util = parse_nextpnr(_nextpnr_report(tmp_path / "r.json"))["utilization"]
    hw = hardware_from_build(
        base, name="b", lanes=4, fmax_hz=50e6, board="lfe5u-85f", utilization=util, report_file="r.json"
    )
    assert hw.kind == "fpga" and hw.freq_hz == 50e6 and hw.fpga.attention_lanes == 4
    assert hw.memory == base.memory and hw.on_chip_bytes == base.on_chip_bytes
    assert (hw.fpga.luts, hw.fpga.dsps, hw.fpga.bram_bytes) == (base.fpga.luts, base.fpga.dsps, base.fpga.bram_bytes)
    ratio = 50e6 / base.freq_hz
    for key, rate in base.compute.peak_ops_per_s.items():
        assert hw.compute.peak_ops_per_s[key] == pytest.approx(rate * ratio)
    assert "513/83,640 TRELLIS_COMB" in hw.description
    assert "r.json" in hw.sources["freq_hz"]


def _build_report(tmp_path):
    from fpga import BuildConfig
    from fpga._report import BoardInfo, BuildFiles, BuildReport, ClockResult, CriticalPath, SeedResult, Usage

    pnr = parse_nextpnr(_nextpnr_report(tmp_path / "r.json"))
    cp = critical_path(pnr["critical_paths"])
    hw = hardware_from_build(
        get_hardware("ecp5-85f"),
        name="b",
        lanes=4,
        fmax_hz=104.5e6,
        board="lfe5u-85f",
        utilization=pnr["utilization"],
        report_file="r.json",
    )
    return BuildReport(
        config=BuildConfig(board="lfe5u-85f", lanes=4, seeds=(3, 1)),
        board=BoardInfo(
            name="lfe5u-85f", description="bare", flow="bare-chip", part="LFE5U-85F-6BG381C", hardware_spec="ecp5-85f"
        ),
        toolchain={"yosys": "0.1", "nextpnr-ecp5": "0.2"},
        seed=3,
        seeds=(SeedResult(3, 104.5, True), SeedResult(1, 99.0, False)),
        clocks={"clk": ClockResult(104.5, 100.0, True)},
        utilization={k: Usage(**u) for k, u in pnr["utilization"].items()},
        synth_cells={"LUT4": 400},
        critical_path=CriticalPath(**{**cp, "sources": tuple(cp["sources"])}),
        times_s={"yosys": 1.5},
        cpu_s={"yosys": 1.2},
        files=BuildFiles(),
        bitstream_sha256="ab" * 32,
        bitstream_bytes=123,
        hardware=hw,
    )


def test_build_report_round_trips_through_report_json(tmp_path):
    from fpga import BuildReport

    rep = _build_report(tmp_path)
    assert rep.fmax_mhz == 104.5 and rep.timing_pass and rep.target_mhz == 100.0
    path = tmp_path / "report.json"
    rep.write(path)
    doc = json.loads(path.read_text())
    # the JSON layout scripts and `hwsim estimate --hardware` read
    assert doc["tool"] == "hwsim fpga build" and doc["config"]["seeds"] == [3, 1] and doc["seed"] == 3
    assert doc["clocks"]["clk"] == {"achieved_mhz": 104.5, "target_mhz": 100.0, "pass": True}
    assert doc["utilization"]["lut"] == {"used": 513, "available": 83640, "bel": "TRELLIS_COMB"}
    assert doc["seeds"][1] == {"seed": 1, "fmax_mhz": 99.0, "timing_pass": False}
    assert doc["fmax_mhz"] == 104.5 and doc["critical_path"]["sources"] == ["rtl/softmax.py:42", "rtl/engine.py:7"]
    assert BuildReport.read(path) == rep
    assert get_hardware(path) == rep.hardware
    with pytest.raises(TypeError):
        rep.utilization["lut"] = None  # frozen all the way down


def test_build_report_rejects_other_json(tmp_path):
    from fpga import BuildReport

    path = tmp_path / "report.json"
    doc = _build_report(tmp_path).to_json()
    del doc["seeds"]
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"report.json: not a report.json of `hwsim fpga build` .*'seeds'"):
        BuildReport.read(path)
    path.write_text("{")
    with pytest.raises(FormatError, match="cannot read a build report"):
        BuildReport.read(path)
