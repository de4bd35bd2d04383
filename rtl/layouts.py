"""Packed stream layouts of the attention engine, defined once, and the shared parameter checks.

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

__all__ = ["TILE", "BlockHeader", "TileHeader", "OutBeat", "raw_values_shape", "values_layout",
           "products_layout", "checking", "check_lanes", "check_head_dim", "PROD_BITS", "MULT_BITS",
           "REPLICA_ATTR", "replica"]

TILE = 64
MULT_BITS = 9  # lane multiplicand: int8 (K) or uint8 (V) as signed 9
PROD_BITS = 13  # int4 x signed 9


class BlockHeader(data.Struct):
    sel: unsigned(64)
    score_mant: unsigned(16)
    score_shift: unsigned(6)
    sparse: unsigned(1)
    last: unsigned(1)


class TileHeader(data.Struct):
    bitmap: unsigned(64)
    mult: unsigned(8)


class OutBeat(data.Struct):
    data: signed(16)
    last: unsigned(1)


def raw_values_shape(lanes: int):
    """Bus word of a values beat: ``lanes`` packed nibbles."""
    return unsigned(4 * lanes)


def values_layout(lanes: int) -> data.ArrayLayout:
    """``lanes`` signed int4 values (the unpacked view of a values beat)."""
    return data.ArrayLayout(signed(4), lanes)


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


def check_lanes(lanes) -> int:
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes not in (2, 4, 8, 16, 32, 64):
        raise SpecError(f"lanes must be a power of two in [2, 64], got {lanes!r}")
    return lanes


def check_head_dim(head_dim) -> int:
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim not in (64, 128):
        raise SpecError(f"head_dim must be 64 or 128, got {head_dim!r}")
    return head_dim
