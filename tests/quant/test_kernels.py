"""Reference kernels against plain float64 implementations.

Tolerances:
* W-A8 GEMM: the integer accumulators are exact, so the kernel equals float64 X_deq @ W_deq^T up to the float64
  rounding of the dequantization sums (rtol 1e-12). Against the unquantized operands the error is bounded by the
  formats: |x.w - x^.w^| <= sum|x^||w - w^| + sum|x - x^||w|, evaluated with the actual rounding errors.
* Attention on the cache's own dequantized values: the kernel computes scores and p.v in float32 (unit roundoff
  u = 2**-24). A dot product of D terms errs by <= D*u*sum|q_d k_d|; the softmax turns an absolute score error e
  into a relative weight error <= 2e, and the p.v sum of T terms adds T*u*max|v|. So
  |out - ref| <= max|v| * (2 * scale * D * u * max_t sum|q k| + T * u), with a factor 4 of slack.
* Attention against the unquantized K/V: bounded by the format's actual errors dK, dV:
  |out - ref| <= max|dV| + 2 * max_t scale * sum|q||dK| * max|V| (first order), plus the float32 term.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from base.errors import SpecError
from quant.formats import BitmapKV, DenseKV, GroupQuantWeight, Int8Activation, QuantKV, Sparse24Weight, compress_kv
from quant.kernels import (
    attended_mask,
    decode_attention,
    group_accumulate,
    reference_decode_attention,
    reference_linear,
    w_a8_gemm,
    w_a8_gemv,
    window_attention,
)
from quant.scheme import CompressionScheme

U32 = 2.0**-24


# ---- GEMM ------------------------------------------------------------------------------------------------------
def _int64_accumulate(xa: Int8Activation, w) -> np.ndarray:
    """Brute-force int64 accumulators from the dense (zero-point-subtracted, pruned-as-0) integer weight."""
    rows, cols, gs = w.out_features, w.in_features, w.group_size
    g = np.arange(cols) // gs
    if isinstance(w, GroupQuantWeight):
        wz = w.codes().astype(np.int64) - w.zeros().astype(np.int64)[:, g]
    else:
        wz = np.zeros((rows, cols), np.int64)
        colk = w.kept_columns()
        kz = w.kept_codes().astype(np.int64) - np.take_along_axis(w.zeros().astype(np.int64), colk // gs, axis=1)
        np.put_along_axis(wz, colk, kz, axis=1)
    onehot = (g[:, None] == np.arange(w.n_groups)[None]).astype(np.int64)  # [in, G]
    return np.einsum("ni,oi,ig->nog", xa.values.astype(np.int64), wz, onehot)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 4),
    blocks=st.integers(1, 80),
    out=st.integers(1, 12),
    bits=st.sampled_from([2, 3, 4, 8]),
    gs=st.sampled_from([4, 10, 32, 64, 128]),
    sparse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_w_a8_gemm(n, blocks, out, bits, gs, sparse, seed):
    rng = np.random.default_rng(seed)
    cols = 4 * blocks
    x, w = rng.standard_normal((n, cols)) * 4, rng.standard_normal((out, cols))
    wq = (Sparse24Weight if sparse else GroupQuantWeight).from_float(w, bits=bits, group_size=gs)
    xa = Int8Activation.from_float(x)
    assert np.array_equal(group_accumulate(xa, wq), _int64_accumulate(xa, wq))
    y = w_a8_gemm(x, wq)
    xd, wd = xa.dequantize(), wq.dequantize()
    ref = reference_linear(xd, wd)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12 * np.abs(xd).max() * np.abs(wd).max() * cols)
    np.testing.assert_array_equal(w_a8_gemv(x[0], wq), y[0])
    # against the unquantized operands: the formats' own rounding errors bound the result
    w_eff = np.where(wq.mask(), w, 0.0) if sparse else w  # pruning is part of the model, not an error
    bound = np.abs(xd) @ np.abs(wd - w_eff).T + np.abs(x - xd) @ np.abs(w_eff).T
    assert np.all(np.abs(y - x @ w_eff.T) <= bound * (1 + 1e-9) + 1e-12)


def test_w2a8_known_values():
    """A hand-checked case: W = [[0, 1, 2, 3]] * 1/3 ... quantized exactly in int2 with scale 1, zero 0."""
    codes = np.array([[0, 1, 2, 3, 3, 2, 1, 0]], np.uint8)
    w = GroupQuantWeight.from_codes(codes, np.array([[1.0, 0.5]], np.float16), np.array([[1, 2]], np.uint8), 2, 4)
    x = np.array([[127.0, -127, 0, 1, 2, 3, 4, 5]])  # scale 1 -> codes equal x
    acc = group_accumulate(Int8Activation.from_float(x), w)
    # group 0: 127*(0-1) + -127*(1-1) + 0 + 1*(3-1) = -125; group 1: 2*1 + 3*0 + 4*(-1) + 5*(-2) = -12
    assert acc.tolist() == [[[-125, -12]]]
    assert w_a8_gemm(x, w).tolist() == [[-125.0 + 0.5 * -12]]


def test_gemm_errors():
    w = GroupQuantWeight.from_float(np.ones((2, 8)))
    with pytest.raises(SpecError, match="in_features"):
        w_a8_gemm(np.ones((1, 9)), w)
    with pytest.raises(SpecError, match="one token"):
        w_a8_gemv(np.ones((2, 8)), w)
    with pytest.raises(SpecError, match="integer weights"):
        w_a8_gemm(np.ones((1, 8)), Sparse24Weight.from_float(np.ones((2, 8)), bits=16))


# ---- attention ---------------------------------------------------------------------------------------------------
def _fp32_tol(q, k, v, g, scale):
    """The float32 error bound of the module docstring (factor 4 slack)."""
    kk = np.repeat(k, g, axis=0)
    dot_mag = scale * np.einsum("hd,htd->ht", np.abs(q), np.abs(kk)).max()
    return 4 * np.abs(v).max() * (2 * k.shape[2] * U32 * dot_mag + k.shape[1] * U32) + 1e-30


def _format_tol(q, k, v, kd, vd, g, scale):
    """First-order bound of the quantization/pruning error's effect (module docstring)."""
    dk = np.repeat(np.abs(k - kd), g, axis=0)
    ds = scale * np.einsum("hd,htd->ht", np.abs(q), dk).max()
    return np.abs(v - vd).max() + 2 * ds * max(np.abs(v).max(), np.abs(vd).max()) * math.exp(2 * ds)


