"""Figures of a build: Yosys cell counts, the pre-place-and-route fit check, nextpnr's --report, the HardwareSpec, and
the typed :class:`BuildReport` a build writes to report.json.

nextpnr-ecp5 ``--report`` JSON (nextpnr 0.11) holds ``utilization`` {bel type: {used, available}}, ``fmax``
{clock net: {achieved, constraint}} in MHz and ``critical_paths`` [{from, to, path: [segments]}], each segment
with ``type`` (clk-to-q, routing, logic, setup), ``delay`` in ns, ``from``/``to`` cells and, for routing, the
net and its HDL ``sources`` (file:line).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from base.errors import FormatError, SpecError
from base.outputs import atomic_write_text
from base.specio import read_json, to_plain
from fpga._config import BuildConfig
from hwsim.hardware import ComputeSpec, HardwareSpec, hardware_from_mapping

__all__ = [
    "DoesNotFit",
    "RESOURCES",
    "EBR_BYTES",
    "Resource",
    "part_resources",
    "synth_counts",
    "precheck",
    "parse_nextpnr",
    "critical_path",
    "hardware_from_build",
    "Usage",
    "ClockResult",
    "SeedResult",
    "CriticalPath",
    "BoardInfo",
    "BuildFiles",
    "BuildReport",
    "REPORT_TOOL",
]

_REPO = str(Path(__file__).resolve().parents[1]) + "/"  # HDL sources are reported relative to the repo root
EBR_BYTES = 2304  # one ECP5 EBR (DP16KD) block = 18 Kb (Lattice ECP5 family data sheet FPGA-DS-02012)


class DoesNotFit(SpecError):
    """The configuration needs more of some resource than the part has (message names each one)."""


@dataclass(frozen=True)
class Resource:
    key: str  # our name in report.json
    label: str
    bel: str  # nextpnr bel type counted in --report utilization


RESOURCES = (
    Resource("lut", "LUT4 (TRELLIS_COMB)", "TRELLIS_COMB"),
    Resource("ff", "FF (TRELLIS_FF)", "TRELLIS_FF"),
    Resource("dsp", "DSP (MULT18X18D)", "MULT18X18D"),
    Resource("bram", "BRAM (DP16KD, 18 Kb)", "DP16KD"),
)


def part_resources(hw: HardwareSpec) -> dict[str, int]:
    """Available resources of the part, from its hwsim hardware spec (the one source of these numbers)."""
    if hw.fpga is None:
        raise SpecError(f"hardware {hw.name!r} has no fpga section; a board must name an FPGA hardware spec")
    return {"lut": hw.fpga.luts, "ff": hw.fpga.ffs, "dsp": hw.fpga.dsps, "bram": hw.fpga.bram_bytes // EBR_BYTES}


def synth_counts(stat_path: Path) -> dict[str, int]:
    """Cell counts by type of the top module from Yosys ``stat -json`` after synth_ecp5."""
    data = read_json(stat_path, error=FormatError)  # the hardened reader (base.specio)
    try:
        cells = data["design"]["num_cells_by_type"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{stat_path}: not a Yosys `stat -json` result ({exc}); rerun the build") from None
    return {k: int(v) for k, v in cells.items() if not k.startswith("$")}


def synth_estimate(cells: dict[str, int]) -> dict[str, int]:
    """Lower bounds of what place and route will use, from Yosys cell counts.

    TRELLIS_COMB: each LUT4 is one, each CCU2C carry cell two (its two LUT4s); nextpnr may add route-through
    LUTs on top, so this is a lower bound. FFs, multipliers and EBRs map one to one.
    """
    return {
        "lut": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
        "ff": cells.get("TRELLIS_FF", 0),
        "dsp": cells.get("MULT18X18D", 0),
        "bram": cells.get("DP16KD", 0),
    }


def precheck(cells: dict[str, int], available: dict[str, int], *, what: str, part: str) -> dict[str, int]:
    """SpecError naming every resource that synthesis already shows will not fit, before place and route."""
    need = synth_estimate(cells)
    over = [r for r in RESOURCES if need[r.key] > available[r.key]]
    if over:
        parts = ", ".join(f"{need[r.key]:,} {r.label} of {available[r.key]:,}" for r in over)
        raise DoesNotFit(
            f"{what} does not fit {part}: after synthesis it needs {parts}; use fewer --lanes (or a smaller --head-dim)"
        )
    return need


def parse_nextpnr(path: Path) -> dict:
    """nextpnr's --report as {"utilization": {key: {used, available}}, "clocks": {net: {achieved_mhz,
    target_mhz}}, "critical_paths": [...]}."""
    data = read_json(path, error=FormatError)
    try:
        util = data["utilization"]
        fmax = data["fmax"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path}: not a nextpnr --report JSON ({exc}); rerun the build") from None
    utilization = {
        r.key: {
            "used": int(util.get(r.bel, {}).get("used", 0)),
            "available": int(util.get(r.bel, {}).get("available", 0)),
            "bel": r.bel,
        }
        for r in RESOURCES
    }
    for bel in ("TRELLIS_RAMW", "TRELLIS_IO", "EHXPLLL", "DCCA"):
        if bel in util:
            utilization[bel] = {"used": int(util[bel]["used"]), "available": int(util[bel]["available"]), "bel": bel}
    clocks = {
        net: {"achieved_mhz": float(v["achieved"]), "target_mhz": float(v["constraint"])} for net, v in fmax.items()
    }
    return {"utilization": utilization, "clocks": clocks, "critical_paths": data.get("critical_paths", [])}


def critical_path(paths: list[dict]) -> dict | None:
    """The slowest register-to-register path: total delay, start/end cells, logic/routing split and the HDL
    sources (file:line) of the nets it crosses, in order."""
    best = None
    for p in paths:
        if "posedge" not in str(p.get("from", "")) or "posedge" not in str(p.get("to", "")):
            continue
        segs = p.get("path", [])
        total = sum(float(s.get("delay", 0.0)) for s in segs)
        if best is None or total > best["delay_ns"]:
            sources: list[str] = []
            for s in segs:
                for src in s.get("sources", []):
                    if src.startswith("/share/"):  # Yosys' own techmap files, not the design
                        continue
                    short = src.removeprefix(_REPO).split("site-packages/")[-1]
                    if short not in sources:
                        sources.append(short)
            nets = [s["net"] for s in segs if "net" in s]
            best = {
                "delay_ns": round(total, 3),
                "from_cell": segs[0]["from"]["cell"] if segs else "",
                "to_cell": segs[-1]["to"]["cell"] if segs else "",
                "logic_ns": round(
                    sum(float(s["delay"]) for s in segs if s.get("type") in ("logic", "clk-to-q", "setup")), 3
                ),
                "routing_ns": round(sum(float(s["delay"]) for s in segs if s.get("type") == "routing"), 3),
                "segments": len(segs),
                "start_net": nets[0] if nets else "",
                "end_net": nets[-1] if nets else "",
                "sources": sources,
            }
    return best


def hardware_from_build(
    base: HardwareSpec, *, name: str, lanes: int, fmax_hz: float, board: str, utilization: dict, report_file: str
) -> HardwareSpec:
    """The HardwareSpec of the design that was built.

    Frequency = achieved Fmax; attention lanes = the built lanes; the part's resources, its memory system and
    on-chip memory stay those of `base` (the part's shipped spec). Compute rates of `base` are quoted at
    ``base.freq_hz`` and scale linearly with the clock, so they are scaled by Fmax / base.freq_hz.
    """
    scale = fmax_hz / base.freq_hz
    compute = ComputeSpec(
        peak_ops_per_s={k: v * scale for k, v in base.compute.peak_ops_per_s.items()},
        matrix_efficiency=base.compute.matrix_efficiency,
        vector_ops_per_s=base.compute.vector_ops_per_s * scale,
    )
    fpga = dataclasses.replace(base.fpga, attention_lanes=lanes)
    used = ", ".join(f"{utilization[r.key]['used']:,}/{utilization[r.key]['available']:,} {r.bel}" for r in RESOURCES)
    sources = dict(base.sources)
    sources.update(
        {
            "freq_hz": f"achieved Fmax of the sync clock, nextpnr-ecp5 --report ({report_file})",
            "compute.peak_ops_per_s": f"{base.name} figures scaled by Fmax / {base.freq_hz / 1e6:g} MHz; "
            + base.sources.get("compute.peak_ops_per_s", ""),
            "compute.vector_ops_per_s": f"{base.name} figure scaled by Fmax / {base.freq_hz / 1e6:g} MHz; "
            + base.sources.get("compute.vector_ops_per_s", ""),
            "fpga.attention_lanes": f"lanes of the attention engine in this bitstream ({report_file})",
        }
    )
    return HardwareSpec(
        name=name,
        kind="fpga",
        description=f"{board}: attention engine with {lanes} lanes built at {fmax_hz / 1e6:.1f} MHz "
        f"(used {used}); memory and part from {base.name}",
        freq_hz=fmax_hz,
        memory=base.memory,
        compute=compute,
        on_chip_bytes=base.on_chip_bytes,
        power_w=base.power_w,
        fpga=fpga,
        sources=sources,
    )


# ---- report.json ---------------------------------------------------------------------------------------------------
REPORT_TOOL = "hwsim fpga build"


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Usage:
    """One resource after place and route: ``used`` of ``available`` cells of nextpnr bel type ``bel``."""

    used: int
    available: int
    bel: str

    @property
    def share(self) -> float:
        return self.used / self.available if self.available else 0.0


@dataclass(frozen=True)
class ClockResult:
    """One clock net: post-route Fmax and the target, in MHz; ``passed``: Fmax >= target."""

    achieved_mhz: float
    target_mhz: float
    passed: bool


@dataclass(frozen=True)
class SeedResult:
    """One place-and-route run: its placer seed, the Fmax it reached (MHz) and whether that meets the target."""

    seed: int
    fmax_mhz: float
    timing_pass: bool


@dataclass(frozen=True)
class CriticalPath:
    """The slowest register-to-register path (see :func:`critical_path`); delays in ns."""

    delay_ns: float
    from_cell: str
    to_cell: str
    logic_ns: float
    routing_ns: float
    segments: int
    start_net: str
    end_net: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class BoardInfo:
    """The target: board name and description, ``flow`` ("board" or "bare-chip"), part, hwsim spec of the part."""

    name: str
    description: str
    flow: str
    part: str
    hardware_spec: str


@dataclass(frozen=True)
class BuildFiles:
    """Build outputs, relative to the build directory."""

    bitstream: str = "top.bit"
    nextpnr_report: str = "nextpnr_report.json"
    synth_log: str = "synth.log"
    pnr_log: str = "pnr.log"


@dataclass(frozen=True)
class BuildReport:
    """Everything a build measured, as written to report.json (``to_json``/``write``, read back with ``read``).

    ``hardware`` is the HardwareSpec of the built design (achieved Fmax, built lanes), so that
    ``hwsim estimate --hardware build/report.json`` reads the file like a hardware YAML. ``seed`` is the kept seed,
    ``seeds`` every seed tried; ``times_s`` wall-clock and ``cpu_s`` CPU seconds per step.
    """

    config: BuildConfig
    board: BoardInfo
    toolchain: Mapping[str, str]
    seed: int
    seeds: tuple[SeedResult, ...]
    clocks: Mapping[str, ClockResult]
    utilization: Mapping[str, Usage]
    synth_cells: Mapping[str, int]
    critical_path: CriticalPath | None
    times_s: Mapping[str, float]
    cpu_s: Mapping[str, float]
    files: BuildFiles
    bitstream_sha256: str
    bitstream_bytes: int
    hardware: HardwareSpec

    def __post_init__(self) -> None:
        for name in ("toolchain", "clocks", "utilization", "synth_cells", "times_s", "cpu_s"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "seeds", tuple(self.seeds))

    @property
    def target_mhz(self) -> float:
        return self.config.freq_mhz

    @property
    def fmax_mhz(self) -> float:
        """The slowest clock's post-route Fmax (MHz, rounded to 3 decimals as written)."""
        return round(min(c.achieved_mhz for c in self.clocks.values()), 3)

    @property
    def timing_pass(self) -> bool:
        return all(c.passed for c in self.clocks.values())

    def to_json(self) -> dict[str, Any]:
        """The report.json document (plain JSON types)."""
        return {
            "tool": REPORT_TOOL,
            "config": dataclasses.asdict(self.config),
            "board": dataclasses.asdict(self.board),
            "toolchain": dict(self.toolchain),
            "target_mhz": self.target_mhz,
            "seed": self.seed,
            "seeds": [dataclasses.asdict(s) for s in self.seeds],
            "fmax_mhz": self.fmax_mhz,
            "timing_pass": self.timing_pass,
            "clocks": {
                net: {"achieved_mhz": c.achieved_mhz, "target_mhz": c.target_mhz, "pass": c.passed}
                for net, c in self.clocks.items()
            },
            "utilization": {k: dataclasses.asdict(u) for k, u in self.utilization.items()},
            "synth_cells": dict(self.synth_cells),
            "critical_path": (
                None
                if self.critical_path is None
                else {**dataclasses.asdict(self.critical_path), "sources": list(self.critical_path.sources)}
            ),
            "times_s": dict(self.times_s),
            "cpu_s": dict(self.cpu_s),
            "files": dataclasses.asdict(self.files),
            "bitstream_sha256": self.bitstream_sha256,
            "bitstream_bytes": self.bitstream_bytes,
            "hardware": to_plain(self.hardware),
        }

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n", flag="build report")

    @classmethod
    def from_json(cls, data: Any, where: str) -> BuildReport:
        """A report from its report.json document; FormatError naming the file and the fix when it is not one."""
        try:
            if data.get("tool") != REPORT_TOOL:
                raise KeyError("tool")
            cfg = dict(data["config"])
            cfg["seeds"] = tuple(cfg["seeds"])
            cp = data["critical_path"]
            return cls(
                config=BuildConfig(**cfg),
                board=BoardInfo(**data["board"]),
                toolchain=data["toolchain"],
                seed=int(data["seed"]),
                seeds=tuple(SeedResult(**s) for s in data["seeds"]),
                clocks={
                    net: ClockResult(achieved_mhz=c["achieved_mhz"], target_mhz=c["target_mhz"], passed=c["pass"])
                    for net, c in data["clocks"].items()
                },
                utilization={k: Usage(**u) for k, u in data["utilization"].items()},
                synth_cells=data["synth_cells"],
                critical_path=None if cp is None else CriticalPath(**{**cp, "sources": tuple(cp["sources"])}),
                times_s=data["times_s"],
                cpu_s=data["cpu_s"],
                files=BuildFiles(**data["files"]),
                bitstream_sha256=data["bitstream_sha256"],
                bitstream_bytes=int(data["bitstream_bytes"]),
                hardware=hardware_from_mapping(data["hardware"], f"{where}: hardware"),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise FormatError(
                f"{where}: not a report.json of `hwsim fpga build` ({exc.__class__.__name__}: {exc}); "
                "rebuild it with `hwsim fpga build`"
            ) from None

    @classmethod
    def read(cls, path: Path) -> BuildReport:
        try:
            data = read_json(path, error=FormatError)
        except FormatError as exc:
            why = str(exc).removeprefix(f"{path}: ")
            raise FormatError(
                f"{path}: cannot read a build report ({why}); rebuild it with `hwsim fpga build`"
            ) from None
        return cls.from_json(data, str(path))
