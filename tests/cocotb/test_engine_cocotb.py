"""cocotb tests of rtl/engine.py under Verilator (marked ``sim``): bit-exact against engine/datapath.py and
cycle-exact against engine/cycles.py. The testbench (tb_engine.py) asserts both for every head; these tests
choose the heads and check the returned records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cycles import head_cycles
from engine.datapath import EngineHead
from engine.workloads import HeadSpec, random_head

pytestmark = pytest.mark.sim
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "rtl_cycles.json"


def _heads(*specs):
    return [random_head(s) for s in specs]


def _check(res, heads_per_scenario, lanes, stall_free=True):
    for sc, heads in zip(res["scenarios"], heads_per_scenario):
        assert len(sc["heads"]) == len(heads)
        for rec, h in zip(sc["heads"], heads):
            assert rec["formula"] == head_cycles(h, lanes)
            if stall_free:
                assert rec["cycles"] == rec["formula"]


def test_dense_heads_contexts_and_lambda(cocotb_run):
    heads = _heads(
        HeadSpec(seed=1, context=1),
        HeadSpec(seed=2, context=64),
        HeadSpec(seed=3, context=65),
        HeadSpec(seed=4, context=300, sink=4, window=100),
        HeadSpec(seed=5, context=1100),
        HeadSpec(seed=6, context=200, sink=0, window=1),
        HeadSpec(seed=7, context=150, sink=150),
    )
    res = cocotb_run(64, 8, [{"heads": heads, "stall": 0.0, "seed": 1}])
    _check(res, [heads], 8)


def test_bitmap_sparse_heads(cocotb_run):
    heads = _heads(
        *(
            HeadSpec(seed=10 + i, context=c, k_sparsity=s, v_sparsity=s, sink=2, window=w)
            for i, (s, c, w) in enumerate(
                [(0.0, 130, None), (0.5, 200, 120), (0.7, 190, None), (0.9, 100, 50), (1.0, 70, None)]
            )
        ),
        HeadSpec(seed=20, context=1030, k_sparsity=0.7, v_sparsity=0.5, sink=4, window=700),
    )
    res = cocotb_run(64, 8, [{"heads": heads, "stall": 0.0, "seed": 2}])
    _check(res, [heads], 8)


def test_random_stalls_on_every_stream(cocotb_run):
    heads = _heads(
        HeadSpec(seed=30, context=90, sink=1, window=40),
        HeadSpec(seed=31, context=150, k_sparsity=0.6, v_sparsity=0.8),
        HeadSpec(seed=32, context=3),
    )
    res = cocotb_run(64, 8, [{"heads": heads, "stall": 0.35, "seed": 3}, {"heads": heads[:1], "stall": 0.8, "seed": 4}])
    _check(res, [heads, heads[:1]], 8, stall_free=False)
    assert all(r["cycles"] > r["formula"] for sc in res["scenarios"] for r in sc["heads"])


def test_reset_in_the_middle_of_a_stream(cocotb_run):
    abort = random_head(HeadSpec(seed=40, context=260, k_sparsity=0.5, v_sparsity=0.5))
    heads = _heads(HeadSpec(seed=41, context=70), HeadSpec(seed=42, context=100, k_sparsity=0.3, v_sparsity=0.2))
    res = cocotb_run(
        64,
        8,
        [
            {"heads": heads, "stall": 0.0, "seed": 5, "abort_head": abort, "reset_after": 700},  # inside block 1 K
            {"heads": heads[:1], "stall": 0.2, "seed": 6, "abort_head": abort, "reset_after": 3},
            {
                "heads": heads[1:],
                "stall": 0.0,
                "seed": 7,
                "abort_head": abort,
                "reset_after": head_cycles(abort, 8) - 5,
            },
        ],
    )
    _check(res, [heads, heads[:1], heads[1:]], 8, stall_free=False)
    assert [r["cycles"] == r["formula"] for r in res["scenarios"][0]["heads"]] == [True, True]


def _saturating_head(D):
    """All scores at the int8 x int4 extreme (-128 x -8) and all V at 7 with full scales."""
    B = 2
    return EngineHead(
        sel=np.full(B, np.uint64(2**64 - 1)),
        block=np.arange(B),
        score_mant=np.full(B, 65535),
        score_shift=np.zeros(B, dtype=np.int64),
        qk=np.full((B, D), -128, dtype=np.int8),
        k=np.full((B, 64, D), -8, dtype=np.int8),
        v=np.full((B, 64, D), 7, dtype=np.int8),
        sv=np.full((B, 64, D // 64), 255, dtype=np.uint8),
    )


def test_extreme_values(cocotb_run):
    heads = _heads(
        HeadSpec(seed=50, context=140, extreme=True, window=100),
        HeadSpec(seed=51, context=100, extreme=True, k_sparsity=0.5, v_sparsity=0.0),
    )
    heads.append(_saturating_head(64))
    res = cocotb_run(64, 8, [{"heads": heads, "stall": 0.0, "seed": 8}])
    _check(res, [heads], 8)


def test_head_dim_128(cocotb_run):
    heads = _heads(
        HeadSpec(seed=60, head_dim=128, context=1030, sink=4, window=500),
        HeadSpec(seed=61, head_dim=128, context=300, k_sparsity=0.7, v_sparsity=0.7, window=200),
        HeadSpec(seed=62, head_dim=128, context=1, extreme=True),
    )
    heads.append(_saturating_head(128))
    res = cocotb_run(
        128, 8, [{"heads": heads, "stall": 0.0, "seed": 9}, {"heads": heads[1:2], "stall": 0.3, "seed": 10}]
    )
    _check(res, [heads], 8)


def test_golden_cycle_file_is_still_what_the_rtl_measures(cocotb_run):
    entries = json.loads(GOLDEN.read_text())["entries"]
    assert len(entries) >= 20
    for cfg in ((64, 8), (128, 8)):
        pick = [e for e in entries if (e["head_dim"], e["lanes"]) == cfg][:2]
        assert pick, f"no golden entry for {cfg}"
        heads = [random_head(HeadSpec(**e["spec"])) for e in pick]
        res = cocotb_run(cfg[0], cfg[1], [{"heads": heads, "stall": 0.0, "seed": 0}])
        got = [r["cycles"] for r in res["scenarios"][0]["heads"]]
        assert got == [e["cycles_measured"] for e in pick]
