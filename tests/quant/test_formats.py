"""Packed formats: exact layouts, round trips, byte sizes equal to CompressionScheme, quantization error bounds and
errors on malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from base.errors import FormatError, SpecError
from models.spec import ModelSpec
from quant.formats import (
    BitmapKV,
    BitmapSparseWeight,
    DenseKV,
    GroupQuantWeight,
    Int8Activation,
    QuantKV,
    Sparse24Weight,
    compress_kv,
    packed_from_arrays,
    prune_2_4,
)
from quant.formats._bits import (
    bitmap_to_tile_mask,
    from_codes,
    pack_bits,
    popcount64,
    tile_mask_to_bitmap,
    to_codes,
    unpack_bits,
)
from quant.scheme import CHUNK_TOKENS, CompressionScheme, bitmap_tile_bytes, kept_per_token

FAST = settings(max_examples=25, deadline=None)
FP16_REL = 2.0**-11  # fp16 rounding of a scale (unit roundoff)


def one_layer_model(kv_heads: int, head_dim: int) -> ModelSpec:
    """A 1-layer model so that CompressionScheme.kv_bytes_for_tokens gives one layer's cache bytes."""
    return ModelSpec(
        name="one-layer",
        family="llama",
        num_layers=1,
        hidden_size=kv_heads * head_dim,
        num_heads=kv_heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        ffn_hidden_size=8,
        ffn_type="swiglu",
        vocab_size=8,
        max_position_embeddings=1 << 20,
        norm="rmsnorm",
        norm_eps=1e-5,
        positional="rope",
        rope_theta=1e4,
        tied_embeddings=False,
        source="test",
    )


def roundtrip(obj):
    """from_bytes(to_bytes) and from_arrays(to_arrays) both reproduce the object bit for bit."""
    buf = obj.to_bytes()
    assert len(buf) == obj.nbytes
    a = type(obj).from_bytes(buf, obj.meta())
    assert a.to_bytes() == buf
    arrays, meta = obj.to_arrays()
    assert all(x.dtype == np.uint8 and x.ndim == 1 for x in arrays.values())
    assert sum(x.size for x in arrays.values()) == len(buf)
    b = type(obj).from_arrays(arrays, meta)
    assert b.to_bytes() == buf
    return a, b


# ---- bit-level layouts (TEAM.md) -----------------------------------------------------------------------------
def test_int4_nibble_order_and_twos_complement():
    packed = pack_bits(to_codes(np.array([1, -2, -8, 7]), 4), 4)
    assert packed.tolist() == [0xE1, 0x78]  # element 2j low nibble, 2j+1 high nibble
    assert from_codes(unpack_bits(packed, 4, 4), 4).tolist() == [1, -2, -8, 7]


def test_int2_crumb_order():
    assert pack_bits(np.array([0, 1, 2, 3, 3]), 2).tolist() == [0b11100100, 0b11]


def test_bitmap_bit_order():
    mask = np.zeros(64, bool)
    mask[[0, 9, 63]] = True
    bm = tile_mask_to_bitmap(mask)
    assert int(bm) == (1 << 0) | (1 << 9) | (1 << 63)
    assert np.array_equal(bitmap_to_tile_mask(bm), mask)
    assert int(popcount64(bm)) == 3


