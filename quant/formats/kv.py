"""KV-cache formats of one layer: dense fp16, KIVI-style int (KV4), Mustafar bitmap-sparse (fp16 or int values).

All caches hold K and V of shape [num_heads, n_tokens, head_dim] (num_heads = KV heads). The oldest
`n_compressed` tokens (a multiple of CHUNK_TOKENS = 64, chosen by CompressionScheme.kv_split) are compressed in
chunks of 64 tokens; the newest ``n_tokens - n_compressed`` stay dense fp16 (`k_recent`, `v_recent`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from base.errors import FormatError, SpecError
from quant.formats._base import Packed, Section, meta_choice, meta_int
from quant.formats._bits import (
    fp16_bytes,
    fp16_from_bytes,
    from_codes,
    pack_bits,
    pack_tiles,
    to_codes,
    unpack_bits,
    unpack_tiles,
)
from quant.scheme import BITMAP_TILE, CHUNK_TOKENS, FP16_BYTES, CompressionScheme, kept_per_token, packed_bytes

__all__ = ["DenseKV", "QuantKV", "BitmapKV", "KVCache", "compress_kv", "quantize_symmetric"]

KV_INT_BITS = (2, 4, 8)


def _check_kv(k: np.ndarray, v: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    k, v = np.asarray(k), np.asarray(v)
    if (
        k.ndim != 3
        or k.shape != v.shape
        or not (np.issubdtype(k.dtype, np.floating) and np.issubdtype(v.dtype, np.floating))
    ):
        raise SpecError(
            f"{what}: K and V must be float arrays of equal shape [kv_heads, tokens, head_dim], got "
            f"K{list(k.shape)} {k.dtype} and V{list(v.shape)} {v.dtype}"
        )
    if k.shape[1] < 1 or k.shape[2] < 1:
        raise SpecError(f"{what}: the cache needs at least one token and head_dim >= 1, got {list(k.shape)}")
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(v))):
        raise SpecError(f"{what}: K/V contain NaN or inf")
    return k.astype(np.float64), v.astype(np.float64)


def _check_split(n_tokens: int, n_compressed: int, what: str) -> None:
    if n_compressed % CHUNK_TOKENS or not 0 <= n_compressed <= n_tokens:
        raise SpecError(
            f"{what}: n_compressed={n_compressed} must be a multiple of {CHUNK_TOKENS} in [0, "
            f"{n_tokens}]; take it from CompressionScheme.kv_split"
        )


def quantize_symmetric(x: np.ndarray, bits: int, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric signed quantization of `x` [..., n] in groups of `group_size` along the last axis (the last group
    may be partial). scale = max|x| / (2**(bits-1) - 1) rounded to fp16 (1.0 for an all-zero group);
    code = clip(round(x / scale), -qmax, qmax). Returns (codes int8 [..., n], scales fp16 [..., ceil(n/group)])."""
    n = x.shape[-1]
    qmax = (1 << (bits - 1)) - 1
    g = -(-n // group_size)
    pad = g * group_size - n
    xg = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)]).reshape(*x.shape[:-1], g, group_size)
    scale = (np.abs(xg).max(axis=-1) / qmax).astype(np.float16)
    if not np.all(np.isfinite(scale)):
        raise SpecError("KV values exceed the fp16 scale range; the cache holds values > 65504 * qmax")
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint(xg / scale.astype(np.float64)[..., None]), -qmax, qmax)
    return codes.reshape(*x.shape[:-1], g * group_size)[..., :n].astype(np.int8), scale


