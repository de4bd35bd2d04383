"""Weight formats: group-wise asymmetric int (W2/W3/W4/W8), 2:4 semi-structured sparse, unstructured bitmap tiles."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from base.errors import FormatError, SpecError
from base.specio import short
from quant.formats._base import Packed, Section, meta_choice, meta_int
from quant.formats._bits import (
    fp16_bytes,
    fp16_from_bytes,
    pack_bits,
    pack_tiles,
    popcount64,
    unpack_bits,
    unpack_tiles,
)
from quant.scheme import BITMAP_TILE, FP16_BYTES, packed_bytes

__all__ = ["GroupQuantWeight", "Sparse24Weight", "BitmapSparseWeight", "quantize_groups", "prune_2_4"]

QUANT_BITS = (2, 3, 4, 8)  # asymmetric unsigned weight widths; 16 = fp16 values (sparse formats only)


def _check_matrix(w: np.ndarray, what: str) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.floating):
        raise SpecError(
            f"{what}: expected a float matrix W[out_features, in_features], got shape {w.shape} dtype {w.dtype}"
        )
    if not np.all(np.isfinite(w)):
        raise SpecError(f"{what}: weights contain NaN or inf; clean the checkpoint first")
    return w.astype(np.float64)


def _check_bits(bits: int, allowed: tuple[int, ...], what: str) -> int:
    if bits not in allowed:
        raise SpecError(f"{what}: bits={bits} is not supported; use one of {allowed}")
    return bits


def _group_index(in_features: int, group_size: int) -> np.ndarray:
    return np.arange(in_features) // group_size


def quantize_groups(
    w: np.ndarray, mask: np.ndarray, bits: int, group_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric unsigned group quantization of the kept (`mask`) entries of W[out, in], groups of `group_size`
    dense input columns.

    Per group (range widened to include 0, as GPTQ does, so the zero point always fits in `bits`):
    lo = min(min w, 0), hi = max(max w, 0), scale = (hi - lo) / (2**bits - 1) rounded to fp16 (1.0 if 0),
    zero = clip(round(-lo / scale), 0, 2**bits - 1), code = clip(round(w / scale) + zero, 0, 2**bits - 1);
    dequantized value = (code - zero) * scale. Returns (codes uint8 [out, in] (0 where pruned), scales fp16 [out, G],
    zeros uint8 [out, G]).
    """
    rows, cols = w.shape
    n_groups = -(-cols // group_size)
    qmax = (1 << bits) - 1
    pad = n_groups * group_size - cols
    wg = np.pad(w, ((0, 0), (0, pad))).reshape(rows, n_groups, group_size)
    mg = np.pad(mask, ((0, 0), (0, pad))).reshape(rows, n_groups, group_size)
    lo = np.where(mg, wg, np.inf).min(axis=2)
    hi = np.where(mg, wg, -np.inf).max(axis=2)
    empty = ~mg.any(axis=2)
    lo = np.where(empty, 0.0, np.minimum(lo, 0.0))
    hi = np.where(empty, 0.0, np.maximum(hi, 0.0))
    scale = ((hi - lo) / qmax).astype(np.float16)
    if not np.all(np.isfinite(scale)):
        raise SpecError("weight group range exceeds fp16 scales (|w| > 65504*qmax); rescale the weights")
    scale[scale == 0] = 1.0
    s = scale.astype(np.float64)
    zero = np.clip(np.rint(-lo / s), 0, qmax)
    codes = np.clip(np.rint(wg / s[..., None]) + zero[..., None], 0, qmax)
    codes = np.where(mg, codes, 0).reshape(rows, -1)[:, :cols].astype(np.uint8)
    return codes, scale, zero.astype(np.uint8)


def _dequant(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group_size: int) -> np.ndarray:
    g = _group_index(codes.shape[1], group_size)
    return (codes.astype(np.float64) - zeros[:, g]) * scales.astype(np.float64)[:, g]


def _check_codes(
    codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, bits: int, cols: int, group_size: int, what: str
) -> None:
    rows = codes.shape[0]
    n_groups = -(-cols // group_size)
    if scales.shape != (rows, n_groups) or scales.dtype != np.float16:
        raise FormatError(f"{what}: scales must be float16 [{rows}, {n_groups}], got {scales.dtype} {scales.shape}")
    if zeros.shape != (rows, n_groups):
        raise FormatError(f"{what}: zero points must be [{rows}, {n_groups}], got {zeros.shape}")
    if codes.size and int(codes.max()) >= 1 << bits or zeros.size and int(zeros.max()) >= 1 << bits:
        raise FormatError(f"{what}: codes or zero points do not fit in {bits} bits")


# ---- dense group-quantized -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class GroupQuantWeight(Packed):
    """W[out, in] as asymmetric `bits`-bit codes, group-wise along the input dimension.

    qweight: uint8 [out, packed_bytes(in, bits)] (row-wise packed codes); scales: float16 [out, G];
    qzeros: uint8 [out, packed_bytes(G, bits)] (zero points packed like the codes), G = ceil(in / group_size).
    """

    bits: int
    group_size: int
    out_features: int
    in_features: int
    qweight: np.ndarray
    scales: np.ndarray
    qzeros: np.ndarray

    FORMAT = "weight.group_quant"

    @classmethod
    def from_float(cls, w: np.ndarray, bits: int = 2, group_size: int = 64) -> GroupQuantWeight:
        w = _check_matrix(w, cls.FORMAT)
        _check_bits(bits, QUANT_BITS, cls.FORMAT)
        if group_size < 1:
            raise SpecError(f"{cls.FORMAT}: group_size must be >= 1, got {group_size}")
        codes, scales, zeros = quantize_groups(w, np.ones(w.shape, bool), bits, group_size)
        return cls.from_codes(codes, scales, zeros, bits, group_size)

    @classmethod
    def from_codes(
        cls, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, bits: int, group_size: int
    ) -> GroupQuantWeight:
        codes, zeros = np.asarray(codes), np.asarray(zeros)
        _check_codes(codes, np.asarray(scales), zeros, bits, codes.shape[1], group_size, cls.FORMAT)
        return cls(
            bits,
            group_size,
            codes.shape[0],
            codes.shape[1],
            pack_bits(codes, bits),
            np.asarray(scales),
            pack_bits(zeros, bits),
        )

    @property
    def n_groups(self) -> int:
        return -(-self.in_features // self.group_size)

    def codes(self) -> np.ndarray:
        """uint8 [out, in] unsigned codes."""
        return unpack_bits(self.qweight, self.in_features, self.bits)

    def zeros(self) -> np.ndarray:
        """uint8 [out, G] zero points."""
        return unpack_bits(self.qzeros, self.n_groups, self.bits)

    def dequantize(self) -> np.ndarray:
        """float64 [out, in]."""
        return _dequant(self.codes(), self.scales, self.zeros(), self.group_size)

    # ---- serialization ----
    def meta(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "bits": self.bits,
            "group_size": self.group_size,
            "out_features": self.out_features,
            "in_features": self.in_features,
        }

    @classmethod
    def layout(cls, meta: Mapping[str, Any]) -> list[Section]:
        what = cls.FORMAT
        bits = meta_choice(meta, "bits", QUANT_BITS, what)
        gs, rows, cols = (meta_int(meta, k, what, 1) for k in ("group_size", "out_features", "in_features"))
        g = -(-cols // gs)
        return [
            Section("qweight", rows * packed_bytes(cols, bits)),
            Section("scales", rows * g * FP16_BYTES),
            Section("qzeros", rows * packed_bytes(g, bits)),
        ]

    def raw(self) -> dict[str, Any]:
        return {"qweight": self.qweight, "scales": fp16_bytes(self.scales), "qzeros": self.qzeros}

    @classmethod
    def from_raw(cls, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> GroupQuantWeight:
        bits, gs, rows, cols = meta["bits"], meta["group_size"], meta["out_features"], meta["in_features"]
        g = -(-cols // gs)
        return cls(
            bits,
            gs,
            rows,
            cols,
            np.asarray(raw["qweight"]).reshape(rows, -1),
            fp16_from_bytes(raw["scales"], (rows, g)),
            np.asarray(raw["qzeros"]).reshape(rows, -1),
        )


# ---- group parameters of the sparse formats -------------------------------------------------------------------
def _n_groups(cols: int, group_size: int, bits: int) -> int:
    """Scale/zero-point groups per row: ceil(cols / group_size) for int codes, none for fp16 values (bits = 16)."""
    return -(-cols // group_size) if bits < 16 else 0


class _SparseGroupWeight(Packed):
    """What the sparse weight formats share: int codes (bits < 16) with fp16 scales and packed zero points per group
    of `group_size` dense input columns, or fp16 values (bits = 16, no groups); the metadata that describes them; the
    scales and qzeros sections. A subclass is a frozen dataclass with fields bits, group_size, out_features,
    in_features, scales, qzeros."""

    @property
    def quantized(self) -> bool:
        return self.bits < 16

    @property
    def n_groups(self) -> int:
        return _n_groups(self.in_features, self.group_size, self.bits)

    def meta(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "bits": self.bits,
            "group_size": self.group_size,
            "out_features": self.out_features,
            "in_features": self.in_features,
        }

    @classmethod
    def _checked_params(cls, meta: Mapping[str, Any]) -> tuple[int, int, int, int]:
        """(bits, group_size, rows, cols) from `meta`, validated; FormatError on a bad value."""
        what = cls.FORMAT
        bits = meta_choice(meta, "bits", QUANT_BITS + (16,), what)
        gs, rows, cols = (meta_int(meta, k, what, 1) for k in ("group_size", "out_features", "in_features"))
        return bits, gs, rows, cols

    @staticmethod
    def _group_sections(rows: int, cols: int, gs: int, bits: int) -> list[Section]:
        g = _n_groups(cols, gs, bits)
        return [Section("scales", rows * g * FP16_BYTES), Section("qzeros", rows * packed_bytes(g, bits))]

    @staticmethod
    def _raw_params(meta: Mapping[str, Any]) -> tuple[int, int, int, int]:
        """(bits, group_size, rows, cols) from metadata that `layout` has already checked."""
        return meta["bits"], meta["group_size"], meta["out_features"], meta["in_features"]

    @staticmethod
    def _group_arrays(
        raw: Mapping[str, Any], rows: int, cols: int, gs: int, bits: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scales float16 [rows, G], qzeros uint8 [rows, packed]) from the raw sections."""
        g = _n_groups(cols, gs, bits)
        return fp16_from_bytes(raw["scales"], (rows, g)), np.asarray(raw["qzeros"]).reshape(rows, -1)


# ---- 2:4 semi-structured -------------------------------------------------------------------------------------
def prune_2_4(w: np.ndarray) -> np.ndarray:
    """Keep-mask [out, in] keeping the 2 largest-magnitude of every 4 consecutive input columns (ties: lower
    index first)."""
    rows, cols = w.shape
    if cols % 4:
        raise SpecError(f"2:4 pruning needs in_features divisible by 4, got {cols}; pad the layer")
    blocks = np.abs(w).reshape(rows, cols // 4, 4)
    order = np.argsort(-blocks, axis=2, kind="stable")[..., :2]
    mask = np.zeros(blocks.shape, bool)
    np.put_along_axis(mask, order, True, axis=2)
    return mask.reshape(rows, cols)


# The C(4, 2) = 6 ways to keep 2 of 4 columns, lexicographic: a 2:4 block's 3-bit pattern code indexes this table
# (3 bits per block instead of two 2-bit positions, so 2:4 W2 costs 7 bits per 4 weights, below dense W2's 8).
PATTERNS_2_4 = np.array([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)], np.int64)
_PATTERN_OF = np.full(16, 255, np.uint8)
_PATTERN_OF[4 * PATTERNS_2_4[:, 0] + PATTERNS_2_4[:, 1]] = np.arange(6)


@dataclass(frozen=True, eq=False)
class Sparse24Weight(_SparseGroupWeight):
    """2:4 sparse W[out, in]: per 4 dense input columns two kept values (in column order) and their metadata.

    qvalues: uint8 [out, packed_bytes(in/2, bits)] kept codes (bits < 16) or fp16 patterns (bits = 16);
    indices (``index_format`` "pattern", the default): uint8 [out, packed_bytes(in/4, 3)] pattern code 0..5 of each
    block of 4 (PATTERNS_2_4: the kept positions, ascending); ("positions"): uint8 [out, packed_bytes(in/2, 2)] the
    2-bit column within its block of each kept value, ascending within a block;
    scales float16 [out, G], qzeros uint8 [out, packed_bytes(G, bits)] (empty when bits = 16). Groups run over
    `group_size` dense input columns; a kept value belongs to the group of its dense column.
    """

    bits: int
    group_size: int
    out_features: int
    in_features: int
    qvalues: np.ndarray
    indices: np.ndarray
    scales: np.ndarray
    qzeros: np.ndarray
    index_format: str = "pattern"

    FORMAT = "weight.sparse_2_4"

    @classmethod
    def from_float(
        cls,
        w: np.ndarray,
        bits: int = 2,
        group_size: int = 64,
        mask: np.ndarray | None = None,
        index_format: str = "pattern",
    ) -> Sparse24Weight:
        """Prune W by magnitude (or with a given 2:4 `mask`) and quantize the kept values."""
        w = _check_matrix(w, cls.FORMAT)
        _check_bits(bits, QUANT_BITS + (16,), cls.FORMAT)
        mask = prune_2_4(w) if mask is None else np.asarray(mask, bool)
        return cls.from_dense(w, mask, bits, group_size, index_format)

    @classmethod
    def from_dense(
        cls, w: np.ndarray, mask: np.ndarray, bits: int, group_size: int, index_format: str = "pattern"
    ) -> Sparse24Weight:
        rows, cols = w.shape
        if mask.shape != w.shape or cols % 4 or np.any(mask.reshape(rows, -1, 4).sum(axis=2) != 2):
            raise SpecError(f"{cls.FORMAT}: mask must keep exactly 2 of every 4 input columns of W{list(w.shape)}")
        if bits == 16:
            vals = w[mask].reshape(rows, -1).astype(np.float16).view(np.uint16)
            scales, zeros = np.zeros((rows, 0), np.float16), np.zeros((rows, 0), np.uint8)
        else:
            codes, scales, zeros = quantize_groups(w, mask, bits, group_size)
            vals = codes[mask].reshape(rows, -1)
        return cls(
            bits,
            group_size,
            rows,
            cols,
            pack_bits(vals, bits),
            cls.pack_indices(mask, index_format),
            scales,
            pack_bits(zeros, bits) if bits < 16 else np.zeros((rows, 0), np.uint8),
            index_format,
        )

    @staticmethod
    def pack_indices(mask: np.ndarray, index_format: str = "pattern") -> np.ndarray:
        """The `indices` array of a valid 2:4 mask bool [out, in]: packed 3-bit pattern codes, or 2-bit positions."""
        _check_index_format(index_format)
        rows, cols = mask.shape
        kept_cols = np.nonzero(mask)[1].reshape(rows, cols // 4, 2) % 4  # ascending within each block
        if index_format == "positions":
            return pack_bits(kept_cols.reshape(rows, cols // 2).astype(np.uint8), 2)
        return pack_bits(_PATTERN_OF[4 * kept_cols[..., 0] + kept_cols[..., 1]], 3)

    def kept_columns(self) -> np.ndarray:
        """int64 [out, in/2] dense column of each kept value."""
        nb = self.in_features // 4
        if self.index_format == "positions":
            pos = _positions(self.indices, nb)
        else:
            pos = PATTERNS_2_4[_pattern_codes(self.indices, nb)]  # [out, nb, 2]
        return (4 * np.arange(nb)[:, None] + pos).reshape(self.out_features, 2 * nb)

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "index": self.index_format}

    def kept_codes(self) -> np.ndarray:
        """[out, in/2] kept codes (uint8) or fp16 bit patterns (uint16)."""
        return unpack_bits(self.qvalues, self.in_features // 2, self.bits)

    def zeros(self) -> np.ndarray:
        return unpack_bits(self.qzeros, self.n_groups, self.bits) if self.quantized else self.qzeros

    def mask(self) -> np.ndarray:
        m = np.zeros((self.out_features, self.in_features), bool)
        np.put_along_axis(m, self.kept_columns(), True, axis=1)
        return m

    def dequantize(self) -> np.ndarray:
        """float64 [out, in] with pruned entries 0."""
        cols = self.kept_columns()
        kc = self.kept_codes()
        if self.quantized:
            g = cols // self.group_size
            z = np.take_along_axis(self.zeros().astype(np.float64), g, axis=1)
            s = np.take_along_axis(self.scales.astype(np.float64), g, axis=1)
            vals = (kc - z) * s
        else:
            vals = kc.view(np.float16).astype(np.float64)
        out = np.zeros((self.out_features, self.in_features))
        np.put_along_axis(out, cols, vals, axis=1)
        return out

    # ---- serialization ----
    @classmethod
    def layout(cls, meta: Mapping[str, Any]) -> list[Section]:
        bits, gs, rows, cols = cls._checked_params(meta)
        if cols % 4:
            raise FormatError(f"{cls.FORMAT}: in_features {cols} is not divisible by 4")
        k = cols // 2
        index = meta.get("index", "pattern")
        if index not in ("pattern", "positions"):
            raise FormatError(f"{cls.FORMAT}: index {short(index)} is not 'pattern' or 'positions'")
        idx_bytes = packed_bytes(k, 2) if index == "positions" else packed_bytes(cols // 4, 3)
        return [
            Section("qvalues", rows * packed_bytes(k, bits)),
            Section("indices", rows * idx_bytes),
            *cls._group_sections(rows, cols, gs, bits),
        ]

    def raw(self) -> dict[str, Any]:
        return {
            "qvalues": self.qvalues,
            "indices": self.indices,
            "scales": fp16_bytes(self.scales),
            "qzeros": self.qzeros,
        }

    @classmethod
    def from_raw(cls, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Sparse24Weight:
        bits, gs, rows, cols = cls._raw_params(meta)
        idx = np.asarray(raw["indices"]).reshape(rows, -1)
        index = meta.get("index", "pattern")
        if index == "positions":
            _positions(idx, cols // 4)  # validates
        else:
            _pattern_codes(idx, cols // 4)
        return cls(
            bits,
            gs,
            rows,
            cols,
            np.asarray(raw["qvalues"]).reshape(rows, -1),
            idx,
            *cls._group_arrays(raw, rows, cols, gs, bits),
            index,
        )


def _check_index_format(index_format: str) -> None:
    if index_format not in ("pattern", "positions"):
        raise SpecError(f"2:4 index format {index_format!r} is not supported; use 'pattern' or 'positions'")


def _positions(indices: np.ndarray, n_blocks: int) -> np.ndarray:
    """int64 [out, n_blocks, 2] kept columns within each block from 2-bit positions; FormatError unless ascending."""
    pos = unpack_bits(indices, 2 * n_blocks, 2).astype(np.int64).reshape(indices.shape[0], n_blocks, 2)
    if np.any(pos[..., 0] >= pos[..., 1]):
        raise FormatError(
            f"{Sparse24Weight.FORMAT}: 2:4 positions must name two different columns of each block, ascending; "
            "the buffer is corrupt"
        )
    return pos


def _pattern_codes(indices: np.ndarray, n_blocks: int) -> np.ndarray:
    """int64 [out, n_blocks] 2:4 pattern codes; FormatError if any is not 0..5."""
    codes = unpack_bits(indices, n_blocks, 3).astype(np.int64)
    if np.any(codes >= len(PATTERNS_2_4)):
        raise FormatError(
            f"{Sparse24Weight.FORMAT}: 2:4 pattern codes must be 0..5 (one of the 6 ways to keep 2 of "
            "4); the buffer is corrupt"
        )
    return codes


# ---- unstructured, bitmap tiles ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class BitmapSparseWeight(_SparseGroupWeight):
    """Unstructured-sparse W[out, in]: each row cut into tiles of 64 dense columns (the last one partial, its
    bitmap bits past the row end clear); a tile is a uint64 bitmap + its kept codes packed at `bits`, byte-padded.

    bitmaps: uint64 [out, n_tiles]; payload: uint8, all tiles' packed values in row-major tile order;
    scales/qzeros as GroupQuantWeight, computed over kept values only (empty when bits = 16).
    """

    bits: int
    group_size: int
    out_features: int
    in_features: int
    bitmaps: np.ndarray
    payload: np.ndarray
    scales: np.ndarray
    qzeros: np.ndarray

    FORMAT = "weight.bitmap_sparse"

    @classmethod
    def from_float(
        cls,
        w: np.ndarray,
        sparsity: float | None = None,
        bits: int = 2,
        group_size: int = 64,
        mask: np.ndarray | None = None,
    ) -> BitmapSparseWeight:
        """Prune each 64-column tile to ``64 - round(64 * sparsity)`` largest-magnitude values (the partial last
        tile in proportion, as CompressionScheme.matrix_bytes assumes), or use the given keep-`mask`."""
        w = _check_matrix(w, cls.FORMAT)
        _check_bits(bits, QUANT_BITS + (16,), cls.FORMAT)
        rows, cols = w.shape
        if mask is None:
            if sparsity is None or not 0 <= sparsity < 1:
                raise SpecError(f"{cls.FORMAT}: give 0 <= sparsity < 1 or a keep-mask, got sparsity={sparsity}")
            n_tiles = -(-cols // BITMAP_TILE)
            pad = n_tiles * BITMAP_TILE - cols
            mag = np.pad(np.abs(w), ((0, 0), (0, pad)), constant_values=-1.0).reshape(rows, n_tiles, BITMAP_TILE)
            width = np.full(n_tiles, BITMAP_TILE)
            width[-1] = cols - (n_tiles - 1) * BITMAP_TILE
            keep = width - np.round(width * sparsity).astype(np.int64)
            rank = np.argsort(np.argsort(-mag, axis=2, kind="stable"), axis=2, kind="stable")
            mask = (rank < keep[None, :, None]).reshape(rows, -1)[:, :cols]
        mask = np.asarray(mask, bool)
        if mask.shape != w.shape:
            raise SpecError(f"{cls.FORMAT}: mask shape {mask.shape} differs from W {w.shape}")
        return cls.from_dense(w, mask, bits, group_size)

    @classmethod
    def from_dense(cls, w: np.ndarray, mask: np.ndarray, bits: int, group_size: int) -> BitmapSparseWeight:
        rows, cols = w.shape
        if bits == 16:
            codes = np.asarray(w, np.float64).astype(np.float16).view(np.uint16)
            scales, zeros = np.zeros((rows, 0), np.float16), np.zeros((rows, 0), np.uint8)
        else:
            codes, scales, z = quantize_groups(w, mask, bits, group_size)
            zeros = pack_bits(z, bits)
        n_tiles = -(-cols // BITMAP_TILE)
        pad = n_tiles * BITMAP_TILE - cols
        mt = np.pad(mask, ((0, 0), (0, pad))).reshape(-1, BITMAP_TILE)
        ct = np.pad(codes, ((0, 0), (0, pad))).reshape(-1, BITMAP_TILE)
        bitmaps, payload = pack_tiles(mt, ct, bits)
        return cls(bits, group_size, rows, cols, bitmaps.reshape(rows, n_tiles), payload, scales, zeros)

    @property
    def nnz_per_tile(self) -> list[int]:
        """Kept values of each tile, row-major (the argument CompressionScheme.matrix_bytes takes)."""
        return popcount64(self.bitmaps).reshape(-1).tolist()

    def _dense_codes(self) -> tuple[np.ndarray, np.ndarray]:
        mask, codes = unpack_tiles(self.bitmaps, self.payload, self.bits, self.FORMAT)
        r, c = self.out_features, self.in_features
        return mask.reshape(r, -1)[:, :c], codes.reshape(r, -1)[:, :c]

    def mask(self) -> np.ndarray:
        return self._dense_codes()[0]

    def dequantize(self) -> np.ndarray:
        """float64 [out, in] with pruned entries 0."""
        mask, codes = self._dense_codes()
        if self.quantized:
            z = unpack_bits(self.qzeros, self.n_groups, self.bits)
            vals = _dequant(codes, self.scales, z, self.group_size)
        else:
            vals = codes.view(np.float16).astype(np.float64)
        return np.where(mask, vals, 0.0)

    # ---- serialization ----
    @classmethod
    def layout(cls, meta: Mapping[str, Any]) -> list[Section]:
        bits, gs, rows, cols = cls._checked_params(meta)
        return [
            Section("tiles", n_tiles=rows * -(-cols // BITMAP_TILE), bits=bits),
            *cls._group_sections(rows, cols, gs, bits),
        ]

    def raw(self) -> dict[str, Any]:
        return {
            "tiles": (self.bitmaps.reshape(-1), self.payload),
            "scales": fp16_bytes(self.scales),
            "qzeros": self.qzeros,
        }

    @classmethod
    def from_raw(cls, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> BitmapSparseWeight:
        bits, gs, rows, cols = cls._raw_params(meta)
        n_tiles = -(-cols // BITMAP_TILE)
        bitmaps, payload = raw["tiles"]
        mask, _ = unpack_tiles(bitmaps, payload, bits, cls.FORMAT)  # validates popcount vs payload length
        tail = cols - (n_tiles - 1) * BITMAP_TILE
        if np.any(mask.reshape(rows, n_tiles, BITMAP_TILE)[:, -1, tail:]):
            raise FormatError(
                f"{cls.FORMAT}: a last-tile bitmap marks columns past in_features={cols}; the bitmaps are corrupt"
            )
        return cls(
            bits,
            gs,
            rows,
            cols,
            np.asarray(bitmaps).reshape(rows, n_tiles),
            np.asarray(payload),
            *cls._group_arrays(raw, rows, cols, gs, bits),
        )
