"""Activation format: symmetric int8 per token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from base.errors import FormatError, SpecError
from quant.formats._base import Packed, Section, meta_int
from quant.formats._bits import fp16_bytes, fp16_from_bytes
from quant.scheme import FP16_BYTES, packed_bytes

__all__ = ["Int8Activation"]

ACT_QMAX = 127  # symmetric int8: codes in [-127, 127]; -128 is never produced (so negation stays in range)


@dataclass(frozen=True, eq=False)
class Int8Activation(Packed):
    """X[n_tokens, width] as int8 codes with one fp16 scale per token: x = code * scale.

    scale = max|x_token| / 127 rounded to fp16 (1.0 for an all-zero token); code = clip(round(x / scale), -127, 127).
    """

    values: np.ndarray  # int8 [n_tokens, width]
    scales: np.ndarray  # float16 [n_tokens]

    FORMAT = "act.int8_per_token"

    @classmethod
    def from_float(cls, x: np.ndarray) -> Int8Activation:
        x = np.asarray(x)
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
            raise SpecError(
                f"{cls.FORMAT}: expected a float array X[n_tokens, width], got shape {x.shape} dtype "
                f"{x.dtype}; reshape a vector with x[None, :]"
            )
        if not np.all(np.isfinite(x)):
            raise SpecError(f"{cls.FORMAT}: activations contain NaN or inf")
        x = x.astype(np.float64)
        scale = (np.abs(x).max(axis=1, initial=0.0) / ACT_QMAX).astype(np.float16)
        if not np.all(np.isfinite(scale)):
            raise SpecError(f"{cls.FORMAT}: |x| exceeds the fp16 scale range (65504 * 127)")
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(x / scale.astype(np.float64)[:, None]), -ACT_QMAX, ACT_QMAX).astype(np.int8)
        return cls(q, scale)

    def __post_init__(self) -> None:
        v, s = np.asarray(self.values), np.asarray(self.scales)
        if v.dtype != np.int8 or v.ndim != 2 or s.dtype != np.float16 or s.shape != (v.shape[0],):
            raise FormatError(
                f"{self.FORMAT}: needs values int8 [n, width] and scales float16 [n], got "
                f"{v.dtype}{list(v.shape)} and {s.dtype}{list(s.shape)}"
            )

    @property
    def n_tokens(self) -> int:
        return self.values.shape[0]

    @property
    def width(self) -> int:
        return self.values.shape[1]

    def dequantize(self) -> np.ndarray:
        """float64 [n_tokens, width]."""
        return self.values.astype(np.float64) * self.scales.astype(np.float64)[:, None]

    def meta(self) -> dict[str, Any]:
        return {"format": self.FORMAT, "n_tokens": self.n_tokens, "width": self.width}

    @classmethod
    def layout(cls, meta: Mapping[str, Any]) -> list[Section]:
        n, w = meta_int(meta, "n_tokens", cls.FORMAT), meta_int(meta, "width", cls.FORMAT, 1)
        return [Section("values", n * packed_bytes(w, 8)), Section("scales", n * FP16_BYTES)]

    def raw(self) -> dict[str, Any]:
        return {
            "values": np.ascontiguousarray(self.values).view(np.uint8).reshape(-1),
            "scales": fp16_bytes(self.scales),
        }

    @classmethod
    def from_raw(cls, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Int8Activation:
        n, w = meta["n_tokens"], meta["width"]
        return cls(
            np.ascontiguousarray(raw["values"]).view(np.int8).reshape(n, w), fp16_from_bytes(raw["scales"], (n,))
        )
