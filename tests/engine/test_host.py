"""Tests of engine/host.py: the host side (Λ selection, scale folding) against float attention, and the bitmap
tiles it reads (quant's packing)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from base.errors import FormatError, SpecError
from engine.host import (
    dequantize_kv,
    fixed_point_attention,
    lambda_mask,
    prepare_head,
    reference_attention,
    unpack_values,
)
from quant.formats._bits import pack_tiles, to_codes

ERROR_BOUND = 0.04  # documented in engine/host.py: max |out - ref| <= 0.04 * max |v_real| over Λ


def _pack(values, keep):
    """int4 tiles [N, 64] -> (bitmaps, packed values), quant's bitmap-tile packing."""
    return pack_tiles(keep, to_codes(values, 4), 4)


def _kv4_head(rng, D, T, group=128, score_gain=1.0):
    """Random real K/V quantized KV4-style (K per channel per `group` tokens, V per token)."""
    kf = rng.normal(size=(T, D)) * score_gain
    vf = rng.normal(size=(T, D))
    qf = rng.normal(size=D)
    ng = -(-T // group)
    ks = np.stack([np.abs(kf[g * group : (g + 1) * group]).max(0) / 7 for g in range(ng)])
    ks = np.where(ks > 0, ks, 1.0)
    k = np.clip(np.rint(kf / ks[np.arange(T) // group]), -8, 7).astype(np.int8)
    vs = np.abs(vf).max(1, keepdims=True) / 7
    v = np.clip(np.rint(vf / vs), -8, 7).astype(np.int8)
    qs = np.abs(qf).max() / 127
    q = np.clip(np.rint(qf / qs), -127, 127).astype(np.int8)
    return q, qs, k, ks, v, vs


def _error(q, qs, k, ks, v, vs, group, sink, window, **kw):
    r = fixed_point_attention(q, qs, k, ks, v, vs, sink=sink, window=window, k_group_size=group, **kw)
    kr, vr = dequantize_kv(k, ks, v, vs, group)
    ref = reference_attention(q * qs, kr, vr, sink=sink, window=window)
    ref32 = _attention_fp32(q * qs, kr, vr, lambda_mask(k.shape[0], sink, window))
    vmax = np.abs(vr[lambda_mask(k.shape[0], sink, window)]).max()
    return r, np.abs(r.out - ref).max() / vmax, np.abs(r.out - ref32).max() / vmax


def _attention_fp32(q, k, v, m):
    q, k, v = (np.asarray(x, dtype=np.float32) for x in (q, k, v))
    s = k[m] @ q / np.float32(math.sqrt(q.shape[0]))
    w = np.exp(s - s.max())
    return (w @ v[m]) / w.sum()


@settings(deadline=None)
@given(
    D=st.sampled_from([64, 128]),
    T=st.integers(1, 2500),
    sink=st.integers(0, 8),
    window=st.one_of(st.none(), st.integers(1, 3000)),
    group=st.sampled_from([64, 128, 256]),
    gain=st.floats(0.3, 3.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_error_bound_vs_float_attention(D, T, sink, window, group, gain, seed):
    rng = np.random.default_rng(seed)
    q, qs, k, ks, v, vs = _kv4_head(rng, D, T, group, gain)
    _, err64, err32 = _error(q, qs, k, ks, v, vs, group, sink, window)
    assert err64 <= ERROR_BOUND
    assert err32 <= ERROR_BOUND


def test_error_is_small_on_typical_heads():
    rng = np.random.default_rng(7)
    errs = []
    for T in (1, 64, 500, 4096):
        for D in (64, 128):
            q, qs, k, ks, v, vs = _kv4_head(rng, D, T)
            errs.append(_error(q, qs, k, ks, v, vs, 128, 4, None)[1])
    assert max(errs) < 0.02  # typical worst case measured ~0.01; the documented bound leaves margin


def test_context_one_returns_that_value():
    rng = np.random.default_rng(1)
    q, qs, k, ks, v, vs = _kv4_head(rng, 64, 1)
    r = fixed_point_attention(q, qs, k, ks, v, vs)
    vr = v[0] * vs[0, 0]
    # p' = (p * 255 + 128) >> 8 with p = p_max; o = acc / p * 2^8: exact to within the p' rounding
    assert np.allclose(r.out, vr, atol=2.0 / 255 * np.abs(vr).max() + 1e-12)


def test_masked_tokens_do_not_matter():
    rng = np.random.default_rng(2)
    q, qs, k, ks, v, vs = _kv4_head(rng, 64, 300)
    r1 = fixed_point_attention(q, qs, k, ks, v, vs, sink=4, window=50)
    k2, v2 = k.copy(), v.copy()
    k2[4:250] = rng.integers(-8, 8, (246, 64))
    v2[4:250] = rng.integers(-8, 8, (246, 64))
    r2 = fixed_point_attention(q, qs, k2, ks, v2, vs, sink=4, window=50)
    assert np.array_equal(r1.o, r2.o)
    # blocks entirely outside Λ are never sent
    assert list(r1.head.block) == [0, 3, 4]


def _tiles_k(k, keep):
    T, D = k.shape
    nb = -(-T // 64)
    kp = np.zeros((nb * 64, D), dtype=np.int64)
    kp[:T] = np.where(keep, k, 0)
    kk = np.zeros((nb * 64, D), dtype=bool)
    kk[:T] = keep
    bm, pk = _pack(
        kp.reshape(nb, 64, D).transpose(0, 2, 1).reshape(-1, 64),
        kk.reshape(nb, 64, D).transpose(0, 2, 1).reshape(-1, 64),
    )
    return bm.reshape(nb, D), pk


def _tiles_v(v, keep):
    T, D = v.shape
    bm, pk = _pack(np.where(keep, v, 0).reshape(-1, 64), keep.reshape(-1, 64))
    return bm.reshape(T, D // 64), pk


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("D", [64, 128])
def test_sparse_inputs_match_dense_numerics(sparsity, D):
    rng = np.random.default_rng(3)
    T = 200
    q, qs, k, ks, v, vs = _kv4_head(rng, D, T)
    kkeep = rng.random((T, D)) >= sparsity
    vkeep = rng.random((T, D)) >= sparsity
    ksp, vsp = np.where(kkeep, k, 0), np.where(vkeep, v, 0)
    dense = fixed_point_attention(q, qs, ksp, ks, vsp, vs, sink=2, window=100)
    sparse = fixed_point_attention(
        q,
        qs,
        None,
        ks,
        None,
        vs,
        sink=2,
        window=100,
        context=T,
        k_tiles=_tiles_k(ksp, kkeep),
        v_tiles=_tiles_v(vsp, vkeep),
    )
    assert sparse.head.sparse and not dense.head.sparse
    assert np.array_equal(sparse.o, dense.o)
    if sparsity == 1.0:  # all-zero tiles: uniform attention over zero values
        assert np.all(sparse.o == 0)


@pytest.mark.parametrize(
    "bad, msg",
    [
        (dict(q=np.zeros(96, dtype=np.int8)), "D 64 or 128"),
        (dict(window=0), "empty"),
        (dict(k_group_size=100), "multiple of 64"),
    ],
)
def test_prepare_head_rejects_bad_input(bad, msg):
    rng = np.random.default_rng(5)
    q, qs, k, ks, v, vs = _kv4_head(rng, 64, 100)
    kw = dict(q=q, q_scale=qs, k=k, k_scale=ks, v=v, v_scale=vs, sink=0, window=None)
    kw.update(bad)
    with pytest.raises(SpecError, match=msg):
        prepare_head(**kw)


@settings(deadline=None)
@given(n=st.integers(0, 20), density=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_unpack_values_reads_quant_tile_packing(n, density, seed):
    rng = np.random.default_rng(seed)
    keep = rng.random((n, 64)) < density
    vals = np.where(keep, rng.integers(-8, 8, (n, 64)), 0)
    bm, pk = _pack(vals, keep)
    assert pk.size == int(((keep.sum(1) + 1) // 2).sum())
    assert np.array_equal(unpack_values(bm, pk, "tiles"), vals)


def test_pack_layout_is_team_md():
    keep = np.zeros((1, 64), dtype=bool)
    keep[0, [0, 5, 63]] = True
    vals = np.zeros((1, 64), dtype=np.int64)
    vals[0, [0, 5, 63]] = [-8, 7, -1]
    bm, pk = _pack(vals, keep)
    assert int(bm[0]) == (1 | 1 << 5 | 1 << 63)
    assert list(pk) == [0x78, 0x0F]  # element 0 (-8 = 0x8) low nibble, element 5 (7) high; then -1, pad


def test_unpack_rejects_truncated_buffer():
    bm, pk = _pack(np.ones((2, 64), dtype=np.int64), np.ones((2, 64), dtype=bool))
    with pytest.raises(FormatError, match="truncated"):
        unpack_values(bm, pk[:-1], "k_tiles")
