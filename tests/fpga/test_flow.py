"""Bitstreams with the YoWASP toolchain (pytest -m fpga): the engine builds, its report is sane, hwsim estimates
the built design, the board flow runs through amaranth-boards and is byte-for-byte reproducible, and a design
that cannot fit is refused before place and route.

Tools run with cwd = the build directory and relative paths, because YoWASP hides /tmp (pytest's tmp_path).
"""

import json
import re

import pytest

from cli import main
from fpga import BuildConfig, BuildReport, build, get_board
from fpga._boards import package_pin
from fpga._report import part_resources
from hwsim.hardware import get_hardware

pytestmark = pytest.mark.fpga

ENGINE = BuildConfig(board="lfe5u-85f", design="engine", lanes=2, head_dim=64, freq_mhz=100.0)
ECP5_PREAMBLE = bytes.fromhex("ffffbdb3")  # ECP5 bitstream preamble (Lattice FPGA-TN-02039, sysCONFIG)
LFE5U_85F_IDCODE = bytes.fromhex("41113043")  # JTAG IDCODE of LFE5U-85F (Lattice FPGA-DS-02012, table 4.x)


@pytest.fixture(scope="module")
def engine_build(tmp_path_factory):
    return build(ENGINE, tmp_path_factory.mktemp("engine"))


def test_engine_builds_to_a_bitstream_with_sane_figures(engine_build):
    rep = engine_build.report
    bit = engine_build.bitstream.read_bytes()
    assert bit[:200].find(b"LFE5U-85F") > 0 and ECP5_PREAMBLE in bit[:64] and LFE5U_85F_IDCODE in bit[:200]
    assert rep.bitstream_bytes == len(bit) > 100_000
    assert BuildReport.read(engine_build.report_path) == rep  # report.json holds the whole typed report
    avail = part_resources(get_hardware("ecp5-85f"))
    util = rep.utilization
    for key in ("lut", "ff", "dsp", "bram"):  # nextpnr's view of the part agrees with hwsim/hardware/ecp5-85f.yaml
        assert util[key].available == avail[key], key
    # the whole engine is there: the 64-entry score accumulator and D output accumulators alone need > 2k FFs
    assert 2_000 < util["ff"].used < avail["ff"] // 4
    assert 2_000 < util["lut"].used < avail["lut"] // 2
    assert util["dsp"].used <= avail["dsp"]
    assert util["bram"].used >= 3  # at least one ROM per input stream of the thin top
    assert util["TRELLIS_IO"].used == 10  # clk, rst, 8 result pins
    # clk on the board table's dedicated clock pin (G2 = X0/Y47/PIOA, tests/fpga/test_boards.py), not nextpnr's choice
    board = get_board(ENGINE.board)
    bel, _ = package_pin(board.device, board.package, board.clk_site)
    assert f"pin 'clk$tr_io' constrained to Bel '{bel}'" in (engine_build.out_dir / "pnr.log").read_text()
    ((clock, clk),) = rep.clocks.items()
    assert clk.target_mhz == 100.0 and 1.0 < clk.achieved_mhz < 400.0  # physically possible on ECP5 fabric
    assert rep.fmax_mhz == pytest.approx(clk.achieved_mhz, abs=1e-3)
    assert rep.timing_pass == clk.passed == (clk.achieved_mhz >= 100.0)
    cp = rep.critical_path
    assert cp.delay_ns == pytest.approx(1e3 / clk.achieved_mhz, rel=0.05)
    assert cp.logic_ns + cp.routing_ns == pytest.approx(cp.delay_ns, abs=1e-2)
    assert rep.synth_cells["TRELLIS_FF"] == util["ff"].used
    # the bare chip elaborates for ECP5: the softmax's multipliers (2 exp lanes + the update at lanes 2) and the
    # engine's p * sv are MULT18X18D instances with their operand and product registers on (rtl/dsp.py)
    il = (engine_build.out_dir / "top.il").read_text()
    assert il.count('parameter \\REG_OUTPUT_CLK "CLK0"') == il.count('parameter \\REG_INPUTA_CLK "CLK0"') == 4


def test_report_is_a_hardware_spec_for_estimate(engine_build, capsys):
    hw = get_hardware(engine_build.report_path)
    rep = engine_build.report
    assert hw.kind == "fpga" and hw.fpga.attention_lanes == 2
    assert hw.freq_hz == pytest.approx(rep.fmax_mhz * 1e6, rel=1e-4) and hw == rep.hardware
    assert hw.memory == get_hardware("ecp5-85f").memory
    argv = ["--model", "smollm2-135m", "--kv4", "--prompt", "2048", "--gen", "8", "--json"]
    code = main(["estimate", "--hardware", str(engine_build.report_path), *argv])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["inputs"]["hardware"]["freq_hz"] == hw.freq_hz
    assert doc["inputs"]["hardware"]["fpga"]["attention_lanes"] == 2
    # attention runs on the built lanes at the built clock: against the shipped 8-lane 100 MHz spec it takes
    # 8 * 100 MHz / (2 * Fmax) times as long while both are compute bound
    assert main(["estimate", "--hardware", "ecp5-85f", *argv]) == 0
    shipped = json.loads(capsys.readouterr().out)
    att = {o["name"]: o for o in doc["decode_ops"]}["attention"]
    att8 = {o["name"]: o for o in shipped["decode_ops"]}["attention"]
    assert att["bound"] == "compute"
    if att8["bound"] == "compute":
        assert att["time_s"] / att8["time_s"] == pytest.approx(8 * 100e6 / (2 * hw.freq_hz), rel=1e-6)
    else:
        assert att["time_s"] > att8["time_s"]


