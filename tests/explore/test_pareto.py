"""explore/pareto.py: the front is exactly the non-dominated feasible set; front comparison metrics."""

from __future__ import annotations

import numpy as np
import pytest

from explore.pareto import compare_fronts, objective_matrix, pareto_front

OBJ = ("decode_tokens_per_s", "ttft_s", "lut")  # max, min, min


def _records(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    vals = rng.integers(0, 6, size=(n, 3)).astype(float)  # small integers: many ties and duplicates
    return [
        {"id": i, "feasible": bool(rng.random() > 0.2), "decode_tokens_per_s": a, "ttft_s": b, "lut": c}
        for i, (a, b, c) in enumerate(vals)
    ]


def _brute(records: list[dict]) -> set[int]:
    feas = [r for r in records if r["feasible"]]
    y = objective_matrix(feas, OBJ)
    out = set()
    for i, r in enumerate(feas):
        dominated = any(np.all(y[j] <= y[i]) and np.any(y[j] < y[i]) for j in range(len(feas)) if j != i)
        if not dominated:
            out.add(r["id"])
    return out


@pytest.mark.parametrize("seed", range(8))
def test_front_equals_the_brute_force_definition(seed):
    recs = _records(120, seed)
    front = pareto_front(recs, OBJ)
    assert {r["id"] for r in front} == _brute(recs)
    firsts = [r["decode_tokens_per_s"] for r in front]
    assert firsts == sorted(firsts, reverse=True)  # best first for a maximised objective


def test_directions_infeasible_and_missing_values():
    recs = [
        {"id": 0, "feasible": True, "decode_tokens_per_s": 10.0, "ttft_s": 1.0, "lut": 5.0},
        {"id": 1, "feasible": True, "decode_tokens_per_s": 20.0, "ttft_s": 1.0, "lut": 5.0},
        {"id": 2, "feasible": False, "decode_tokens_per_s": 99.0, "ttft_s": 0.0, "lut": 0.0},
        {"id": 3, "feasible": True, "decode_tokens_per_s": None, "ttft_s": 0.0, "lut": 0.0},
    ]
    assert [r["id"] for r in pareto_front(recs, OBJ)] == [1]
    assert pareto_front([], OBJ) == []


def test_compare_fronts():
    recs = _records(200, 3)
    true = pareto_front(recs, OBJ)
    same = compare_fronts(true, true, OBJ)
    assert same == {"recall": 1.0, "precision": 1.0, "igd": 0.0}
    half = true[: max(1, len(true) // 2)]
    part = compare_fronts(half, true, OBJ)
    assert part["recall"] == pytest.approx(len(half) / len(true)) and part["precision"] == 1.0
    assert part["igd"] >= 0.0
    assert compare_fronts([], true, OBJ)["igd"] == float("inf")
