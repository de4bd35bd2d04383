"""Resources and Fmax of the rtl/ attention engine as functions of lanes and head_dim, fitted to `hwsim fpga sweep`.

The data are sweep rows (place-and-route reports of the bare LFE5U-85F: LUT4 = TRELLIS_COMB, FF = TRELLIS_FF,
DSP = MULT18X18D, BRAM = DP16KD blocks of 18 Kb, and the achieved Fmax), committed as JSON with their provenance
(benchmarks/data/fpga_sweep_engine.json; ``sweep_data`` writes that form). Each resource is fitted by least squares
as ``c0 + c1 x lanes + c2 x head_dim`` (a term only where the data vary it), Fmax as
``f0 + f1 x log2(lanes) + f2 x log2(head_dim)``. The fit error is stated per figure: the RMS and largest relative
residual on the data, and the largest relative error of leave-one-out predictions (each point predicted by a fit
to the others; None with too few points). Predictions outside the swept lanes/head_dim are extrapolations and are
flagged as such.

A design with ``fpga.attention_engines`` copies of an engine of ``fpga.attention_lanes`` lanes uses that many
times one engine, plus the linear engine's ``fpga.engine_dsps`` DSPs (its LUTs and FFs are not modelled). On the
swept part the comparison is primitive for primitive. On another FPGA family the ECP5 primitives are mapped one to
one, a conservative rule: a 6-input LUT (AMD UG574) implements any LUT4 function, FFs are FFs, a DSP48E2's 27x18
multiplier (AMD UG579) covers an 18x18 MULT18X18D, and an 18 Kb DP16KD is 2,304 bytes of ``fpga.bram_bytes``.
Fmax is a property of the swept part only: `check_part` refuses a clock check on another part.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.errors import FormatError, SpecError

__all__ = [
    "ResourceModel",
    "Fit",
    "fit_resource_model",
    "load_resource_model",
    "sweep_data",
    "data_from_sweep_dir",
    "DEFAULT_DATA",
    "EBR_BYTES",
    "FIGURES",
]

EBR_BYTES = 2304  # one ECP5 DP16KD (18 Kb) block in bytes (Lattice FPGA-DS-02012); fpga._report.EBR_BYTES
FIGURES = ("lut", "ff", "dsp", "bram", "fmax_mhz")
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "fpga_sweep_engine.json"
DATA_FORMAT = "hwsim.fpga-sweep"


@dataclass(frozen=True)
class Fit:
    """One figure's least-squares fit: ``value = sum(coef[i] * feature_i)`` over `features`."""

    figure: str
    features: tuple[str, ...]  # "1", "lanes", "head_dim", "log2_lanes", "log2_head_dim"
    coef: tuple[float, ...]
    n_points: int
    rms_rel_err: float
    max_rel_err: float
    loo_max_rel_err: float | None  # leave-one-out; None when the fit has no spare point

    def __call__(self, lanes: float, head_dim: float) -> float:
        return sum(c * _feature(f, lanes, head_dim) for c, f in zip(self.coef, self.features))


def _feature(name: str, lanes: float, head_dim: float) -> float:
    return {
        "1": 1.0,
        "lanes": float(lanes),
        "head_dim": float(head_dim),
        "log2_lanes": math.log2(lanes),
        "log2_head_dim": math.log2(head_dim),
    }[name]


def _lstsq(rows: list[tuple[float, float, float]], features: tuple[str, ...]) -> tuple[float, ...]:
    import numpy as np

    a = np.array([[_feature(f, lanes, d) for f in features] for lanes, d, _ in rows])
    y = np.array([v for _, _, v in rows])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return tuple(float(c) for c in coef)


def _fit(figure: str, rows: list[tuple[float, float, float]]) -> Fit:
    log = figure == "fmax_mhz"
    feats = ["1"]
    if len({r[0] for r in rows}) > 1:
        feats.append("log2_lanes" if log else "lanes")
    if len({r[1] for r in rows}) > 1:
        feats.append("log2_head_dim" if log else "head_dim")
    features = tuple(feats)
    coef = _lstsq(rows, features)
    fit = Fit(figure, features, coef, len(rows), 0.0, 0.0, None)
    rel = [abs(fit(lanes, d) - v) / max(abs(v), 1.0) for lanes, d, v in rows]
    loo = None
    if len(rows) > len(features):
        errs = []
        for i in range(len(rows)):
            rest = rows[:i] + rows[i + 1 :]
            sub = Fit(figure, features, _lstsq(rest, features), len(rest), 0.0, 0.0, None)
            lanes, d, v = rows[i]
            errs.append(abs(sub(lanes, d) - v) / max(abs(v), 1.0))
        loo = max(errs)
    return Fit(figure, features, coef, len(rows), math.sqrt(sum(e * e for e in rel) / len(rel)), max(rel), loo)


