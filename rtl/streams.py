"""Software encoder of the engine's input streams (the DMA/sequencer side) and decoder of its output.

Order of the beats of one head (see rtl/layouts.py for the payloads):

* ``blk``: one :class:`~rtl.layouts.BlockHeader` per block, in increasing token order.
* ``tile``: per block, the D K-tile headers (channel d = 0..D-1), then for every selected token t in increasing
  order its D/64 V-tile headers (channel group g = 0..D/64-1).
* ``val``: the value beats of those tiles in the same order, ``max(0, ceil(n / lanes))`` beats for a tile with
  ``n`` streamed values (K: the bitmap's kept tokens of a sparse block, the ``sel`` tokens of a dense one;
  V: the kept channels of a sparse block, all 64 of a dense one), values in increasing element order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.datapath import EngineHead
from engine.params import TILE

__all__ = ["HeadStreams", "encode_head", "decode_output"]


@dataclass(frozen=True)
class HeadStreams:
    """Payload integers of one head: blk, tile and val beats (Python ints, LSB-first struct packing)."""

    blk: list[int]
    tile: list[int]
    val: list[int]


def _beats(vals: np.ndarray, keep: np.ndarray, lanes: int) -> list[int]:
    """vals, keep: [N, 64] tile rows -> value beats (each tile padded to whole beats)."""
    pc = keep.sum(axis=1)
    nb = -(-pc // lanes)
    off = np.concatenate([[0], np.cumsum(nb)])
    total = int(off[-1])
    nib = np.zeros((total, lanes), dtype=np.uint8)
    rank = np.cumsum(keep, axis=1) - keep
    rows = (off[:-1, None] + rank // lanes)[keep]
    cols = (rank % lanes)[keep]
    nib[rows, cols] = (vals[keep].astype(np.int64) & 0xF).astype(np.uint8)
    by = nib[:, 0::2] | (nib[:, 1::2] << 4)  # [total, lanes/2] bytes, element 2j in the low nibble
    return [int.from_bytes(r.tobytes(), "little") for r in by]


def encode_head(head: EngineHead, lanes: int) -> HeadStreams:
    """All input beats of one head for an engine with ``lanes`` MAC lanes."""
    D = head.head_dim
    G = D // TILE
    sel = head.sel_bits()
    kkeep = head.k_keep()
    vkeep = head.v_keep()
    blk, tile, val = [], [], []
    for b in range(head.n_blocks):
        last = int(b == head.n_blocks - 1)
        blk.append(
            int(head.sel[b])
            | int(head.score_mant[b]) << 64
            | int(head.score_shift[b]) << 80
            | int(head.sparse) << 86
            | last << 87
        )
        kbm = head.k_bitmap[b] if head.sparse else np.zeros(D, dtype=np.uint64)
        tile += [int(kbm[d]) | (int(head.qk[b, d]) & 0xFF) << 64 for d in range(D)]
        val += _beats(head.k[b].T, kkeep[b].T, lanes)  # rows = channels
        toks = np.nonzero(sel[b])[0]
        vbm = head.v_bitmap[b] if head.sparse else np.zeros((TILE, G), dtype=np.uint64)
        tile += [int(vbm[t, g]) | int(head.sv[b, t, g]) << 64 for t in toks for g in range(G)]
        vrows = head.v[b][toks].reshape(len(toks) * G, TILE)
        krows = vkeep[b][toks].reshape(len(toks) * G, TILE)
        val += _beats(vrows, krows, lanes)
    return HeadStreams(blk=blk, tile=tile, val=val)


def decode_output(beats: list[int]) -> tuple[np.ndarray, list[int]]:
    """OutBeat integers -> (int16 data [n], last flags)."""
    d = np.array([(x & 0xFFFF) - ((x & 0x8000) << 1) for x in beats], dtype=np.int64)
    return d, [(x >> 16) & 1 for x in beats]
