"""The whole engine in Amaranth's simulator on small heads (the long/randomized runs are in tests/cocotb)."""

import numpy as np
from enginesim import simulate_heads

from engine.cycles import head_cycles
from engine.datapath import run_engine
from engine.workloads import HeadSpec, random_head


def test_small_heads_bit_exact_and_cycle_exact():
    heads = [
        random_head(HeadSpec(seed=1, context=1)),
        random_head(HeadSpec(seed=2, context=140, sink=3, window=20)),
        random_head(HeadSpec(seed=3, context=70, k_sparsity=0.6, v_sparsity=0.5, window=60)),
    ]
    for h, (o, cycles) in zip(heads, simulate_heads(heads, lanes=8)):
        assert np.array_equal(o, run_engine(h))
        assert cycles == head_cycles(h, 8)


def test_head_dim_128_two_v_groups():
    """head_dim 128: every token has two V tile groups, so the token advance waits for the second (the cocotb suite
    covers 128 at length; this keeps the Amaranth-level check of the V sequencer)."""
    heads = [random_head(HeadSpec(seed=5, head_dim=128, context=70, k_sparsity=0.5, v_sparsity=0.6, window=8))]
    for h, (o, cycles) in zip(heads, simulate_heads(heads, lanes=16)):
        assert np.array_equal(o, run_engine(h))
        assert cycles == head_cycles(h, 16)


def test_stalls_only_add_cycles():
    heads = [random_head(HeadSpec(seed=4, context=3, k_sparsity=0.9, v_sparsity=1.0))]
    ((o, cycles),) = simulate_heads(heads, lanes=8, stall=0.4, seed=9)
    assert np.array_equal(o, run_engine(heads[0]))
    assert cycles > head_cycles(heads[0], 8)


def test_normaliser_waits_for_the_last_exp():
    """The last block's only selected token in its last softmax chunk, with a one-beat V run: the normaliser
    starts right after EWAIT and must see l with that token's p (engine/timing.py: EWAIT_CYCLES >= L_LATENCY - 2;
    with one cycle less it read l early and the output was wrong)."""
    heads = [random_head(HeadSpec(seed=s, context=64, window=1, k_sparsity=0.5, v_sparsity=0.97)) for s in (0, 2)]
    for lanes in (8, 16):
        for h, (o, cycles) in zip(heads, simulate_heads(heads, lanes=lanes)):
            assert np.array_equal(o, run_engine(h))
            assert cycles == head_cycles(h, lanes)
