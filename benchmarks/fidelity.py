"""Every figure hwsim claims to reproduce, in one table: predicted vs measured or published, and the errors.

Sections come from the fidelity_*.py modules beside this file; each has ``rows() -> list[dict]`` where a row holds
``group`` (what is compared, e.g. "gpu decode step"), ``name`` (the case), ``predicted`` and ``measured`` (the same
unit, ``unit``), and optionally ``fidelity`` and ``note``. Errors are computed here, once:
``error = predicted / measured - 1`` (its sign reads with the unit: for a time, positive is pessimistic;
for a throughput, optimistic). Per group the table prints the mean absolute error (MAE), the largest absolute
error and the mean signed error. Measured data are JSON files with provenance under tests/data/ and benchmarks/data/.

Run: ``.venv/bin/python benchmarks/fidelity.py [--json]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

SECTIONS = ("fidelity_gpu", "fidelity_fpga", "fidelity_offload")


def collect() -> tuple[list[dict], list[str]]:
    """All rows of every section, with their signed error; and a line per section that could not run."""
    rows, skipped = [], []
    for name in SECTIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            skipped.append(f"{name}: not available ({exc})")
            continue
        for row in module.rows():
            row = dict(row)
            row.setdefault("section", name.removeprefix("fidelity_"))
            p, m = row.get("predicted"), row.get("measured")
            row["error"] = (p / m - 1.0) if (p is not None and m) else None
            rows.append(row)
    return rows, skipped


def summarise(rows: list[dict]) -> list[dict]:
    """Per group: n, MAE, max |error|, mean signed error (fractions)."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        if r["error"] is not None:
            groups.setdefault(r["group"], []).append(r["error"])
    return [
        {
            "group": g,
            "n": len(e),
            "mae": sum(abs(x) for x in e) / len(e),
            "max": max(abs(x) for x in e),
            "mean_signed": sum(e) / len(e),
        }
        for g, e in groups.items()
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print rows and summary as JSON")
    args = ap.parse_args(argv)
    rows, skipped = collect()
    summary = summarise(rows)
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary, "skipped": skipped}, indent=1, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(width=max(160, Console().width))
    table = Table(title="hwsim fidelity: predicted vs measured / published")
    for col in ("group", "case", "fidelity", "predicted", "measured", "unit", "error"):
        table.add_column(col, justify="right" if col in ("predicted", "measured", "error") else "left")
    for r in rows:
        err = "" if r["error"] is None else f"{100 * r['error']:+.1f}%"
        cells = (
            r["group"],
            str(r["name"]),
            str(r.get("fidelity", "")),
            f"{r['predicted']:.4g}",
            "" if r.get("measured") is None else f"{r['measured']:.4g}",
            str(r.get("unit", "")),
            err,
        )
        table.add_row(*(Text(c) for c in cells))
    console.print(table, markup=False)
    stable = Table(title="per group")
    for col in ("group", "n", "MAE", "max |err|", "mean signed"):
        stable.add_column(col, justify="left" if col == "group" else "right")
    for s in summary:
        cells = (
            s["group"],
            str(s["n"]),
            f"{100 * s['mae']:.1f}%",
            f"{100 * s['max']:.1f}%",
            f"{100 * s['mean_signed']:+.1f}%",
        )
        stable.add_row(*(Text(c) for c in cells))
    console.print(stable, markup=False)
    for line in skipped:
        console.print(line, markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