def _expand_groups(scales: np.ndarray, n: int, group_size: int) -> np.ndarray:
    """scales [..., G] -> per element [..., n] (float64)."""
    return scales.astype(np.float64)[..., np.arange(n) // group_size]


class KVCache(Packed):
    """Common interface: shapes, the dense window and `dequantize()` -> (K, V) float64 [heads, tokens, head_dim]."""

    num_heads: int
    n_tokens: int
    head_dim: int
    n_compressed: int
    k_recent: np.ndarray
    v_recent: np.ndarray

    @property
    def n_chunks(self) -> int:
        return self.n_compressed // CHUNK_TOKENS

    @property
    def n_recent(self) -> int:
        return self.n_tokens - self.n_compressed

    def _compressed_kv(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def dequantize(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, V) float64 [num_heads, n_tokens, head_dim]: what every kernel must compute with."""
        kc, vc = self._compressed_kv()
        k = np.concatenate([kc, self.k_recent.astype(np.float64)], axis=1)
        v = np.concatenate([vc, self.v_recent.astype(np.float64)], axis=1)
        return k, v

    def _base_meta(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "num_heads": self.num_heads,
            "n_tokens": self.n_tokens,
            "head_dim": self.head_dim,
            "n_compressed": self.n_compressed,
        }

    @classmethod
    def _dims(cls, meta: Mapping[str, Any]) -> tuple[int, int, int, int, int]:
        """(H, T, D, C, T_recent) from metadata, validated."""
        w = cls.FORMAT
        h, t, d = meta_int(meta, "num_heads", w, 1), meta_int(meta, "n_tokens", w, 1), meta_int(meta, "head_dim", w, 1)
        c = meta_int(meta, "n_compressed", w, 0)
        if c % CHUNK_TOKENS or c > t:
            raise FormatError(f"{w}: n_compressed={c} must be a multiple of {CHUNK_TOKENS} and <= n_tokens={t}")
        return h, t, d, c // CHUNK_TOKENS, t - c

    @staticmethod
    def _recent_sections(h: int, tr: int, d: int) -> list[Section]:
        return [Section("k_recent", h * tr * d * FP16_BYTES), Section("v_recent", h * tr * d * FP16_BYTES)]


# ---- dense fp16 ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DenseKV(KVCache):
    """Uncompressed cache: K then V, fp16 [num_heads, n_tokens, head_dim] each (token-major per head)."""

    k_recent: np.ndarray
    v_recent: np.ndarray
    FORMAT = "kv.dense_fp16"

    @classmethod
    def from_float(cls, k: np.ndarray, v: np.ndarray) -> DenseKV:
        k, v = _check_kv(k, v, cls.FORMAT)
        return cls(k.astype(np.float16), v.astype(np.float16))

    num_heads = property(lambda self: self.k_recent.shape[0])  # type: ignore[assignment]
    n_tokens = property(lambda self: self.k_recent.shape[1])  # type: ignore[assignment]
    head_dim = property(lambda self: self.k_recent.shape[2])  # type: ignore[assignment]
    n_compressed = property(lambda self: 0)  # type: ignore[assignment]

    def _compressed_kv(self):
        z = np.zeros((self.num_heads, 0, self.head_dim))
        return z, z

    def meta(self) -> dict[str, Any]:
        return self._base_meta()

    @classmethod
    def layout(cls, meta: Mapping[str, Any]) -> list[Section]:
        h, t, d, c, tr = cls._dims(meta)
        if c:
            raise FormatError(f"{cls.FORMAT}: a dense cache has n_compressed=0, got {c * CHUNK_TOKENS}")
        return cls._recent_sections(h, tr, d)

    def raw(self) -> dict[str, Any]:
        return {"k_recent": fp16_bytes(self.k_recent), "v_recent": fp16_bytes(self.v_recent)}

    @classmethod
    def from_raw(cls, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> DenseKV:
        shape = (meta["num_heads"], meta["n_tokens"], meta["head_dim"])
        return cls(fp16_from_bytes(raw["k_recent"], shape), fp16_from_bytes(raw["v_recent"], shape))


# ---- KIVI-style int ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class QuantKV(KVCache):
    """Symmetric int K/V with fp16 scales (KIVI grouping) plus a dense fp16 recent window.

    kq: uint8 [H, C, packed_bytes(64*D, bits)]: per chunk, K channel-major (element (channel c, token t) at index
        c*64 + t), two's complement codes packed LSB-first; ks: fp16 [H, C, D, ceil(64/group)] (per channel, per
        group of `group_size` tokens of the chunk).
    vq: uint8 [H, C, packed_bytes(64*D, bits)]: per chunk, V token-major (element (t, c) at t*D + c);
        vs: fp16 [H, C, 64, ceil(D/group)] (per token, per group of `group_size` channels).
    """

    bits: int
    group_size: int
    num_heads: int
    n_tokens: int
    head_dim: int
    n_compressed: int
    kq: np.ndarray
    ks: np.ndarray
    vq: np.ndarray
    vs: np.ndarray
    k_recent: np.ndarray
    v_recent: np.ndarray
    FORMAT = "kv.quant"

    @classmethod
    def from_float(
        cls, k: np.ndarray, v: np.ndarray, bits: int = 4, group_size: int = 64, n_compressed: int | None = None
    ) -> QuantKV:
        """Quantize the oldest `n_compressed` tokens (default: all whole chunks) and keep the rest fp16."""
        k, v = _check_kv(k, v, cls.FORMAT)
        if bits not in KV_INT_BITS:
            raise SpecError(f"{cls.FORMAT}: kv bits={bits} is not supported; use one of {KV_INT_BITS}")
        if group_size < 1:
            raise SpecError(f"{cls.FORMAT}: group_size must be >= 1, got {group_size}")
        h, t, d = k.shape
        tc = t // CHUNK_TOKENS * CHUNK_TOKENS if n_compressed is None else n_compressed
        _check_split(t, tc, cls.FORMAT)
        c = tc // CHUNK_TOKENS
        kc = k[:, :tc].reshape(h, c, CHUNK_TOKENS, d).transpose(0, 1, 3, 2)  # [H, C, D, 64] channel-major
        vc = v[:, :tc].reshape(h, c, CHUNK_TOKENS, d)  # [H, C, 64, D] token-major
        kcodes, ks = quantize_symmetric(kc, bits, group_size)
        vcodes, vs = quantize_symmetric(vc, bits, group_size)
        kq = pack_bits(to_codes(kcodes, bits).reshape(h, c, CHUNK_TOKENS * d), bits)
        vq = pack_bits(to_codes(vcodes, bits).reshape(h, c, CHUNK_TOKENS * d), bits)
        return cls(
            bits, group_size, h, t, d, tc, kq, ks, vq, vs, k[:, tc:].astype(np.float16), v[:, tc:].astype(np.float16)
        )

    def k_codes(self) -> np.ndarray:
        """int8 [H, C, D, 64] signed K codes (channel-major per chunk)."""
        h, c, d = self.num_heads, self.n_chunks, self.head_dim
        return from_codes(unpack_bits(self.kq, CHUNK_TOKENS * d, self.bits), self.bits).reshape(h, c, d, CHUNK_TOKENS)

    def v_codes(self) -> np.ndarray:
        """int8 [H, C, 64, D] signed V codes (token-major per chunk)."""
        h, c, d = self.num_heads, self.n_chunks, self.head_dim
        return from_codes(unpack_bits(self.vq, CHUNK_TOKENS * d, self.bits), self.bits).reshape(h, c, CHUNK_TOKENS, d)

    def _compressed_kv(self):
        h, c, d = self.num_heads, self.n_chunks, self.head_dim
        k = self.k_codes() * _expand_groups(self.ks, CHUNK_TOKENS, self.group_size)  # [H, C, D, 64]
        v = self.v_codes() * _expand_groups(self.vs, d, self.group_size)  # [H, C, 64, D]
        return (k.transpose(0, 1, 3, 2).reshape(h, c * CHUNK_TOKENS, d), v.reshape(h, c * CHUNK_TOKENS, d))

    def meta(self) -> dict[str, Any]:
        return {**self._base_meta(), "bits": self.bits, "group_size": self.group_size}

    @classmethod
    def _groups(cls, meta: Mapping[str, Any], d: int) -> tuple[int, int, int]:
        bits = meta_choice(meta, "bits", KV_INT_BITS, cls.FORMAT)
        gs = meta_int(meta, "group_size", cls.FORMAT, 1)
        return bits, -(-CHUNK_TOKENS // gs), -(-d // gs)

    @classmethod
    def layout(cls, meta: Mapping[str, Any]) -> list[Section]:
        h, t, d, c, tr = cls._dims(meta)
        bits, ngk, ngv = cls._groups(meta, d)
        chunk = packed_bytes(CHUNK_TOKENS * d, bits)
        return [
            Section("kq", h * c * chunk),
            Section("ks", h * c * d * ngk * FP16_BYTES),
            Section("vq", h * c * chunk),
            Section("vs", h * c * CHUNK_TOKENS * ngv * FP16_BYTES),
            *cls._recent_sections(h, tr, d),
        ]

    def raw(self) -> dict[str, Any]:
        return {
            "kq": self.kq,
            "ks": fp16_bytes(self.ks),
            "vq": self.vq,
            "vs": fp16_bytes(self.vs),
            "k_recent": fp16_bytes(self.k_recent),
            "v_recent": fp16_bytes(self.v_recent),
        }

    @classmethod
    def from_raw(cls, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> QuantKV:
        h, t, d, c, tr = cls._dims(meta)
        bits, ngk, ngv = cls._groups(meta, d)
        chunk = packed_bytes(CHUNK_TOKENS * d, bits)
        return cls(
            bits,
            meta["group_size"],
            h,
            t,
            d,
            c * CHUNK_TOKENS,
            np.asarray(raw["kq"]).reshape(h, c, chunk),
            fp16_from_bytes(raw["ks"], (h, c, d, ngk)),
            np.asarray(raw["vq"]).reshape(h, c, chunk),
            fp16_from_bytes(raw["vs"], (h, c, CHUNK_TOKENS, ngv)),
            fp16_from_bytes(raw["k_recent"], (h, tr, d)),
            fp16_from_bytes(raw["v_recent"], (h, tr, d)),
        )


# ---- Mustafar bitmap-sparse ---------------------------------------------------------------------------------------
def _topk_mask(x: np.ndarray, kept: int) -> np.ndarray:
    """Keep-mask of the `kept` largest |x| along the last axis (ties: lower index first)."""
    order = np.argsort(-np.abs(x), axis=-1, kind="stable")
    mask = np.zeros(x.shape, bool)
    np.put_along_axis(mask, order[..., :kept], True, axis=-1)
    return mask


@dataclass(frozen=True, eq=False)
class BitmapKV(KVCache):
    """Per-token magnitude-pruned K/V in 64-element bitmap tiles (Mustafar, arXiv 2505.22913), values fp16
    (bits = 16) or symmetric int with KIVI-grouped fp16 scales computed after pruning (bits in 2/4/8).

    Every compressed token keeps exactly `kept` of head_dim elements of its K vector and of its V vector.
    K tiles: per (head, chunk, channel), the 64 tokens of the chunk in that channel -> k_bitmaps uint64 [H, C, D].
    V tiles: per (head, chunk, token, 64-channel slice) -> v_bitmaps uint64 [H, C, 64, ceil(D/64)] (bits past
    head_dim clear). `k_payload`/`v_payload` hold every tile's kept values (fp16 bit patterns or two's complement
    codes), packed in tile order, byte-padded per tile. ks/vs as in QuantKV (empty for fp16 values).
    """

    bits: int
    group_size: int
    kept: int
    num_heads: int
    n_tokens: int
    head_dim: int
    n_compressed: int
    k_bitmaps: np.ndarray
    k_payload: np.ndarray
    ks: np.ndarray
    v_bitmaps: np.ndarray
    v_payload: np.ndarray
    vs: np.ndarray
    k_recent: np.ndarray
    v_recent: np.ndarray
    FORMAT = "kv.bitmap_sparse"

    @classmethod
    def from_float(
        cls,
        k: np.ndarray,
        v: np.ndarray,
        kept: int,
        bits: int = 16,
        group_size: int = 64,
        n_compressed: int | None = None,
    ) -> BitmapKV:
        """Prune each compressed token's K and V vectors (per head) to their `kept` largest magnitudes, then
        (bits < 16) quantize the pruned values; the newest ``n_tokens - n_compressed`` tokens stay dense fp16."""
        k, v = _check_kv(k, v, cls.FORMAT)
        h, t, d = k.shape
        if bits not in KV_INT_BITS + (16,):
            raise SpecError(f"{cls.FORMAT}: value bits={bits} is not supported; use 16 (fp16) or one of {KV_INT_BITS}")
        if not 0 <= kept <= d:
            raise SpecError(f"{cls.FORMAT}: kept={kept} elements per token must be in [0, head_dim={d}]")
        if group_size < 1:
            raise SpecError(f"{cls.FORMAT}: group_size must be >= 1, got {group_size}")
        tc = t // CHUNK_TOKENS * CHUNK_TOKENS if n_compressed is None else n_compressed
        _check_split(t, tc, cls.FORMAT)
        c = tc // CHUNK_TOKENS
        kc = k[:, :tc].reshape(h, c, CHUNK_TOKENS, d)
        vc = v[:, :tc].reshape(h, c, CHUNK_TOKENS, d)
        kmask = _topk_mask(kc, kept).transpose(0, 1, 3, 2)  # [H, C, D, 64]
        vmask = _topk_mask(vc, kept)  # [H, C, 64, D]
        kt = np.where(kmask, kc.transpose(0, 1, 3, 2), 0.0)
        vt = np.where(vmask, vc, 0.0)
        if bits == 16:
            kcodes, vcodes = (x.astype(np.float16).view(np.uint16) for x in (kt, vt))
            ks, vs = np.zeros((h, c, d, 0), np.float16), np.zeros((h, c, CHUNK_TOKENS, 0), np.float16)
        else:
            kq, ks = quantize_symmetric(kt, bits, group_size)
            vq, vs = quantize_symmetric(vt, bits, group_size)
            kcodes, vcodes = to_codes(kq, bits), to_codes(vq, bits)
        nvt = -(-d // BITMAP_TILE)
        vpad = nvt * BITMAP_TILE - d
        vmask_t = np.pad(vmask, [(0, 0)] * 3 + [(0, vpad)]).reshape(-1, BITMAP_TILE)
        vcodes_t = np.pad(vcodes, [(0, 0)] * 3 + [(0, vpad)]).reshape(-1, BITMAP_TILE)
        kbm, kpay = pack_tiles(kmask.reshape(-1, BITMAP_TILE), kcodes.reshape(-1, BITMAP_TILE), bits)
        vbm, vpay = pack_tiles(vmask_t, vcodes_t, bits)
        return cls(
            bits,
            group_size,
            kept,
            h,
            t,
            d,
            tc,
            kbm.reshape(h, c, d),
            kpay,
            ks,
            vbm.reshape(h, c, CHUNK_TOKENS, nvt),
            vpay,
            vs,
            k[:, tc:].astype(np.float16),
            v[:, tc:].astype(np.float16),
        )

    @property
    def quantized(self) -> bool:
        return self.bits < 16

    def tiles(self) -> dict[str, np.ndarray]:
        """Decoded tiles (not cached; validates popcounts): k_mask bool [H, C, D, 64], k_vals float64 [H, C, D, 64]
        (dequantized, 0 where pruned), v_mask / v_vals [H, C, 64, D]."""
        return _decode_bitmap_kv(self)

    def _compressed_kv(self):
        h, d, tc = self.num_heads, self.head_dim, self.n_compressed
        t = self.tiles()
        return t["k_vals"].transpose(0, 1, 3, 2).reshape(h, tc, d), t["v_vals"].reshape(h, tc, d)

    def meta(self) -> dict[str, Any]:
        return {**self._base_meta(), "bits": self.bits, "group_size": self.group_size, "kept": self.kept}

    @classmethod
    def layout(cls, meta: Mapping[str, Any]) -> list[Section]:
        h, t, d, c, tr = cls._dims(meta)
        bits = meta_choice(meta, "bits", KV_INT_BITS + (16,), cls.FORMAT)
        gs = meta_int(meta, "group_size", cls.FORMAT, 1)
        kept = meta_int(meta, "kept", cls.FORMAT, 0)
        if kept > d:
            raise FormatError(f"{cls.FORMAT}: kept={kept} exceeds head_dim={d}")
        ngk, ngv = (-(-CHUNK_TOKENS // gs), -(-d // gs)) if bits < 16 else (0, 0)
        return [
            Section("k_tiles", n_tiles=h * c * d, bits=bits),
            Section("ks", h * c * d * ngk * FP16_BYTES),
            Section("v_tiles", n_tiles=h * c * CHUNK_TOKENS * -(-d // BITMAP_TILE), bits=bits),
            Section("vs", h * c * CHUNK_TOKENS * ngv * FP16_BYTES),
            *cls._recent_sections(h, tr, d),
        ]

    def raw(self) -> dict[str, Any]:
        return {
            "k_tiles": (self.k_bitmaps.reshape(-1), self.k_payload),
            "ks": fp16_bytes(self.ks),
            "v_tiles": (self.v_bitmaps.reshape(-1), self.v_payload),
            "vs": fp16_bytes(self.vs),
            "k_recent": fp16_bytes(self.k_recent),
            "v_recent": fp16_bytes(self.v_recent),
        }

    @classmethod
    def from_raw(cls, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> BitmapKV:
        h, t, d, c, tr = cls._dims(meta)
        bits, gs, kept = meta["bits"], meta["group_size"], meta["kept"]
        ngk, ngv = (-(-CHUNK_TOKENS // gs), -(-d // gs)) if bits < 16 else (0, 0)
        nvt = -(-d // BITMAP_TILE)
        kbm, kpay = raw["k_tiles"]
        vbm, vpay = raw["v_tiles"]
        obj = cls(
            bits,
            gs,
            kept,
            h,
            t,
            d,
            c * CHUNK_TOKENS,
            np.asarray(kbm).reshape(h, c, d),
            np.asarray(kpay),
            fp16_from_bytes(raw["ks"], (h, c, d, ngk)),
            np.asarray(vbm).reshape(h, c, CHUNK_TOKENS, nvt),
            np.asarray(vpay),
            fp16_from_bytes(raw["vs"], (h, c, CHUNK_TOKENS, ngv)),
            fp16_from_bytes(raw["k_recent"], (h, tr, d)),
            fp16_from_bytes(raw["v_recent"], (h, tr, d)),
        )
        obj.tiles()  # decodes and validates popcounts now, so a corrupt buffer fails at load time
        return obj


def _decode_bitmap_kv(c: BitmapKV) -> dict[str, np.ndarray]:
    h, n, d, b, what = c.num_heads, c.n_chunks, c.head_dim, c.bits, c.FORMAT
    kmask, kcodes = unpack_tiles(c.k_bitmaps, c.k_payload, b, f"{what} K tiles")
    vmask, vcodes = unpack_tiles(c.v_bitmaps, c.v_payload, b, f"{what} V tiles")
    kmask, kcodes = kmask.reshape(h, n, d, CHUNK_TOKENS), kcodes.reshape(h, n, d, CHUNK_TOKENS)
    nvt = -(-d // BITMAP_TILE)
    vmask = vmask.reshape(h, n, CHUNK_TOKENS, nvt * BITMAP_TILE)
    if np.any(vmask[..., d:]):
        raise FormatError(f"{what}: a V bitmap marks channels past head_dim={d}; the bitmaps are corrupt")
    vmask, vcodes = vmask[..., :d], vcodes.reshape(h, n, CHUNK_TOKENS, nvt * BITMAP_TILE)[..., :d]
    k_per_tok, v_per_tok = kmask.sum(axis=2), vmask.sum(axis=3)
    if np.any(k_per_tok != c.kept) or np.any(v_per_tok != c.kept):
        lo = int(min(k_per_tok.min(initial=c.kept), v_per_tok.min(initial=c.kept)))
        hi = int(max(k_per_tok.max(initial=c.kept), v_per_tok.max(initial=c.kept)))
        raise FormatError(
            f"{what}: bitmaps keep {lo}..{hi} elements per token but the metadata says "
            f"kept={c.kept}; the bitmaps are corrupt"
        )
    if b == 16:
        kv = np.where(kmask, kcodes.view(np.float16).astype(np.float64), 0.0)
        vv = np.where(vmask, vcodes.view(np.float16).astype(np.float64), 0.0)
    else:
        kv = from_codes(kcodes, b) * _expand_groups(c.ks, CHUNK_TOKENS, c.group_size)
        vv = from_codes(vcodes, b) * _expand_groups(c.vs, d, c.group_size)
    return {"k_mask": kmask, "k_vals": kv, "v_mask": vmask, "v_vals": vv}


def compress_kv(k: np.ndarray, v: np.ndarray, scheme: CompressionScheme) -> KVCache:
    """One layer's K/V [kv_heads, tokens, head_dim] in `scheme`'s KV format (dense split from scheme.kv_split)."""
    k_arr = np.asarray(k)
    if k_arr.ndim != 3:
        raise SpecError(f"compress_kv: K must be [kv_heads, tokens, head_dim], got shape {k_arr.shape}")
    if not scheme.kv_compressed:
        return DenseKV.from_float(k, v)
    n_compressed, _ = scheme.kv_split(k_arr.shape[1])
    if scheme.kv_sparsity > 0:
        return BitmapKV.from_float(
            k,
            v,
            kept_per_token(k_arr.shape[2], scheme.kv_sparsity),
            bits=scheme.kv_bits,
            group_size=scheme.kv_group_size,
            n_compressed=n_compressed,
        )
    return QuantKV.from_float(k, v, bits=scheme.kv_bits, group_size=scheme.kv_group_size, n_compressed=n_compressed)
