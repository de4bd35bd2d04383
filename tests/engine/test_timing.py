"""Tests of engine/timing.py: the pipeline depths and the controller's fixed phases agree with each other."""

from engine.timing import (
    BEAT_LATENCY,
    BLK_CYCLES,
    EWAIT_CYCLES,
    EXP_LATENCY,
    FIXED_PHASES,
    L_LATENCY,
    NORM_PIPE,
    SCAN_LATENCY,
    SOFTMAX_LANES_MAX,
    TAIL_PHASES,
    UPDATE_LATENCY,
    softmax_lanes,
)
from engine.widths import RECIP_BITS


def test_fixed_phases_are_the_latencies():
    assert dict(FIXED_PHASES) == {
        "BLK": BLK_CYCLES,
        "KDRAIN": BEAT_LATENCY - 1,
        "UPD": SCAN_LATENCY,
        "UWAIT": UPDATE_LATENCY,
        "EWAIT": EWAIT_CYCLES,
    }
    assert sum(FIXED_PHASES.values()) == 34  # BLOCK_FIXED of tests/data/rtl_cycles.json's heads
    assert dict(TAIL_PHASES) == {"NSTART": 1, "DIV": RECIP_BITS, "NPIPE": NORM_PIPE}


def test_ewait_covers_the_softmax_results():
    # the first V beat reads p in its S2 stage and a one-token V phase starts the normaliser, which reads l
    assert EWAIT_CYCLES + 2 >= EXP_LATENCY + 1 and EWAIT_CYCLES + 3 >= L_LATENCY + 1
    assert EWAIT_CYCLES == max(EXP_LATENCY - 1, L_LATENCY - 2)


def test_softmax_lanes_are_capped():
    assert [softmax_lanes(n) for n in (2, 4, 8, 16, 32, 64)] == [2, 4, 8, 16, 16, 16]
    assert SOFTMAX_LANES_MAX == 16 and 64 % SOFTMAX_LANES_MAX == 0
