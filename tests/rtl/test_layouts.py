import pytest

from base.errors import SpecError
from rtl.accumulator import Accumulator
from rtl.bitmap_decoder import BitmapDecoder
from rtl.engine import AttentionEngine
from rtl.layouts import BlockHeader, OutBeat, TileHeader
from rtl.mac_array import MacArray
from rtl.normalizer import Normalizer
from rtl.scatter import ScatterNetwork
from rtl.softmax import SoftmaxUnit
from rtl.unpacker import Unpacker


def test_layout_widths():
    assert BlockHeader.as_shape().size == 88
    assert TileHeader.as_shape().size == 72
    assert OutBeat.as_shape().size == 17


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(head_dim=96, lanes=8), "head_dim must be 64 or 128, got 96"),
        (dict(head_dim=64, lanes=3), "lanes must be a power of two in [2, 64], got 3"),
        (dict(head_dim=64, lanes=128), "lanes must be a power of two in [2, 64], got 128"),
        (dict(head_dim=64, lanes=True), "lanes must be a power of two in [2, 64], got True"),
        (dict(head_dim="64", lanes=8), "head_dim must be 64 or 128, got '64'"),
    ],
)
def test_engine_constructor_messages(kw, msg):
    with pytest.raises(SpecError) as e:
        AttentionEngine(**kw)
    assert str(e.value) == msg


@pytest.mark.parametrize("cls", [Unpacker, BitmapDecoder, ScatterNetwork, MacArray, SoftmaxUnit])
def test_lane_components_check_lanes(cls):
    with pytest.raises(SpecError) as e:
        cls(lanes=5)
    assert str(e.value) == "lanes must be a power of two in [2, 64], got 5"


def test_accumulator_and_normalizer_messages():
    with pytest.raises(SpecError) as e:
        Accumulator(entries=100, width=20)
    assert str(e.value) == "entries must be a positive multiple of 64, got 100"
    with pytest.raises(SpecError) as e:
        Accumulator(entries=64, width=8)
    assert str(e.value) == "width must be an int in [16, 48], got 8"
    with pytest.raises(SpecError) as e:
        Normalizer(head_dim=32)
    assert str(e.value) == "head_dim must be 64 or 128, got 32"
