"""The serialization machinery every packed object shares: sections -> bytes / uint8 arrays and back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from base.errors import FormatError
from quant.formats._bits import check_array, interleave_tiles, split_tile_stream

__all__ = ["Section", "Packed", "meta_int", "meta_choice"]


@dataclass(frozen=True)
class Section:
    """One part of a packed object's byte stream: `nbytes` plain bytes, or `n_tiles` bitmap tiles of `bits` values."""

    name: str
    nbytes: int = 0
    n_tiles: int = 0
    bits: int = 0

    @property
    def tiled(self) -> bool:
        return self.bits > 0


def meta_int(meta: Mapping[str, Any], key: str, what: str, lo: int = 0) -> int:
    v = meta.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise FormatError(
            f"{what}: metadata {key!r} must be an integer >= {lo}, got {v!r}; the metadata is "
            "corrupt or from another version"
        )
    return v


def meta_choice(meta: Mapping[str, Any], key: str, allowed: tuple, what: str):
    v = meta.get(key)
    if v not in allowed or isinstance(v, bool):
        raise FormatError(f"{what}: metadata {key!r} must be one of {allowed}, got {v!r}")
    return v


class Packed:
    """Base of packed formats. A subclass defines `FORMAT`, `meta()`, `layout(meta)`, `raw()` and `from_raw()`.

    `raw()` maps each plain section name to a flat uint8 array and each tiled section name to
    (bitmaps uint64 [n_tiles], payload uint8); `to_bytes()` concatenates the sections in `layout` order, a tiled
    section as its interleaved tile stream (bitmap, values, bitmap, values...).
    """

    FORMAT: ClassVar[str]

    # ---- to be provided --------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def layout(cls, meta: Mapping[str, Any]) -> list[Section]:  # pragma: no cover - abstract
        raise NotImplementedError

    def raw(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_raw(cls, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Self:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- shared ----------------------------------------------------------------------------------------------
    @classmethod
    def _check_meta(cls, meta: Mapping[str, Any]) -> None:
        if not isinstance(meta, Mapping) or meta.get("format") != cls.FORMAT:
            got = meta.get("format") if isinstance(meta, Mapping) else type(meta).__name__
            raise FormatError(
                f"metadata names format {got!r}, expected {cls.FORMAT!r}; load it with the class that wrote it"
            )

    def to_bytes(self) -> bytes:
        """The documented byte layout (see quant.formats); its length is what CompressionScheme computes."""
        raw = self.raw()
        parts = []
        for s in self.layout(self.meta()):
            if s.tiled:
                parts.append(interleave_tiles(*raw[s.name], s.bits))
            else:
                parts.append(np.asarray(raw[s.name], np.uint8).reshape(-1))
        return b"".join(p.tobytes() for p in parts)

    @property
    def nbytes(self) -> int:
        """Bytes of `to_bytes()` (computed without building it)."""
        raw = self.raw()
        total = 0
        for s in self.layout(self.meta()):
            total += s.n_tiles * 8 + raw[s.name][1].size if s.tiled else s.nbytes
        return total

    @classmethod
    def from_bytes(cls, buf: bytes | np.ndarray, meta: Mapping[str, Any]) -> Self:
        """Inverse of `to_bytes`; raises FormatError on a truncated or over-long buffer or inconsistent bitmaps."""
        cls._check_meta(meta)
        arr = np.frombuffer(bytes(buf), np.uint8) if not isinstance(buf, np.ndarray) else buf.reshape(-1)
        if arr.dtype != np.uint8:
            raise FormatError(f"{cls.FORMAT}: byte buffer has dtype {arr.dtype}; pass bytes or a uint8 array")
        raw: dict[str, Any] = {}
        pos = 0
        for s in cls.layout(meta):
            if s.tiled:
                bm, payload, used = split_tile_stream(arr[pos:], s.n_tiles, s.bits, f"{cls.FORMAT}.{s.name}")
                raw[s.name] = (bm, payload)
                pos += used
            else:
                if pos + s.nbytes > arr.size:
                    raise FormatError(
                        f"{cls.FORMAT}: buffer truncated in section {s.name!r} (needs {pos + s.nbytes} "
                        f"bytes, has {arr.size}); re-export the packed object"
                    )
                raw[s.name] = arr[pos : pos + s.nbytes]
                pos += s.nbytes
        if pos != arr.size:
            raise FormatError(
                f"{cls.FORMAT}: buffer has {arr.size - pos} trailing bytes after the last section; "
                "metadata and buffer do not belong together"
            )
        return cls.from_raw(meta, raw)

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(flat uint8 arrays by name, JSON-able metadata) for safetensors. A tiled section `x` becomes
        `x.bitmaps` (8 little-endian bytes per tile) and `x.values` (all tiles' packed values)."""
        raw = self.raw()
        out: dict[str, np.ndarray] = {}
        for s in self.layout(self.meta()):
            if s.tiled:
                bm, payload = raw[s.name]
                out[f"{s.name}.bitmaps"] = np.ascontiguousarray(np.asarray(bm, "<u8")).view(np.uint8).reshape(-1)
                out[f"{s.name}.values"] = np.asarray(payload, np.uint8).reshape(-1)
            else:
                out[s.name] = np.asarray(raw[s.name], np.uint8).reshape(-1)
        return out, self.meta()

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Self:
        """Inverse of `to_arrays`, validating dtype, shape and bitmap popcounts."""
        cls._check_meta(meta)
        what = cls.FORMAT
        raw: dict[str, Any] = {}
        for s in cls.layout(meta):
            if s.tiled:
                bm = check_array(arrays, f"{s.name}.bitmaps", (s.n_tiles * 8,), what)
                vals = arrays.get(f"{s.name}.values")
                if vals is None or np.asarray(vals).dtype != np.uint8 or np.asarray(vals).ndim != 1:
                    raise FormatError(f"{what}: array '{s.name}.values' must be a 1-D uint8 array")
                raw[s.name] = (np.ascontiguousarray(bm).view("<u8").astype(np.uint64), np.asarray(vals))
            else:
                raw[s.name] = check_array(arrays, s.name, (s.nbytes,), what)
        return cls.from_raw(meta, raw)
