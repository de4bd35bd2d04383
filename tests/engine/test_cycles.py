import numpy as np
import pytest

from base.errors import SpecError
from engine.cycles import cycles_from_counts, head_cycles, head_macs, lane_utilisation, steady_state_utilisation
from engine.workloads import HeadSpec, random_head


def test_formula_by_hand():
    # one dense block of 3 selected tokens, D = 64, L = 8: BLK 3 + K 64 tiles x 1 beat (3 values) + KDRAIN 11
    # + SCAN 8 + SWAIT/UPD 5 + UWAIT 6 + EXP 8 + EWAIT 9 + V 3 tokens x 8 beats, then start 1 + DIV 38 + pipe 4 + 64
    nk = np.full((1, 64), 3)
    nv = [np.full((3, 1), 64)]
    assert cycles_from_counts(64, 8, nk, nv) == 3 + 64 + 11 + 8 + 5 + 6 + 8 + 9 + 24 + 1 + 38 + 4 + 64


def test_empty_tiles_cost_one_cycle():
    nk = np.zeros((2, 128), dtype=int)
    nv = [np.zeros((1, 2), dtype=int), np.array([[65, 0]])]
    assert cycles_from_counts(128, 16, nk, nv) == 2 * (34 + 8) + 256 + 2 + (5 + 1) + 43 + 128


def test_head_cycles_matches_counts_and_utilisation():
    h = random_head(HeadSpec(seed=0, context=1024))
    assert h.n_blocks == 16
    c = head_cycles(h, 8)
    assert c == 16 * (34 + 16 + 512 + 512) + 43 + 64
    assert head_macs(h) == 2 * 1024 * 64
    assert lane_utilisation(h, 8) == pytest.approx(2 * 1024 * 64 / (8 * c))
    assert steady_state_utilisation(64, 8) == pytest.approx(1024 / 1074)


def test_bad_config():
    with pytest.raises(SpecError, match="lanes must be"):
        cycles_from_counts(64, 6, np.zeros((1, 64)), [])
