"""Tests of engine/datapath.py: the bit-exact golden model of the RTL engine."""

from __future__ import annotations

import numpy as np
import pytest

from base.errors import SpecError
from engine.datapath import EngineHead, SoftmaxState, exp2_fixed, reciprocal, run_engine
from engine.widths import EXP2_TABLE, EXP_FRAC_BITS
from engine.workloads import HeadSpec, random_head


def test_exp2_table_and_rounding():
    assert len(EXP2_TABLE) == 32 and min(EXP2_TABLE) == 129 and max(EXP2_TABLE) == 252
    assert all(a > b for a, b in zip(EXP2_TABLE, EXP2_TABLE[1:]))
    ne = np.arange(0, 12 << EXP_FRAC_BITS)
    p = exp2_fixed(ne)
    true = 255 * 2.0 ** (-ne / 256)
    assert np.all(np.abs(p - true) <= 0.0109 * true + 1.0)  # bucket midpoint: 2^(1/64)-1; two roundings
    assert np.all(p[ne >= 9 << EXP_FRAC_BITS] == 0)
    assert exp2_fixed(np.array([8 << EXP_FRAC_BITS]))[0] == 1


def test_reciprocal_and_invariant():
    assert reciprocal(128) == 1 << 37
    with pytest.raises(SpecError, match="invariant"):
        reciprocal(127)
    _, tr = run_engine(random_head(HeadSpec(seed=4, context=1000)), trace=True)
    assert tr.l >= 128 and np.all(np.diff(tr.running_max) >= 0)


def test_extreme_values_stay_in_range():
    D, B = 128, 3
    head = EngineHead(
        sel=np.full(B, np.uint64(2**64 - 1)),
        block=np.arange(B),
        score_mant=np.full(B, 65535),
        score_shift=np.zeros(B, dtype=np.int64),
        qk=np.full((B, D), -128, dtype=np.int8),
        k=np.full((B, 64, D), -8, dtype=np.int8),
        v=np.full((B, 64, D), 7, dtype=np.int8),
        sv=np.full((B, 64, 2), 255, dtype=np.uint8),
    )
    o, tr = run_engine(head, trace=True)
    assert tr.scores.max() == 128 * 8 * 128
    p0 = int(tr.p[0, 0])
    assert np.all(tr.p == p0) and tr.l == B * 64 * p0
    pv = (p0 * 255 + 128) >> 8
    assert tr.acc[0] == B * 64 * pv * 7 and np.all(o == o[0])
    assert abs(o[0] - 7 * 256 * pv / p0) <= 1


def test_engine_head_rejects_empty_block():
    h = random_head(HeadSpec(seed=6, context=100))
    bad = EngineHead(**{**h.__dict__, "sel": np.array([h.sel[0], np.uint64(0)])})
    with pytest.raises(SpecError, match="empty sel"):
        run_engine(bad)


def test_softmax_state_steps_like_run_engine():
    head = random_head(HeadSpec(seed=9, head_dim=128, context=700, sink=3, window=300, k_sparsity=0.4))
    o, tr = run_engine(head, trace=True)
    state = SoftmaxState(head.head_dim)
    for b in range(head.n_blocks):
        s, p, delta = state.block(head, b)
        assert np.array_equal(s, tr.scores[b]) and np.array_equal(p, tr.p[b]) and delta == tr.delta[b]
    o2, q = state.finish()
    assert np.array_equal(o2, o) and q == tr.q and state.l == tr.l