SCHEME = st.builds(
    lambda bits, sparsity, gs, recent: CompressionScheme(
        kv_bits=bits, kv_sparsity=sparsity, kv_group_size=gs, kv_dense_recent=recent
    ),
    bits=st.sampled_from([2, 4, 8, 16]),
    sparsity=st.sampled_from([0.0, 0.2, 0.5, 0.7, 0.95]),
    gs=st.sampled_from([8, 32, 64, 128]),
    recent=st.sampled_from([0, 16, 32]),
)


@settings(max_examples=40, deadline=None)
@given(
    scheme=SCHEME,
    hkv=st.integers(1, 3),
    g=st.sampled_from([1, 2, 4]),
    t=st.integers(1, 260),
    d=st.sampled_from([64, 128]),
    sink=st.integers(0, 8),
    window=st.one_of(st.none(), st.integers(1, 300)),
    seed=st.integers(0, 2**16),
)
def test_decode_attention_vs_fp64(scheme, hkv, g, t, d, sink, window, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((hkv * g, d)) * 2
    k, v = rng.standard_normal((hkv, t, d)), rng.standard_normal((hkv, t, d))
    if window is None:
        sink = 0
    cache = compress_kv(k, v, scheme)
    kd, vd = cache.dequantize()
    out = decode_attention(q, cache, sink=sink, window=window)
    assert out.dtype == np.float32 and out.shape == (hkv * g, d)
    scale = 1 / math.sqrt(d)
    ref = reference_decode_attention(q, kd, vd, sink=sink, window=window)
    tol32 = _fp32_tol(q, kd, vd, g, scale)
    assert np.abs(out - ref).max() <= tol32
    ref0 = reference_decode_attention(q, k, v, sink=sink, window=window)
    assert np.abs(out - ref0).max() <= _format_tol(q, k, v, kd, vd, g, scale) + tol32


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize(
    "make",
    [
        lambda k, v: DenseKV.from_float(k, v),
        lambda k, v: QuantKV.from_float(k, v, bits=4),
        lambda k, v: BitmapKV.from_float(k, v, kept=0),  # sparsity ~1: every compressed tile empty
        lambda k, v: BitmapKV.from_float(k, v, kept=k.shape[2]),  # sparsity 0: every tile full
        lambda k, v: BitmapKV.from_float(k, v, kept=k.shape[2] // 3, bits=4),
    ],
    ids=["dense", "kv4", "bitmap-empty", "bitmap-full", "bitmap-kv4"],
)
@pytest.mark.parametrize(
    "t,sink,window", [(1, 0, None), (1, 4, 2048), (70, 4, 2048), (200, 4, 16), (200, 0, 1), (200, 130, 10)]
)
def test_decode_attention_edges(d, make, t, sink, window):
    rng = np.random.default_rng(t + d)
    q = rng.standard_normal((4, d))
    k, v = rng.standard_normal((2, t, d)), rng.standard_normal((2, t, d))
    cache = make(k, v)
    kd, vd = cache.dequantize()
    out = decode_attention(q, cache, sink=sink, window=window)
    ref = reference_decode_attention(q, kd, vd, sink=sink, window=window)
    assert np.abs(out - ref).max() <= _fp32_tol(q, kd, vd, 2, 1 / math.sqrt(d))
    if t == 1:  # one token: the output is its V row, whatever the scores
        np.testing.assert_allclose(out, np.repeat(vd[:, 0], 2, axis=0), rtol=1e-6, atol=1e-6)
    if window == 1 and sink == 0:  # only the newest token
        np.testing.assert_allclose(out, np.repeat(vd[:, -1], 2, axis=0), rtol=1e-6, atol=1e-6)


def test_all_zero_cache_gives_uniform_average():
    k = np.zeros((1, 128, 64))
    v = np.random.default_rng(0).standard_normal((1, 128, 64))
    cache = BitmapKV.from_float(k, v, kept=20)
    out = decode_attention(np.ones((1, 64)), cache)
    _, vd = cache.dequantize()
    np.testing.assert_allclose(out[0], vd[0].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_lambda_from_scheme_and_torch_input():
    rng = np.random.default_rng(1)
    k, v = rng.standard_normal((2, 300, 64)), rng.standard_normal((2, 300, 64))
    scheme = CompressionScheme(kv_bits=4, kv_dense_recent=32, attn_sink=4, attn_window=100)
    cache = compress_kv(k, v, scheme)
    q = torch.from_numpy(rng.standard_normal((6, 64)).astype(np.float32))
    out = decode_attention(q, cache, scheme)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    kd, vd = cache.dequantize()
    ref = reference_decode_attention(q.numpy(), kd, vd, sink=4, window=100)
    assert np.abs(out.numpy() - ref).max() <= _fp32_tol(q.numpy(), kd, vd, 3, 1 / 8)
    # the masked tokens do not matter: changing them does not change the output
    k2, v2 = k.copy(), v.copy()
    k2[:, 4:200] = 0.0
    v2[:, 4:200] = 0.0
    ref2 = reference_decode_attention(q.numpy(), k2, v2, sink=4, window=100)
    assert np.abs(reference_decode_attention(q.numpy(), k, v, sink=4, window=100) - ref2).max() == 0
    assert attended_mask(300, 4, 100).sum() == 104


def test_attention_errors():
    cache = DenseKV.from_float(np.ones((2, 5, 8)), np.ones((2, 5, 8)))
    with pytest.raises(SpecError, match="multiple"):
        decode_attention(np.ones((3, 8)), cache)
    with pytest.raises(SpecError, match="head_dim"):
        decode_attention(np.ones((2, 7)), cache)
    with pytest.raises(SpecError, match="window"):
        decode_attention(np.ones((2, 8)), cache, sink=4)
    with pytest.raises(SpecError, match="KV cache"):
        decode_attention(np.ones((2, 8)), (np.ones((2, 5, 8)), np.ones((2, 5, 8))))
    with pytest.raises(SpecError, match="float"):
        decode_attention(np.ones((2, 8), np.int64), cache)
    odd = QuantKV.from_float(np.ones((1, 64, 6)), np.ones((1, 64, 6)), bits=2)
    with pytest.raises(SpecError, match="divisible by 4"):
        decode_attention(np.ones((1, 6)), odd)


@pytest.mark.parametrize("bits,gs", [(4, 64), (4, 32), (2, 128), (8, 16), (4, 8)])
@pytest.mark.parametrize("rows", [2, 24])
def test_kv_int_kernel_groups_and_rows(bits, gs, rows):
    """Every scale grouping (16-byte vector decode where a group spans whole vectors, one code at a time otherwise),
    both for a decode step's few query rows and for the many rows of window_attention (chunk tiles)."""
    from quant.kernels.attention import plan_for

    rng = np.random.default_rng(bits * gs)
    k, v = rng.standard_normal((5, 300, 64)), rng.standard_normal((5, 300, 64))
    cache = QuantKV.from_float(k, v, bits=bits, group_size=gs)
    q = rng.standard_normal((5, rows, 64)).astype(np.float32)
    kd, vd = cache.dequantize()
    plan = plan_for(cache)
    s = plan.scores(q, np.ones(cache.n_chunks, bool))
    ref_s = np.einsum("hmd,htd->hmt", q.astype(np.float64), kd[:, : cache.n_compressed])
    np.testing.assert_allclose(
        s, ref_s, rtol=0, atol=64 * U32 * np.einsum("hmd,htd->hmt", np.abs(q), np.abs(kd[:, :256])).max()
    )
    p = rng.random((5, rows, cache.n_compressed)).astype(np.float32)
    o = plan.apply_v(p)
    ref_o = np.einsum("hmt,htd->hmd", p.astype(np.float64), vd[:, : cache.n_compressed])
    np.testing.assert_allclose(o, ref_o, rtol=0, atol=cache.n_compressed * U32 * 4 * np.abs(vd).max() * 2)


@pytest.mark.parametrize("bits,gs", [(4, 64), (2, 128), (8, 64), (4, 32)])
@pytest.mark.parametrize("rows", [1, 2, 24])
@pytest.mark.parametrize("kept", [0, 9, 40, 64])
def test_bitmap_int_kernel_groups_and_rows(bits, gs, rows, kept):
    """Int bitmap tiles: the register decode (one scale per tile, codes at any bit offset of the payload), the scalar
    walk for the payload's last tiles and for scale groups narrower than a tile, for one query row per head (the
    fused decode-and-multiply kernels), a GQA group and window_attention's many rows."""
    from quant.kernels.attention import plan_for

    rng = np.random.default_rng(bits * gs + kept)
    k, v = rng.standard_normal((3, 200, 128)), rng.standard_normal((3, 200, 128))
    cache = BitmapKV.from_float(k, v, kept=kept, bits=bits, group_size=gs)
    q = rng.standard_normal((3, rows, 128)).astype(np.float32)
    kd, vd = cache.dequantize()
    plan = plan_for(cache)
    s = plan.scores(q, np.ones(cache.n_chunks, bool))
    ref_s = np.einsum("hmd,htd->hmt", q.astype(np.float64), kd[:, : cache.n_compressed])
    np.testing.assert_allclose(
        s, ref_s, rtol=0, atol=128 * U32 * np.einsum("hmd,htd->hmt", np.abs(q), np.abs(kd[:, :192])).max()
    )
    p = rng.random((3, rows, cache.n_compressed)).astype(np.float32)
    o = plan.apply_v(p)
    ref_o = np.einsum("hmt,htd->hmd", p.astype(np.float64), vd[:, : cache.n_compressed])
    np.testing.assert_allclose(o, ref_o, rtol=0, atol=cache.n_compressed * U32 * 4 * np.abs(vd).max() * 2 + 1e-30)


@pytest.mark.parametrize("d", [33, 64, 128, 192])
@pytest.mark.parametrize("kept", [0, 19, 64])
def test_bitmap_fp16_one_row_kernels(d, kept):
    """fp16 bitmap tiles, one query row per head: the whole-chunk kernels with their sums in registers (K: any
    number of channels, odd included; V: rows of one or two tiles) and the tile-by-tile walk they hand over to for
    the payload's last chunks and for wider rows agree with float64 and with the many-rows path."""
    from quant.kernels.attention import plan_for

    rng = np.random.default_rng(d + kept)
    k, v = rng.standard_normal((3, 460, d)), rng.standard_normal((3, 460, d))
    cache = BitmapKV.from_float(k, v, kept=min(kept, d))
    kd, vd = cache.dequantize()
    plan = plan_for(cache)
    q = rng.standard_normal((3, 2, d)).astype(np.float32)
    need = np.ones(cache.n_chunks, bool)
    s1, s2 = plan.scores(np.ascontiguousarray(q[:, :1]), need), plan.scores(q, need)
    ref_s = np.einsum("hmd,htd->hmt", q.astype(np.float64), kd[:, : cache.n_compressed])
    tol = 2 * d * U32 * np.einsum("hmd,htd->hmt", np.abs(q), np.abs(kd[:, : cache.n_compressed])).max() + 1e-30
    np.testing.assert_allclose(s1, ref_s[:, :1], rtol=0, atol=tol)
    np.testing.assert_allclose(s1, s2[:, :1], rtol=0, atol=2 * tol)
    p = rng.random((3, 2, cache.n_compressed)).astype(np.float32)
    o1, o2 = plan.apply_v(np.ascontiguousarray(p[:, :1])), plan.apply_v(p)
    ref_o = np.einsum("hmt,htd->hmd", p.astype(np.float64), vd[:, : cache.n_compressed])
    tol = 2 * cache.n_compressed * U32 * np.abs(vd).max() + 1e-30
    np.testing.assert_allclose(o1, ref_o[:, :1], rtol=0, atol=tol)
    np.testing.assert_allclose(o1, o2[:, :1], rtol=0, atol=2 * tol)


@pytest.mark.parametrize(
    "scheme",
    [
        CompressionScheme(),
        CompressionScheme(kv_bits=4, kv_group_size=64, kv_dense_recent=32),
        CompressionScheme(kv_bits=2, kv_group_size=32, kv_dense_recent=0, attn_sink=4, attn_window=50),
        CompressionScheme(kv_sparsity=0.7, kv_dense_recent=32),
        CompressionScheme(kv_sparsity=0.5, kv_bits=4, kv_dense_recent=16, attn_sink=2, attn_window=90),
    ],
    ids=["dense", "kv4", "kv2-lambda", "bitmap70", "bitmap50-kv4-lambda"],
)
@pytest.mark.parametrize("d", [64, 96])
def test_window_attention_is_token_by_token_decode(scheme, d):
    """window_attention reproduces, for every token, decode_attention over the cache a decoder holds at that step
    (compress_kv of the tokens so far), up to float32 summation order."""
    rng = np.random.default_rng(d)
    t, hkv, g = 150, 2, 3
    q = rng.standard_normal((hkv * g, t, d)) * 2
    k, v = rng.standard_normal((hkv, t, d)), rng.standard_normal((hkv, t, d))
    out = window_attention(q, k, v, scheme, block_tokens=40)
    assert out.shape == (hkv * g, t, d) and out.dtype == np.float32
    for i in (0, 63, 64, 95, 96, 97, 120, 149):
        cache = compress_kv(k[:, : i + 1], v[:, : i + 1], scheme)
        ref = decode_attention(q[:, i], cache, scheme)
        kd, vd = cache.dequantize()
        tol = _fp32_tol(q[:, i], kd, vd, g, 1 / math.sqrt(d))
        assert np.abs(out[:, i] - ref).max() <= tol, i


def test_window_attention_errors():
    with pytest.raises(SpecError, match="window_attention"):
        window_attention(np.ones((2, 5, 8)), np.ones((1, 4, 8)), np.ones((1, 4, 8)), CompressionScheme())