@FAST
@given(
    bits=st.sampled_from([1, 2, 3, 4, 5, 8, 16]),
    n=st.integers(0, 70),
    rows=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_pack_bits_roundtrip(bits, n, rows, seed):
    codes = np.random.default_rng(seed).integers(0, 1 << bits, (rows, n))
    packed = pack_bits(codes, bits)
    assert packed.shape == (rows, -(-n * bits // 8))
    assert np.array_equal(unpack_bits(packed, n, bits), codes)


# ---- weights -------------------------------------------------------------------------------------------------
def _w(seed: int, rows: int, cols: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols))


def _err_bound(scale_per_elem: np.ndarray, bits: int) -> np.ndarray:
    """Round-to-nearest error <= scale/2, plus at a clipped range end the fp16 rounding of the scale
    (qmax * scale * 2**-11) and of the zero point."""
    return scale_per_elem * (0.5 + ((1 << bits) + 1) * FP16_REL)


@FAST
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 300),
    bits=st.sampled_from([2, 3, 4, 8]),
    gs=st.sampled_from([1, 7, 32, 64, 128, 1000]),
    seed=st.integers(0, 2**16),
)
def test_group_quant_weight(rows, cols, bits, gs, seed):
    w = _w(seed, rows, cols)
    q = GroupQuantWeight.from_float(w, bits=bits, group_size=gs)
    scheme = CompressionScheme(weight_bits=bits, weight_group_size=gs)
    assert len(q.to_bytes()) == scheme.matrix_bytes(cols, rows)
    s = q.scales.astype(np.float64)[:, np.arange(cols) // gs]
    assert np.all(np.abs(q.dequantize() - w) <= _err_bound(s, bits))
    a, b = roundtrip(q)
    assert np.array_equal(a.dequantize(), q.dequantize()) and np.array_equal(b.codes(), q.codes())
    # pack o unpack = identity on already-quantized values
    again = GroupQuantWeight.from_codes(q.codes(), q.scales, q.zeros(), bits, gs)
    assert again.to_bytes() == q.to_bytes()


def test_group_quant_default_group_is_64_and_int2_layout():
    w = np.zeros((1, 130))
    w[0, 0] = 1.0
    q = GroupQuantWeight.from_float(w)
    assert (q.bits, q.group_size, q.n_groups) == (2, 64, 3)
    assert q.qweight.shape == (1, 33)  # 130 two-bit codes -> 33 bytes
    # group 0: lo 0, hi 1 -> scale fp16(1/3), zero 0, code of 1.0 = 3 at bits [0, 1] of byte 0
    assert q.qweight[0, 0] == 3 and q.zeros()[0].tolist() == [0, 0, 0]


@FAST
@given(
    rows=st.integers(1, 6),
    blocks=st.integers(1, 70),
    bits=st.sampled_from([2, 4, 8, 16]),
    gs=st.sampled_from([4, 6, 64, 128]),
    seed=st.integers(0, 2**16),
    index=st.sampled_from(["pattern", "positions"]),
)
def test_sparse_2_4_weight(rows, blocks, bits, gs, seed, index):
    cols = 4 * blocks
    w = _w(seed, rows, cols)
    q = Sparse24Weight.from_float(w, bits=bits, group_size=gs, index_format=index)
    scheme = CompressionScheme(weight_bits=bits, weight_group_size=gs, weight_pruning="2:4", weight_nm_index=index)
    assert len(q.to_bytes()) == scheme.matrix_bytes(cols, rows)
    mask = q.mask()
    assert np.array_equal(mask, prune_2_4(w))
    blk_w, blk_m = np.abs(w).reshape(rows, -1, 4), mask.reshape(rows, -1, 4)
    assert np.all(blk_m.sum(axis=2) == 2)
    assert np.all(np.where(blk_m, blk_w, np.inf).min(2) >= np.where(blk_m, -np.inf, blk_w).max(2))
    deq = q.dequantize()
    assert np.all(deq[~mask] == 0)
    if bits == 16:
        assert np.array_equal(deq[mask], w[mask].astype(np.float16).astype(np.float64))
    else:
        s = q.scales.astype(np.float64)[:, np.arange(cols) // gs]
        assert np.all(np.abs(deq - w)[mask] <= _err_bound(s, bits)[mask])
    a, b = roundtrip(q)
    assert np.array_equal(a.dequantize(), deq) and np.array_equal(b.dequantize(), deq)


@FAST
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 260),
    bits=st.sampled_from([2, 4, 16]),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_bitmap_sparse_weight(rows, cols, bits, sparsity, seed):
    w = _w(seed, rows, cols)
    q = BitmapSparseWeight.from_float(w, sparsity=sparsity, bits=bits, group_size=64)
    scheme = CompressionScheme(
        weight_bits=bits, weight_group_size=64, weight_pruning="unstructured", weight_sparsity=max(sparsity, 1e-9)
    )
    n = len(q.to_bytes())
    assert n == scheme.matrix_bytes(cols, rows, nnz_per_tile=q.nnz_per_tile)
    if sparsity > 0:  # pruning to the expected per-tile count matches the nominal formula exactly
        assert n == scheme.matrix_bytes(cols, rows)
    deq, mask = q.dequantize(), q.mask()
    assert np.all(deq[~mask] == 0)
    a, b = roundtrip(q)
    assert np.array_equal(a.dequantize(), deq) and np.array_equal(b.mask(), mask)


def test_bitmap_weight_empty_and_full_tiles():
    w = _w(1, 2, 128)
    mask = np.zeros_like(w, bool)
    mask[1, :64] = True  # row 0: two empty tiles; row 1: one full tile, one empty
    q = BitmapSparseWeight.from_float(w, bits=4, mask=mask)
    assert q.nnz_per_tile == [0, 0, 64, 0]
    # 4 bitmaps (8 B each) + 64 int4 values (32 B) + fp16 scales [2 rows, 2 groups] + packed zeros [2 rows, 1 B]
    assert len(q.to_bytes()) == 4 * 8 + 32 + 2 * 2 * 2 + 2 * 1
    scheme = CompressionScheme(weight_bits=4, weight_group_size=64, weight_pruning="unstructured", weight_sparsity=0.5)
    assert len(q.to_bytes()) == scheme.matrix_bytes(128, 2, nnz_per_tile=q.nnz_per_tile)
    roundtrip(q)
    assert np.array_equal(q.mask(), mask)


# ---- activations ---------------------------------------------------------------------------------------------
@FAST
@given(n=st.integers(1, 5), width=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_int8_activation(n, width, seed):
    x = np.random.default_rng(seed).standard_normal((n, width)) * 10
    x[0] = 0.0  # an all-zero token
    a = Int8Activation.from_float(x)
    assert len(a.to_bytes()) == CompressionScheme(act_bits=8).act_bytes(n, width)
    s = a.scales.astype(np.float64)[:, None]
    assert np.all(np.abs(a.dequantize() - x) <= s * (0.5 + 128 * FP16_REL))
    assert np.all(a.dequantize()[0] == 0) and np.abs(a.values).max() <= 127
    roundtrip(a)


# ---- KV caches -----------------------------------------------------------------------------------------------
KV_SCHEMES = st.builds(
    lambda bits, sparsity, gs, recent: CompressionScheme(
        kv_bits=bits, kv_sparsity=sparsity, kv_group_size=gs, kv_dense_recent=recent
    ),
    bits=st.sampled_from([2, 4, 8, 16]),
    sparsity=st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.99]),
    gs=st.sampled_from([1, 16, 32, 64, 128]),
    recent=st.sampled_from([0, 5, 32, 100]),
)


