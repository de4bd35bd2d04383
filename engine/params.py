"""The attention engine's parameters and their checks: the tile, the lane counts, the head sizes, the context.

One check per parameter, with one message, for every consumer (the RTL constructors, the closed-form cycle count,
the cycle-level simulator, the golden datapath); a consumer may add how to fix it in its own terms (``hint``).
"""

from __future__ import annotations

from base.errors import SpecError
from quant.scheme import BITMAP_TILE

__all__ = ["TILE", "LANES", "HEAD_DIMS", "MAX_CONTEXT", "check_lanes", "check_head_dim"]

#: tokens per block and per K tile, channels per V tile: the engine consumes quant's 64-element bitmap tiles
TILE = BITMAP_TILE
#: MAC lanes of one engine: a power of two (a tile's values beats split evenly) up to one lane per tile position
LANES = (2, 4, 8, 16, 32, 64)
#: head sizes: one or two 64-channel V tiles per token
HEAD_DIMS = (64, 128)
#: longest context in tokens: keeps every accumulator of the datapath exact (engine/widths.py)
MAX_CONTEXT = 1 << 20


def _fail(message: str, hint: str) -> SpecError:
    return SpecError(f"{message}; {hint}" if hint else message)


def check_lanes(lanes: object, hint: str = "") -> int:
    """``lanes`` if it is one of LANES, else a SpecError (``hint``: how the caller's user fixes it)."""
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes not in LANES:
        raise _fail(f"lanes must be a power of two in [2, 64], got {lanes!r}", hint)
    return lanes


def check_head_dim(head_dim: object, hint: str = "") -> int:
    """``head_dim`` if it is one of HEAD_DIMS, else a SpecError (``hint``: how the caller's user fixes it)."""
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim not in HEAD_DIMS:
        raise _fail(f"head_dim must be 64 or 128, got {head_dim!r}", hint)
    return head_dim
