"""The plot of a run: every feasible point and the Pareto front, one panel per pair of the first three objectives."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

__all__ = ["plot_front"]

MAX_BACKGROUND = 50_000  # feasible points drawn behind the front (a uniform subsample beyond)


def plot_front(
    records: list[dict[str, Any]],
    front: list[dict[str, Any]],
    objectives: tuple[str, ...],
    png: str | Path,
    *,
    title: str,
) -> Path:
    """Write the PNG (Agg backend): grey dots for feasible points, the front in colour, best corner marked by the
    axis labels' (max)/(min)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from explore.space import OBJECTIVES

    objs = list(objectives[:3])
    pairs = list(combinations(objs, 2)) or [(objs[0], objs[0])]
    fig = Figure(figsize=(5.2 * len(pairs), 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    feas = [r for r in records if r.get("feasible") and all(r.get(o) is not None for o in objs)]
    if len(feas) > MAX_BACKGROUND:
        step = len(feas) / MAX_BACKGROUND
        feas = [feas[int(i * step)] for i in range(MAX_BACKGROUND)]
    for ax, (x, y) in zip(axes, pairs):
        ax.scatter(
            [r[x] for r in feas],
            [r[y] for r in feas],
            s=4,
            color="0.75",
            label=f"feasible ({len(feas):,})",
            rasterized=True,
        )
        ax.scatter([r[x] for r in front], [r[y] for r in front], s=18, color="C3", label=f"Pareto ({len(front)})")
        ax.set_xlabel(f"{x} ({OBJECTIVES[x][0]})")
        ax.set_ylabel(f"{y} ({OBJECTIVES[y][0]})")
        for name, setter in ((x, ax.set_xscale), (y, ax.set_yscale)):
            vals = [r[name] for r in feas if r[name] > 0]
            if vals and max(vals) / min(vals) > 100:
                setter("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    return png