def _kv(seed: int, h: int, t: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((h, t, d)), rng.standard_normal((h, t, d)) * 3


@settings(max_examples=30, deadline=None)
@given(
    scheme=KV_SCHEMES,
    h=st.integers(1, 3),
    t=st.integers(1, 200),
    d=st.sampled_from([64, 80, 128]),
    seed=st.integers(0, 2**16),
)
def test_kv_cache_bytes_roundtrip_and_error(scheme, h, t, d, seed):
    k, v = _kv(seed, h, t, d)
    cache = compress_kv(k, v, scheme)
    comp, dense = scheme.kv_split(t)
    assert (cache.n_compressed, cache.n_recent) == (comp, dense)
    n = len(cache.to_bytes())
    expected = scheme.kv_bytes_for_tokens(one_layer_model(h, d), t)
    if isinstance(cache, BitmapKV) and cache.quantized:
        # the scheme counts sparse int tiles without their per-tile byte padding (documented in quant.scheme);
        # the exact figure is the sum of bitmap_tile_bytes over tiles
        tiles = np.concatenate([popcount64(cache.k_bitmaps).ravel(), popcount64(cache.v_bitmaps).ravel()])
        tile_bytes = sum(bitmap_tile_bytes(int(c), cache.bits) for c in tiles)
        assert tile_bytes == cache.nbytes - cache.ks.nbytes - cache.vs.nbytes - 2 * cache.k_recent.nbytes
        assert expected <= n <= expected + tiles.size
    else:
        assert n == expected
    kd, vd = cache.dequantize()
    a, b = roundtrip(cache)
    for other in (a, b):
        ka, va = other.dequantize()
        assert np.array_equal(ka, kd) and np.array_equal(va, vd)
    # recent window: fp16 of the input
    assert np.array_equal(kd[:, comp:], k[:, comp:].astype(np.float16).astype(np.float64))
    _check_kv_error(cache, scheme, k, v, kd, vd)


def _check_kv_error(cache, scheme, k, v, kd, vd):
    comp, d = cache.n_compressed, cache.head_dim
    kc, vc, kdc, vdc = k[:, :comp], v[:, :comp], kd[:, :comp], vd[:, :comp]
    if isinstance(cache, BitmapKV):
        kept = kept_per_token(d, scheme.kv_sparsity)
        for x, xd in ((kc, kdc), (vc, vdc)):
            m = xd != 0 if not cache.quantized else cache_mask(cache, x is kc)
            assert np.all(m.sum(axis=2) == kept)
            # kept are the largest magnitudes of each token
            assert np.all(np.where(m, np.abs(x), np.inf).min(2) >= np.where(m, -np.inf, np.abs(x)).max(2))
            assert np.all(xd[~m] == 0)
            kc_m = np.where(m, x, 0.0)
            if cache.quantized:
                _check_sym_error(kc_m, xd, cache, x is kc)
            else:
                assert np.array_equal(xd[m], x[m].astype(np.float16).astype(np.float64))
    elif isinstance(cache, QuantKV):
        _check_sym_error(kc, kdc, cache, True)
        _check_sym_error(vc, vdc, cache, False)
    else:
        assert isinstance(cache, DenseKV)
        assert np.array_equal(kd, k.astype(np.float16).astype(np.float64))


def cache_mask(cache: BitmapKV, is_k: bool) -> np.ndarray:
    t = cache.tiles()
    h, tc, d = cache.num_heads, cache.n_compressed, cache.head_dim
    return t["k_mask"].transpose(0, 1, 3, 2).reshape(h, tc, d) if is_k else t["v_mask"].reshape(h, tc, d)


def _check_sym_error(x, xd, cache, is_k):
    """|x - deq| <= scale/2 (+ clipping at max|x| by the fp16 rounding of the scale: qmax * scale * 2**-11, and in the
    fp16 subnormal range (scales < 2**-14, e.g. group size 1 on small values) an absolute qmax * 2**-25)."""
    h, tc, d, gs = cache.num_heads, cache.n_compressed, cache.head_dim, cache.group_size
    c = tc // CHUNK_TOKENS
    if is_k:  # ks [H, C, D, G] over tokens of the chunk
        s = cache.ks.astype(np.float64)[..., np.arange(CHUNK_TOKENS) // gs].transpose(0, 1, 3, 2).reshape(h, tc, d)
    else:
        s = cache.vs.astype(np.float64)[..., np.arange(d) // gs].reshape(h, c * CHUNK_TOKENS, d)
    qmax = (1 << (cache.bits - 1)) - 1
    assert np.all(np.abs(x - xd) <= s * (0.5 + qmax * FP16_REL) + qmax * 2.0**-25)


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("kept_frac", [0.0, 1.0])
@pytest.mark.parametrize("bits", [16, 4])
def test_bitmap_kv_sparsity_extremes(d, kept_frac, bits):
    k, v = _kv(3, 2, 130, d)
    kept = int(kept_frac * d)
    c = BitmapKV.from_float(k, v, kept=kept, bits=bits)
    assert c.n_compressed == 128
    cnt = popcount64(c.k_bitmaps)
    assert np.all(cnt == (64 if kept else 0))  # fully dense / all-empty tiles
    kd, vd = c.dequantize()
    if kept == 0:
        assert np.all(kd[:, :128] == 0) and np.all(vd[:, :128] == 0)
        assert c.k_payload.size == 0 and c.v_payload.size == 0
    elif bits == 16:
        assert np.array_equal(kd, k.astype(np.float16).astype(np.float64))
    roundtrip(c)


def test_bitmap_kv_all_zero_input_and_scheme_sparsity_near_one():
    k = np.zeros((1, 64, 128))
    scheme = CompressionScheme(kv_sparsity=0.999)
    c = compress_kv(k, k, scheme)
    assert isinstance(c, BitmapKV) and c.kept == kept_per_token(128, 0.999) == 0
    assert len(c.to_bytes()) == scheme.kv_bytes_for_tokens(one_layer_model(1, 128), 64)
    c4 = BitmapKV.from_float(k, k, kept=10, bits=4)  # ties at zero: lowest channels kept, all codes 0, scales 1
    assert np.all(c4.dequantize()[0] == 0) and np.all(c4.ks == 1)
    roundtrip(c4)


@pytest.mark.parametrize("t", [1, 63, 64, 65])
def test_short_contexts(t):
    k, v = _kv(0, 2, t, 64)
    for scheme in (CompressionScheme(kv_bits=4), CompressionScheme(kv_sparsity=0.5)):
        c = compress_kv(k, v, scheme)
        assert c.n_compressed == (64 if t >= 64 else 0)
        assert len(c.to_bytes()) == scheme.kv_bytes_for_tokens(one_layer_model(2, 64), t)
        roundtrip(c)


def test_kv4_codes_layout():
    """K chunk channel-major, int4 nibble order: token 0 / 1 of channel 0 are the nibbles of byte 0."""
    k = np.zeros((1, 64, 64))
    k[0, 0, 0], k[0, 1, 0] = 7.0, -7.0  # channel 0 group scale = 7/7 = 1
    c = QuantKV.from_float(k, k.copy(), bits=4, group_size=64)
    assert c.kq[0, 0, 0] == 0x97  # low nibble 7 (token 0), high nibble -7 = 0x9 (token 1)
    assert c.ks[0, 0, 0, 0] == 1.0
    assert c.vq[0, 0, 0] == 0x07 and c.vq[0, 0, 32] == 0x09  # V token-major: token 1 channel 0 at element 64


# ---- malformed input -----------------------------------------------------------------------------------------
def _objects():
    w = _w(5, 3, 128)
    k, v = _kv(5, 2, 150, 64)
    return [
        GroupQuantWeight.from_float(w),
        Sparse24Weight.from_float(w),
        BitmapSparseWeight.from_float(w, 0.5),
        Int8Activation.from_float(w),
        DenseKV.from_float(k, v),
        QuantKV.from_float(k, v),
        BitmapKV.from_float(k, v, kept=20),
        BitmapKV.from_float(k, v, kept=20, bits=4),
    ]


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: type(o).__name__ + str(getattr(o, "bits", "")))
def test_truncated_or_overlong_buffer(obj):
    buf, meta = obj.to_bytes(), obj.meta()
    with pytest.raises(FormatError, match="truncated"):
        type(obj).from_bytes(buf[:-1], meta)
    with pytest.raises(FormatError, match="trailing"):
        type(obj).from_bytes(buf + b"\0", meta)
    with pytest.raises(FormatError, match="format"):
        type(obj).from_bytes(buf, {**meta, "format": "something.else"})


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: type(o).__name__ + str(getattr(o, "bits", "")))
def test_bad_arrays(obj):
    arrays, meta = obj.to_arrays()
    name = next(iter(arrays))
    with pytest.raises(FormatError, match="dtype"):
        type(obj).from_arrays({**arrays, name: arrays[name].astype(np.float32)}, meta)
    with pytest.raises(FormatError, match="shape|truncated|popcount|1-D"):
        type(obj).from_arrays({**arrays, name: arrays[name][:-1]}, meta)
    with pytest.raises(FormatError, match="missing"):
        type(obj).from_arrays({k: a for k, a in arrays.items() if k != name}, meta)
    with pytest.raises(FormatError, match="metadata"):
        type(obj).from_arrays(arrays, {**meta, list(meta)[1]: -3})


def test_bitmap_popcount_disagrees_with_values():
    k, v = _kv(2, 1, 64, 64)
    c = BitmapKV.from_float(k, v, kept=16)
    arrays, meta = c.to_arrays()
    bm = arrays["k_tiles.bitmaps"].copy().view("<u8")
    bm[0] |= ~bm[0]  # set every bit of tile 0: popcount 64, values unchanged
    with pytest.raises(FormatError, match="popcount"):
        BitmapKV.from_arrays({**arrays, "k_tiles.bitmaps": bm.view(np.uint8)}, meta)
    # same popcount, but a token now has the wrong kept count
    bm = arrays["k_tiles.bitmaps"].copy().view("<u8")
    tile = int(bm[0])
    low = tile & -tile  # lowest kept token of channel 0
    free = ~tile & (tile + 1) if tile != (1 << 64) - 1 else 0  # lowest dropped token
    bm[0] = np.uint64((tile ^ low) | free)
    with pytest.raises(FormatError, match="kept"):
        BitmapKV.from_arrays({**arrays, "k_tiles.bitmaps": bm.view(np.uint8)}, meta)
    w = BitmapSparseWeight.from_float(_w(0, 2, 64), 0.5)
    arrays, meta = w.to_arrays()
    with pytest.raises(FormatError, match="popcount"):
        BitmapSparseWeight.from_arrays({**arrays, "tiles.values": arrays["tiles.values"][:-2]}, meta)


def test_bad_construction_inputs():
    with pytest.raises(SpecError, match="bits=5"):
        GroupQuantWeight.from_float(np.ones((2, 8)), bits=5)
    with pytest.raises(SpecError, match="divisible by 4"):
        Sparse24Weight.from_float(np.ones((2, 6)))
    with pytest.raises(SpecError, match="float matrix"):
        GroupQuantWeight.from_float(np.ones((2, 8), np.int32))
    with pytest.raises(SpecError, match="equal shape"):
        compress_kv(np.ones((1, 4, 8)), np.ones((1, 5, 8)), CompressionScheme(kv_bits=4))
    with pytest.raises(SpecError, match="kept"):
        BitmapKV.from_float(np.ones((1, 4, 8)), np.ones((1, 4, 8)), kept=9)
    with pytest.raises(SpecError, match="multiple of 64"):
        QuantKV.from_float(np.ones((1, 100, 8)), np.ones((1, 100, 8)), n_compressed=32)
    with pytest.raises(SpecError, match="NaN"):
        Int8Activation.from_float(np.array([[np.nan]]))


@pytest.mark.parametrize("obj", _objects(), ids=lambda o: type(o).__name__ + str(getattr(o, "bits", "")))
def test_packed_from_arrays_dispatches_on_format(obj):
    arrays, meta = obj.to_arrays()
    again = packed_from_arrays(arrays, meta)
    assert type(again) is type(obj) and again.to_bytes() == obj.to_bytes()
    with pytest.raises(FormatError, match="unknown packed format"):
        packed_from_arrays(arrays, {**meta, "format": "nope"})


def test_safetensors_roundtrip(tmp_path):
    import json

    from safetensors.numpy import load_file, save_file

    k, v = _kv(7, 2, 200, 128)
    obj = compress_kv(k, v, CompressionScheme(kv_sparsity=0.7, kv_bits=4, kv_dense_recent=32))
    arrays, meta = obj.to_arrays()
    path = tmp_path / "layer0.safetensors"
    save_file(arrays, str(path), metadata={"meta": json.dumps(meta)})
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        meta2 = json.loads(f.metadata()["meta"])
    again = packed_from_arrays(load_file(str(path)), meta2)
    assert again.to_bytes() == obj.to_bytes()


def test_sparse_2_4_corrupt_indices_are_format_errors():
    w = _w(1, 2, 16)
    for index in ("pattern", "positions"):
        q = Sparse24Weight.from_float(w, bits=4, group_size=8, index_format=index)
        arrays, meta = q.raw(), q.meta()
        arrays = {**arrays, "indices": np.full_like(arrays["indices"], 0xFF)}  # codes 7 / positions (3, 3)
        with pytest.raises(FormatError, match="corrupt"):
            Sparse24Weight.from_raw(meta, arrays)
    with pytest.raises(FormatError, match="index"):
        Sparse24Weight.layout({**q.meta(), "index": "bitmap"})
    with pytest.raises(SpecError, match="index format"):
        Sparse24Weight.from_float(w, index_format="bitmap")
