"""Packed stream layouts of the attention engine, defined once, and the helpers every unit's constructor shares.

All layouts are ``amaranth.lib.data`` Structs; fields are packed LSB first in declaration order, so the
software encoder (rtl/streams.py) builds the same integers the Verilog ports carry.

* :class:`BlockHeader` (stream ``blk``, one beat per 64-token block sent): ``sel`` bit i <=> token 64b+i is in
  the Λ selection; ``score_mant``/``score_shift``: the block's score scale ``X = (s * mant) >> shift``;
  ``sparse``: the block's K/V tiles carry bitmaps; ``last``: last block of the head.
* :class:`TileHeader` (stream ``tile``, one beat per K or V tile): ``bitmap`` (ignored in a dense block: a dense
  K tile streams the ``sel`` tokens, a dense V tile all 64 channels) and ``mult``: the folded int8 query
  element ``qk[d]`` for a K tile, the uint8 V scale ``sv[t, g]`` for a V tile.
* values beat (stream ``val``): ``lanes`` int4 values, element j at bits [4j, 4j+3] -- the TEAM.md nibble order
  (element 2j in the low nibble of byte j). Each tile's kept values start on a new beat (a tile's values are
  padded to a whole beat, not just to a byte); a tile with no kept value has no beat.
* :class:`OutBeat` (stream ``out``): one int16 output element per beat (OF = 8 fractional bits), ``last`` on
  element D-1.
"""

from contextlib import contextmanager

from amaranth.hdl import Signal, signed, unsigned
from amaranth.lib import data

from base.errors import SpecError
from engine.params import TILE
from engine.widths import MANT_BITS, OUT_BITS, PROD_BITS, QK_BITS, VALUE_BITS

__all__ = [
    "BlockHeader",
    "TileHeader",
    "OutBeat",
    "raw_values_shape",
    "values_layout",
    "products_layout",
    "checking",
    "REPLICA_ATTR",
    "replica",
]


class BlockHeader(data.Struct):
    sel: unsigned(TILE)
    score_mant: unsigned(MANT_BITS)
    score_shift: unsigned(6)
    sparse: unsigned(1)
    last: unsigned(1)


class TileHeader(data.Struct):
    bitmap: unsigned(TILE)
    mult: unsigned(QK_BITS)  # int8 qk[d] (K tile) or uint8 sv[t, g] (V tile)


class OutBeat(data.Struct):
    data: signed(OUT_BITS)
    last: unsigned(1)


def raw_values_shape(lanes: int):
    """Bus word of a values beat: ``lanes`` packed nibbles."""
    return unsigned(VALUE_BITS * lanes)


def values_layout(lanes: int) -> data.ArrayLayout:
    """``lanes`` signed int4 values (the unpacked view of a values beat)."""
    return data.ArrayLayout(signed(VALUE_BITS), lanes)


def products_layout(lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(signed(PROD_BITS), lanes)


REPLICA_ATTR = "hwsim_replica"  # fpga/_flow.py keeps the registers driving wires with this attribute


def replica(shape=1, *, name: str, init=0) -> Signal:
    """A register meant as one of several identical copies (fan-out relief). Synthesis would merge identical
    registers into one again; the bitstream flow marks the cells that drive a wire with REPLICA_ATTR ``keep``."""
    return Signal(shape, name=name, init=init, attrs={REPLICA_ATTR: 1})


@contextmanager
def checking(component):
    """Run a constructor's parameter checks; a rejected component is marked used, so Amaranth does not also
    warn that it was never elaborated."""
    try:
        yield
    except SpecError:
        component._MustUse__used = True
        raise