@dataclass(frozen=True)
class ResourceModel:
    """Fitted figures of one design on one part (see the module docstring)."""

    part: str
    design: str
    available: dict[str, int]  # the swept part's resources (lut, ff, dsp, bram blocks)
    fits: dict[str, Fit]
    lanes_range: tuple[int, int]
    head_dim_range: tuple[int, int]
    source: str
    provenance: dict = field(default_factory=dict)

    def engine(self, lanes: int, head_dim: int) -> dict[str, float]:
        """One engine on the swept part: lut, ff, dsp, bram (blocks), fmax_mhz; resources at least 0."""
        out = {k: self.fits[k](lanes, head_dim) for k in FIGURES}
        for k in ("lut", "ff", "dsp", "bram"):
            out[k] = max(out[k], 0.0)
        return out

    def extrapolated(self, lanes: int, head_dim: int) -> bool:
        return not (
            self.lanes_range[0] <= lanes <= self.lanes_range[1]
            and self.head_dim_range[0] <= head_dim <= self.head_dim_range[1]
        )

    def design_totals(self, hw: Any, head_dim: int) -> dict[str, Any]:
        """Resources of `hw`'s design (attention engines + the linear engine's DSPs) in the part's units (bram in
        bytes), whether it fits `hw`'s part, and the engine's predicted Fmax (None on another part)."""
        f = hw.fpga
        if f is None:
            raise SpecError(f"hardware {hw.name!r} has no fpga section; FPGA resources need an FPGA spec")
        n = f.attention_engines if f.attention_lanes else 0
        one = self.engine(max(f.attention_lanes, 1), head_dim) if n else {k: 0.0 for k in FIGURES}
        need = {
            "lut": n * one["lut"],
            "ff": n * one["ff"],
            "dsp": n * one["dsp"] + f.engine_dsps,
            "bram": n * one["bram"] * EBR_BYTES,
        }
        have = {"lut": f.luts, "ff": f.ffs, "dsp": f.dsps, "bram": f.bram_bytes}
        over = [k for k in need if need[k] > have[k]]
        same_part = f.part == self.part
        return {
            "lut": need["lut"],
            "ff": need["ff"],
            "dsp": need["dsp"],
            "bram": need["bram"],
            "fits_part": not over,
            "over": over,
            "fmax_mhz": one["fmax_mhz"] if (same_part and n) else None,
            "extrapolated": bool(n) and self.extrapolated(f.attention_lanes, head_dim),
        }

    def check_part(self, part: str, what: str) -> None:
        if part != self.part:
            raise SpecError(
                f"{what}: the Fmax model was fitted on {self.part} ({self.source}); {part} has no Fmax "
                "data; drop meets_clock or give resource_model: a sweep of that part"
            )

    def check_head_dim(self, head_dim: int, model: str) -> None:
        lo, hi = self.head_dim_range
        if not lo <= head_dim <= hi:
            raise SpecError(
                f"{model} has head_dim {head_dim}, outside the swept {lo}..{hi} of {self.source}; sweep "
                f"that head_dim with `hwsim fpga sweep --head-dim {head_dim}`"
            )

    def fingerprint(self) -> str:
        data = json.dumps({k: (f.features, f.coef) for k, f in self.fits.items()}, sort_keys=True)
        return hashlib.sha256(f"{self.part}|{self.design}|{data}".encode()).hexdigest()[:16]

    def error_rows(self) -> list[dict]:
        """The fit error per figure, for tables."""
        return [
            {
                "figure": k,
                "features": " + ".join(f.features),
                "points": f.n_points,
                "rms_rel_err": f.rms_rel_err,
                "max_rel_err": f.max_rel_err,
                "loo_max_rel_err": f.loo_max_rel_err,
            }
            for k, f in self.fits.items()
        ]


def sweep_data(rows: list[dict], *, part: str, design: str, available: dict[str, int], provenance: dict) -> dict:
    """The committed JSON form of a sweep: `rows` as fpga.sweep_rows writes them, the part and its resources, and
    provenance (command, date, machine, toolchain, RTL commit)."""
    return {
        "format": DATA_FORMAT,
        "version": 1,
        "part": part,
        "design": design,
        "available": available,
        "provenance": provenance,
        "rows": rows,
    }


