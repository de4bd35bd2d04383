"""Pareto fronts of records: non-domination under the objectives' directions, and how close one front is to
another (for the optimiser-vs-brute-force comparison)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["pareto_front", "objective_matrix", "compare_fronts"]


def objective_matrix(records: list[dict[str, Any]], objectives: tuple[str, ...]) -> np.ndarray:
    """[n, k] objective values with every column turned into "smaller is better"."""
    from explore.space import OBJECTIVES

    sign = np.array([-1.0 if OBJECTIVES[o][0] == "max" else 1.0 for o in objectives])
    return (
        np.array([[float(r[o]) for o in objectives] for r in records], dtype=float).reshape(
            len(records), len(objectives)
        )
        * sign
    )


def _front_mask(y: np.ndarray) -> np.ndarray:
    """Mask of the non-dominated rows of `y` (minimisation); equal rows are all kept."""
    n = len(y)
    keep = np.ones(n, dtype=bool)
    order = np.lexsort(y.T[::-1])  # by first objective, then the next: a row cannot be dominated by later rows
    for i in order:
        if not keep[i]:
            continue
        dominated = np.all(y[i] <= y, axis=1) & np.any(y[i] < y, axis=1)
        keep &= ~dominated
    return keep


def pareto_front(records: list[dict[str, Any]], objectives: tuple[str, ...]) -> list[dict[str, Any]]:
    """The feasible records no other feasible record dominates, sorted by the first objective (best first)."""
    feas = [r for r in records if r.get("feasible") and all(r.get(o) is not None for o in objectives)]
    if not feas:
        return []
    y = objective_matrix(feas, objectives)
    mask = _front_mask(y)
    front = [r for r, m in zip(feas, mask) if m]
    ys = y[mask]
    order = np.lexsort(ys.T[::-1])
    return [front[i] for i in order]


def compare_fronts(found: list[dict], true: list[dict], objectives: tuple[str, ...]) -> dict[str, float]:
    """How well `found` approximates `true` (both fronts): recall = share of true-front points found exactly (by
    id), precision = share of found points that are on the true front, IGD = mean distance from each true-front
    point to the nearest found point with objectives scaled to [0, 1] over the true front."""
    if not true:
        return {"recall": float("nan"), "precision": float("nan"), "igd": float("nan")}
    ids_true = {r["id"] for r in true}
    ids_found = {r["id"] for r in found}
    yt = objective_matrix(true, objectives)
    lo, hi = yt.min(axis=0), yt.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    if found:
        yf = (objective_matrix(found, objectives) - lo) / span
        diff = ((yt - lo) / span)[:, None, :] - yf[None, :, :]
        d = np.sqrt((diff**2).sum(axis=2)).min(axis=1)
        igd = float(d.mean())
    else:
        igd = float("inf")
    return {
        "recall": len(ids_true & ids_found) / len(ids_true),
        "precision": len(ids_true & ids_found) / len(ids_found) if ids_found else 0.0,
        "igd": igd,
    }
