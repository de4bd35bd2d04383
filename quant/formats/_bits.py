"""Bit-level helpers shared by every packed format: LSB-first bit packing, two's complement codes, bitmap tiles.

All functions are vectorized over leading axes; none loops over elements in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from base.errors import FormatError
from quant.scheme import BITMAP_TILE

__all__ = [
    "pack_bits",
    "unpack_bits",
    "to_codes",
    "from_codes",
    "tile_mask_to_bitmap",
    "bitmap_to_tile_mask",
    "popcount64",
    "pack_tiles",
    "unpack_tiles",
    "interleave_tiles",
    "split_tile_stream",
    "fp16_bytes",
    "fp16_from_bytes",
    "check_array",
    "as_uint8",
    "tile_payload_lengths",
]

_U8 = np.uint8


def _packed_len(n: int | np.ndarray, bits: int):
    return -(-np.asarray(n) * bits // 8) if isinstance(n, np.ndarray) else -(-n * bits // 8)


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned codes ``[..., n]`` (each < 2**bits) LSB-first into ``[..., ceil(n*bits/8)]`` uint8.

    Element i occupies bits ``[i*bits, (i+1)*bits)`` of the little-endian bit stream, so for 4 bits element 2j is the
    low nibble of byte j and for 2 bits element 4j+i sits at bits [2i, 2i+1] of byte j (TEAM.md layouts). The last
    byte is zero-padded. ``bits`` = 16 stores each code as a little-endian uint16 (the fp16 bit pattern).
    """
    codes = np.asarray(codes)
    lead, n = codes.shape[:-1], codes.shape[-1]
    if bits == 16:
        return np.ascontiguousarray(codes.astype("<u2")).view(_U8).reshape(*lead, 2 * n)
    if bits in (1, 2, 4, 8):
        per = 8 // bits
        pad = -n % per
        c = codes.astype(_U8)
        if pad:
            c = np.concatenate([c, np.zeros((*lead, pad), _U8)], axis=-1)
        c = c.reshape(*lead, (n + pad) // per, per)
        out = np.zeros(c.shape[:-1], _U8)
        for i in range(per):  # loop over the <= 8 lanes of a byte, not over elements
            out |= (c[..., i] << np.uint8(i * bits)).astype(_U8)
        return out
    if 1 <= bits <= 8:
        planes = ((codes.astype(_U8)[..., None] >> np.arange(bits, dtype=_U8)) & 1).reshape(*lead, n * bits)
        return np.packbits(planes, axis=-1, bitorder="little")
    raise FormatError(f"cannot pack {bits}-bit values; supported widths are 1..8 and 16")


def unpack_bits(buf: np.ndarray, n: int, bits: int) -> np.ndarray:
    """Inverse of `pack_bits`: ``[..., ceil(n*bits/8)]`` uint8 -> ``[..., n]`` codes (uint8, or uint16 for 16 bits)."""
    buf = np.asarray(buf)
    want = _packed_len(n, bits)
    if buf.dtype != _U8 or buf.shape[-1] != want:
        raise FormatError(
            f"packed buffer has shape {buf.shape} and dtype {buf.dtype}; expected uint8 with last "
            f"axis {want} for {n} values of {bits} bits"
        )
    lead = buf.shape[:-1]
    if bits == 16:
        return np.ascontiguousarray(buf).view("<u2").reshape(*lead, n).astype(np.uint16)
    if bits in (1, 2, 4, 8):
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        lanes = [(buf >> np.uint8(i * bits)) & mask for i in range(per)]
        return np.stack(lanes, axis=-1).reshape(*lead, buf.shape[-1] * per)[..., :n]
    planes = np.unpackbits(buf, axis=-1, bitorder="little")[..., : n * bits].reshape(*lead, n, bits)
    return (planes << np.arange(bits, dtype=_U8)).sum(axis=-1, dtype=_U8)


def to_codes(values: np.ndarray, bits: int) -> np.ndarray:
    """Signed integers in [-2**(bits-1), 2**(bits-1)) -> two's complement codes (uint8)."""
    return (np.asarray(values).astype(np.int16) & ((1 << bits) - 1)).astype(_U8)


def from_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Two's complement codes -> signed integers (int8)."""
    c = np.asarray(codes).astype(np.int16)
    return (c - ((c >> (bits - 1)) & 1) * (1 << bits)).astype(np.int8)


def fp16_bytes(x: np.ndarray) -> np.ndarray:
    """fp16 array -> its little-endian bytes, flattened (uint8)."""
    return np.ascontiguousarray(np.asarray(x, dtype="<f2")).view(_U8).reshape(-1)


def fp16_from_bytes(buf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(buf).view("<f2").reshape(shape).astype(np.float16)


# ---- bitmap tiles ---------------------------------------------------------------------------------------------
def tile_mask_to_bitmap(mask: np.ndarray) -> np.ndarray:
    """Keep-mask ``[..., 64]`` (bool) -> one uint64 per tile, bit i set <=> element i kept."""
    b = np.packbits(np.asarray(mask, dtype=bool), axis=-1, bitorder="little")  # [..., 8], byte 0 = elements 0..7
    return np.ascontiguousarray(b).view("<u8")[..., 0].astype(np.uint64)


def bitmap_to_tile_mask(bitmaps: np.ndarray) -> np.ndarray:
    """uint64 bitmaps ``[...]`` -> keep-mask ``[..., 64]`` (bool)."""
    bm = np.asarray(bitmaps, dtype="<u8")
    by = np.ascontiguousarray(bm.reshape(-1)).view(_U8).reshape(*bm.shape, 8)
    return np.unpackbits(by, axis=-1, bitorder="little").astype(bool)


def popcount64(bitmaps: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (int64 result)."""
    return bitmap_to_tile_mask(bitmaps).sum(axis=-1, dtype=np.int64)


def tile_payload_lengths(counts: np.ndarray, bits: int) -> np.ndarray:
    """Bytes of the packed values of tiles holding `counts` kept values (quant.scheme.packed_bytes, vectorized)."""
    return -(-np.asarray(counts, dtype=np.int64) * bits // 8)


def pack_tiles(mask: np.ndarray, codes: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Bitmap-tile a dense code array.

    mask, codes: ``[n_tiles, 64]``; returns (bitmaps uint64 [n_tiles], payload uint8 [sum of per-tile bytes]) where
    each tile's kept codes are packed in increasing element order at `bits` each and padded to a whole byte.
    """
    mask = np.asarray(mask, dtype=bool)
    counts = mask.sum(axis=1)
    rank_mask = np.arange(BITMAP_TILE) < counts[:, None]
    compact = np.zeros(mask.shape, dtype=np.uint16 if bits == 16 else _U8)
    compact[rank_mask] = codes[mask]  # both masks enumerate row-major, so tile order and element order survive
    packed = pack_bits(compact, bits)  # [n_tiles, 64*bits/8]; bytes past a tile's length are zero padding
    lengths = tile_payload_lengths(counts, bits)
    keep = np.arange(packed.shape[1]) < lengths[:, None]
    return tile_mask_to_bitmap(mask), packed[keep]


def unpack_tiles(bitmaps: np.ndarray, payload: np.ndarray, bits: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `pack_tiles`: (bitmaps [n_tiles], payload) -> (mask [n_tiles, 64], dense codes [n_tiles, 64]).

    Raises FormatError when the payload length disagrees with the bitmaps' popcounts.
    """
    bitmaps = np.asarray(bitmaps).reshape(-1)
    mask = bitmap_to_tile_mask(bitmaps)
    counts = mask.sum(axis=1)
    lengths = tile_payload_lengths(counts, bits)
    total = int(lengths.sum())
    if payload.size != total:
        raise FormatError(
            f"{what}: the bitmaps' popcounts ({int(counts.sum())} kept values) need {total} bytes of "
            f"{bits}-bit values but {payload.size} are present; the buffer is truncated or the bitmaps "
            "are corrupt"
        )
    width = _packed_len(BITMAP_TILE, bits)
    grid = np.zeros((bitmaps.size, width), _U8)
    grid[np.arange(width) < lengths[:, None]] = payload
    compact = unpack_bits(grid, BITMAP_TILE, bits)
    dense = np.zeros(mask.shape, dtype=compact.dtype)
    dense[mask] = compact[np.arange(BITMAP_TILE) < counts[:, None]]
    return mask, dense


def interleave_tiles(bitmaps: np.ndarray, payload: np.ndarray, bits: int) -> np.ndarray:
    """The byte stream of tiles in order: each tile = 8-byte LE bitmap, then its packed values."""
    bitmaps = np.asarray(bitmaps, dtype="<u8").reshape(-1)
    lengths = tile_payload_lengths(popcount64(bitmaps), bits)
    width = _packed_len(BITMAP_TILE, bits)
    grid = np.zeros((bitmaps.size, 8 + width), _U8)
    grid[:, :8] = bitmaps[:, None].view(_U8)
    body = np.zeros((bitmaps.size, width), _U8)
    body[np.arange(width) < lengths[:, None]] = payload
    grid[:, 8:] = body
    return grid[np.arange(8 + width) < (8 + lengths)[:, None]]


def split_tile_stream(buf: np.ndarray, n_tiles: int, bits: int, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse `n_tiles` consecutive tiles from the start of `buf` -> (bitmaps, payload, bytes consumed).

    Tile lengths depend on each bitmap, so the walk visits tiles one by one (a loop over tiles, not elements).
    """
    raw = bytes(np.asarray(buf, _U8))
    pos = 0
    starts = np.empty(n_tiles, np.int64)
    lengths = np.empty(n_tiles, np.int64)
    for i in range(n_tiles):
        if pos + 8 > len(raw):
            raise FormatError(
                f"{what}: buffer truncated in the bitmap of tile {i} of {n_tiles} "
                f"(offset {pos}, {len(raw)} bytes); re-export the packed object"
            )
        cnt = int.from_bytes(raw[pos : pos + 8], "little").bit_count()
        starts[i] = pos
        lengths[i] = -(-cnt * bits // 8)
        pos += 8 + int(lengths[i])
    if pos > len(raw):
        raise FormatError(
            f"{what}: buffer truncated in the values of the last tile (needs {pos} bytes, has "
            f"{len(raw)}); re-export the packed object"
        )
    arr = np.frombuffer(raw, _U8, count=pos)
    bm_idx = starts[:, None] + np.arange(8)
    bitmaps = np.ascontiguousarray(arr[bm_idx]).view("<u8")[:, 0].astype(np.uint64)
    if n_tiles:
        width = int(lengths.max(initial=0))
        idx = starts[:, None] + 8 + np.arange(width)
        payload = arr[np.minimum(idx, max(pos - 1, 0))][np.arange(width) < lengths[:, None]]
    else:
        payload = np.zeros(0, _U8)
    return bitmaps, payload, pos


# ---- validation -----------------------------------------------------------------------------------------------
def check_array(arrays: Mapping[str, Any], name: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """`arrays[name]` as uint8 of exactly `shape`, else FormatError naming the object, the array and the fix."""
    if name not in arrays:
        raise FormatError(f"{what}: array {name!r} is missing; expected arrays {sorted(arrays)} to include it")
    a = np.asarray(arrays[name])
    if a.dtype != _U8:
        raise FormatError(f"{what}: array {name!r} has dtype {a.dtype}; packed arrays are uint8")
    if tuple(a.shape) != tuple(shape):
        raise FormatError(
            f"{what}: array {name!r} has shape {tuple(a.shape)}, expected {tuple(shape)} "
            "(truncated or from a different configuration)"
        )
    return a


def as_uint8(x: np.ndarray) -> np.ndarray:
    """Any fixed-width array -> its little-endian bytes as a flat uint8 array."""
    x = np.ascontiguousarray(x)
    if x.dtype.byteorder == ">":
        x = x.astype(x.dtype.newbyteorder("<"))
    return x.view(_U8).reshape(-1)