def fit_resource_model(data: dict, source: str = "sweep data") -> ResourceModel:
    """Fit every figure to the fitting rows of `data` (the form `sweep_data` writes); FormatError when malformed."""
    try:
        if data.get("format") != DATA_FORMAT:
            raise KeyError("format")
        rows = [r for r in data["rows"] if r["fits"]]
        part, design = str(data["part"]), str(data["design"])
        available = {k: int(data["available"][k]) for k in ("lut", "ff", "dsp", "bram")}
        pts = {k: [(int(r["lanes"]), int(r["head_dim"]), float(r[k])) for r in rows] for k in FIGURES}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FormatError(
            f"{source}: not {DATA_FORMAT} sweep data (missing or bad {exc}); write it with "
            "`python -m fpga.resource_model SWEEP_DIR OUT.json`"
        ) from None
    if not rows:
        raise FormatError(f"{source}: no sweep point that fits the part; the resource model needs at least one")
    lanes = [r[0] for r in pts["lut"]]
    dims = [r[1] for r in pts["lut"]]
    return ResourceModel(
        part=part,
        design=design,
        available=available,
        fits={k: _fit(k, v) for k, v in pts.items()},
        lanes_range=(min(lanes), max(lanes)),
        head_dim_range=(min(dims), max(dims)),
        source=source,
        provenance=dict(data.get("provenance", {})),
    )


def load_resource_model(path: str | Path | None = None) -> ResourceModel:
    """The model fitted to the sweep data at `path` (default: the committed sweep of the engine)."""
    path = Path(path) if path is not None else DEFAULT_DATA
    if not path.is_file():
        raise SpecError(
            f"{path}: no FPGA sweep data; run `hwsim fpga sweep --out DIR`, collect it with "
            "`python -m fpga.resource_model DIR OUT.json`, or give resource_model: PATH"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: not readable JSON ({exc}); restore the sweep data") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object of sweep data")
    return fit_resource_model(data, source=str(path))


def data_from_sweep_dir(root: str | Path, command: str = "") -> dict:
    """Sweep data (the `sweep_data` form) collected from the build reports under `root` (each point's
    ``<design>-d<D>-l<L>/report.json`` of `hwsim fpga sweep --out root`), with the reports' own provenance."""
    import datetime
    import platform

    from fpga._report import RESOURCES

    root = Path(root)
    reports = sorted(root.glob("*/report.json"))
    if not reports:
        raise SpecError(f"{root}: no */report.json; run `hwsim fpga sweep --out {root}` first")
    rows, parts, designs, tools, boards = [], set(), set(), set(), set()
    available: dict[str, int] = {}
    for rp in reports:
        try:
            rep = json.loads(rp.read_text(encoding="utf-8"))
            cfg, util = rep["config"], rep["utilization"]
            row = {"head_dim": int(cfg["head_dim"]), "lanes": int(cfg["lanes"]), "fits": True}
            for r in RESOURCES:
                row[r.key] = int(util[r.key]["used"])
                available[r.key] = int(util[r.key]["available"])
            row.update(
                fmax_mhz=float(rep["fmax_mhz"]),
                timing_pass=bool(rep["timing_pass"]),
                seed=int(rep["seed"]),
                target_mhz=float(rep["target_mhz"]),
                router=str(cfg.get("router", "")),
                build_s=round(sum(rep["times_s"].values()), 1),
            )
            parts.add(rep["board"]["part"])
            boards.add(rep["board"]["name"])
            designs.add(cfg["design"])
            tools.add(json.dumps(rep.get("toolchain", {}), sort_keys=True))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"{rp}: not a `hwsim fpga build` report ({exc})") from None
        rows.append(row)
    if len(parts) != 1 or len(designs) != 1:
        raise SpecError(
            f"{root}: reports of several parts/designs ({sorted(parts)}, {sorted(designs)}); one sweep per data file"
        )
    rows.sort(key=lambda r: (r["head_dim"], r["lanes"]))
    prov = {
        "command": command,
        "collected": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores",
        "boards": sorted(boards),
        "toolchain": [json.loads(t) for t in sorted(tools)],
    }
    return sweep_data(rows, part=parts.pop(), design=designs.pop(), available=available, provenance=prov)


def main(argv: list[str] | None = None) -> int:
    """``python -m fpga.resource_model SWEEP_DIR OUT.json``: collect a sweep's reports and print the fit."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        sys.stderr.write("usage: python -m fpga.resource_model SWEEP_DIR OUT.json [COMMAND-THAT-MADE-IT]\n")
        return 2
    try:
        data = data_from_sweep_dir(args[0], command=args[2] if len(args) > 2 else "")
        Path(args[1]).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        model = fit_resource_model(data, source=args[1])
    except (SpecError, FormatError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    for r in model.error_rows():
        loo = "n/a" if r["loo_max_rel_err"] is None else f"{r['loo_max_rel_err']:.1%}"
        print(
            f"{r['figure']:>9}: {r['features']:<28} {r['points']} points, RMS {r['rms_rel_err']:.1%}, "
            f"max {r['max_rel_err']:.1%}, leave-one-out max {loo}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
