"""Tests of engine/workloads.py: a spec regenerates the same head; sparsity and Λ reach the head."""

import numpy as np

from engine.cycles import tile_value_counts
from engine.workloads import HeadSpec, random_head


def test_spec_is_deterministic_and_serialisable():
    spec = HeadSpec(seed=11, head_dim=128, context=300, sink=2, window=100, k_sparsity=0.6, v_sparsity=0.2)
    a, b = random_head(spec), random_head(HeadSpec(**spec.to_dict()))
    for name in ("sel", "qk", "k", "v", "sv", "k_bitmap", "v_bitmap", "score_mant", "score_shift"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.sparse and a.head_dim == 128
    assert list(a.block) == [0, 3, 4]  # sink tokens 0-1, window 200-299


def test_sparsity_reaches_the_tiles():
    dense = random_head(HeadSpec(seed=1, context=640))
    sparse = random_head(HeadSpec(seed=1, context=640, k_sparsity=0.75, v_sparsity=0.75))
    nk, nv = tile_value_counts(dense)
    assert not dense.sparse and nk.sum() == 640 * 64 and nv.sum() == 640 * 64
    sk, sv = tile_value_counts(sparse)
    assert 0.2 < sk.sum() / nk.sum() < 0.3 and 0.2 < sv.sum() / nv.sum() < 0.3
    assert np.all(random_head(HeadSpec(seed=2, context=64, k_sparsity=1.0, v_sparsity=1.0)).k == 0)
