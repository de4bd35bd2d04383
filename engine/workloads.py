"""Seeded random engine workloads (one head), shared by the RTL and cocotb tests, tests/data/rtl_cycles.json and the
benchmarks. ``random_head(HeadSpec(...))`` is deterministic in the spec (numpy PCG64 seed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.datapath import EngineHead
from engine.host import prepare_head
from engine.params import TILE
from engine.widths import VALUE_BITS
from quant.formats._bits import pack_tiles, to_codes

__all__ = ["HeadSpec", "random_head"]


@dataclass(frozen=True)
class HeadSpec:
    """One random head. k_sparsity / v_sparsity: fraction of K / V elements pruned (bitmap-sparse head when
    either is not None; 1.0 gives all-zero tiles, 0.0 full tiles). extreme: K/V/q drawn from the extreme
    values only (-8/7, -128/127)."""

    seed: int
    head_dim: int = 64
    context: int = 64
    sink: int = 0
    window: int | None = None
    k_sparsity: float | None = None
    v_sparsity: float | None = None
    k_group_size: int = 128
    extreme: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _pack(values: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int4 tiles [N, 64] -> (bitmaps, packed values) in quant's bitmap-tile packing."""
    return pack_tiles(keep, to_codes(values, VALUE_BITS), VALUE_BITS)


def random_head(spec: HeadSpec) -> EngineHead:
    """The head ``spec`` describes, as the host prepares it (engine/host.py)."""
    rng = np.random.default_rng(spec.seed)
    T, D = spec.context, spec.head_dim
    if spec.extreme:
        k = rng.choice(np.array([-8, 7]), (T, D))
        v = rng.choice(np.array([-8, 7]), (T, D))
        q = rng.choice(np.array([-128, 127]), D)
    else:
        k = rng.integers(-8, 8, (T, D))
        v = rng.integers(-8, 8, (T, D))
        q = rng.integers(-128, 128, D)
    ng = -(-T // spec.k_group_size)
    k_scale = rng.uniform(0.02, 0.3, (ng, D))
    v_scale = rng.uniform(0.01, 0.2, (T, 1))
    kw: dict[str, Any] = dict(sink=spec.sink, window=spec.window, k_group_size=spec.k_group_size)
    if spec.k_sparsity is None and spec.v_sparsity is None:
        return prepare_head(q, rng.uniform(0.005, 0.05), k, k_scale, v, v_scale, **kw)
    nb = -(-T // TILE)
    ks = spec.k_sparsity or 0.0
    vs = spec.v_sparsity or 0.0
    kkeep = np.zeros((nb * TILE, D), dtype=bool)
    kkeep[:T] = rng.random((T, D)) >= ks
    kp = np.zeros((nb * TILE, D), dtype=np.int64)
    kp[:T] = k
    kp = np.where(kkeep, kp, 0)
    tiles_v = kp.reshape(nb, TILE, D).transpose(0, 2, 1).reshape(-1, TILE)  # tile (b, d) rows
    tiles_k = kkeep.reshape(nb, TILE, D).transpose(0, 2, 1).reshape(-1, TILE)
    kbm, kpk = _pack(tiles_v, tiles_k)
    vkeep = rng.random((T, D)) >= vs
    vbm, vpk = _pack(np.where(vkeep, v, 0).reshape(-1, TILE), vkeep.reshape(-1, TILE))
    return prepare_head(
        q,
        rng.uniform(0.005, 0.05),
        None,
        k_scale,
        None,
        v_scale,
        context=T,
        k_tiles=(kbm.reshape(nb, D), kpk),
        v_tiles=(vbm.reshape(T, D // TILE), vpk),
        **kw,
    )