def test_board_flow_through_amaranth_boards_is_byte_reproducible(tmp_path, capsys, monkeypatch):
    # the small dot-product design keeps this test short (the engine is built above); the PLL sets the clock
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps/truncates tables at the captured stream's default width
    code = main(
        [
            "fpga",
            "build",
            "--board",
            "ulx3s-85f",
            "--design",
            "dot",
            "--lanes",
            "2",
            "--head-dim",
            "16",
            "--freq",
            "50",
            "--out",
            str(tmp_path / "ulx3s"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    flat = " ".join(out.split())
    assert "PASS" in flat and "EHXPLLL" in flat and "hwsim estimate --hardware" in flat
    assert "nextpnr-ecp5 (place and route)" in err  # progress went to stderr
    rep = json.loads((tmp_path / "ulx3s" / "report.json").read_text())
    assert rep["board"]["flow"] == "board" and rep["utilization"]["EHXPLLL"]["used"] == 1
    (clk,) = rep["clocks"].values()
    assert clk["target_mhz"] == 50.0  # nextpnr derived it from the PLL dividers and the 25 MHz oscillator
    lpf = (tmp_path / "ulx3s" / "top.lpf").read_text()
    assert 'SITE "G2"' in lpf and 'SITE "B2"' in lpf  # ULX3S oscillator and LED 0
    # same input, fresh directory: byte-identical bitstream
    again = build(BuildConfig(board="ulx3s-85f", design="dot", lanes=2, head_dim=16, freq_mhz=50.0), tmp_path / "again")
    first = (tmp_path / "ulx3s" / "top.bit").read_bytes()
    assert again.bitstream.read_bytes() == first and again.report.bitstream_sha256 == rep["bitstream_sha256"]


def test_sweep_tabulates_plots_and_reports_overflow_before_place_and_route(tmp_path, capsys):
    # dot-product array: 1 lane fits; 256 lanes need 256 multipliers and the part has 156 (router1: the option
    # reaches nextpnr; the other builds use the default router2)
    code = main(
        [
            "fpga",
            "sweep",
            "--design",
            "dot",
            "--lanes",
            "1,256",
            "--head-dim",
            "256",
            "--jobs",
            "2",
            "--out",
            str(tmp_path / "sw"),
            "--router",
            "router1",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    small, big = doc["rows"]
    assert small["fits"] and small["lanes"] == 1 and small["dsp"] == 1 and small["fmax_mhz"] > 20
    assert 0 < small["lut_pct"] < 5 and small["timing_pass"] == (small["fmax_mhz"] >= 100)
    assert not big["fits"] and re.search(
        r"does not fit LFE5U-85F-6BG381C: after synthesis it needs 256 DSP "
        r"\(MULT18X18D\) of 156; use fewer --lanes",
        big["does_not_fit"],
    )
    point = tmp_path / "sw" / "dot-d256-l1"
    assert json.loads((point / "report.json").read_text())["config"]["router"] == "router1"
    log = (point / "pnr.log").read_text()
    assert "Router1 time" in log
    assert (tmp_path / "sw" / "dot-d256-l256" / "synth_stat.json").exists()
    assert not (tmp_path / "sw" / "dot-d256-l256" / "pnr.log").exists()  # refused before place and route
    png = tmp_path / "sw" / "sweep.png"
    assert doc["png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_seeds_keep_the_best_placement(tmp_path, capsys, monkeypatch):
    # synthesis once, place and route per seed in seed-N/, the highest Fmax kept (the small dot-product design keeps
    # this short); the kept placement is the bitstream's, so a one-seed build with that seed gives the same bytes
    monkeypatch.setenv("COLUMNS", "200")
    code = main(
        [
            "fpga",
            "build",
            "--board",
            "lfe5u-85f",
            "--design",
            "dot",
            "--lanes",
            "2",
            "--head-dim",
            "16",
            "--seed",
            "3,1,2",
            "--jobs",
            "2",
            "--out",
            str(tmp_path / "ms"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    rep = json.loads((tmp_path / "ms" / "report.json").read_text())
    assert [s["seed"] for s in rep["seeds"]] == [3, 1, 2] and rep["config"]["seeds"] == [3, 1, 2]
    for s in rep["seeds"]:  # each seed's figure is its own nextpnr report's
        (clk,) = json.loads((tmp_path / "ms" / f"seed-{s['seed']}" / "nextpnr_report.json").read_text())[
            "fmax"
        ].values()
        assert s["fmax_mhz"] == pytest.approx(clk["achieved"], abs=1e-3)
        assert s["timing_pass"] == (s["fmax_mhz"] >= 100.0)
    best = max(rep["seeds"], key=lambda s: s["fmax_mhz"])
    assert rep["seed"] == best["seed"] and rep["fmax_mhz"] == best["fmax_mhz"]
    kept = tmp_path / "ms" / f"seed-{rep['seed']}"
    for name in ("top.config", "pnr.log"):
        assert (tmp_path / "ms" / name).read_bytes() == (kept / name).read_bytes()
    assert f"kept seed {rep['seed']}" in " ".join(out.split())
    assert "nextpnr-ecp5 (place and route) seed 2" in err
    one = build(
        BuildConfig(board="lfe5u-85f", design="dot", lanes=2, head_dim=16, seeds=(rep["seed"],)), tmp_path / "one"
    )
    assert one.report.bitstream_sha256 == rep["bitstream_sha256"]
    assert [s.seed for s in one.report.seeds] == [rep["seed"]] and not list((tmp_path / "one").glob("seed-*"))
