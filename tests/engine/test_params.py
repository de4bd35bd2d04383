"""Tests of engine/params.py: one check per parameter, one message, an optional hint."""

import pytest

from base.errors import SpecError
from engine.params import HEAD_DIMS, LANES, TILE, check_head_dim, check_lanes
from quant.scheme import BITMAP_TILE


def test_ranges():
    assert LANES == (2, 4, 8, 16, 32, 64) and HEAD_DIMS == (64, 128)
    assert TILE == BITMAP_TILE == 64  # the engine consumes quant's bitmap tiles
    assert all(check_lanes(n) == n for n in LANES) and all(check_head_dim(d) == d for d in HEAD_DIMS)


@pytest.mark.parametrize("bad", [0, 1, 3, 6, 128, True, 8.0, "8", None])
def test_bad_lanes(bad):
    with pytest.raises(SpecError, match=r"^lanes must be a power of two in \[2, 64\], got "):
        check_lanes(bad)


@pytest.mark.parametrize("bad", [32, 96, 256, True, 64.0])
def test_bad_head_dim(bad):
    with pytest.raises(SpecError, match=r"^head_dim must be 64 or 128, got "):
        check_head_dim(bad)


def test_hint_is_appended():
    with pytest.raises(SpecError, match=r"got 6; set fpga.attention_lanes$"):
        check_lanes(6, "set fpga.attention_lanes")
