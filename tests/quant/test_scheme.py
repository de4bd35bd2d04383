"""Byte costs of every format, against hand computations."""

import pytest

from base.errors import SpecError
from models.spec import get_model
from quant.scheme import CompressionScheme, bitmap_tile_bytes, get_scheme, kept_per_token, list_schemes, packed_bytes


def test_presets_exist():
    assert {"fp16", "w4a16", "w2a8kv4", "accllm", "mustafar70"} <= set(list_schemes())
    for name in list_schemes():
        assert get_scheme(name).source


def test_packed_and_tile_bytes():
    assert packed_bytes(64, 2) == 16 and packed_bytes(3, 4) == 2 and packed_bytes(0, 4) == 0
    assert bitmap_tile_bytes(0, 16) == 8 and bitmap_tile_bytes(64, 16) == 136 and bitmap_tile_bytes(19, 4) == 18
    with pytest.raises(SpecError):
        bitmap_tile_bytes(65, 4)
    assert kept_per_token(128, 0.7) == 38 and kept_per_token(64, 0.5) == 32


def test_w2_g64_matrix_by_hand():
    s = CompressionScheme(weight_bits=2, weight_group_size=64)
    # 4 rows x 130 cols: values ceil(130*2/8)=33 B/row; groups ceil(130/64)=3 -> scales 6 B + zeros ceil(6/8)=1 B
    assert s.matrix_bytes(130, 4) == 4 * (33 + 6 + 1)


def test_24_matrix_by_hand():
    s = CompressionScheme(weight_bits=4, weight_group_size=128, weight_pruning="2:4")
    # 2 rows x 256 cols: 128 kept x 4 bit = 64 B + 64 blocks x 3-bit pattern code = 24 B; 2 groups: 4 B scales +
    # 1 B zeros
    assert s.matrix_bytes(256, 2) == 2 * (64 + 24 + 4 + 1)
    with pytest.raises(SpecError, match="divisible by 4"):
        s.matrix_bytes(6, 1)


def test_unstructured_matrix_by_hand():
    s = CompressionScheme(weight_pruning="unstructured", weight_sparsity=0.5)
    # fp16, 1 row x 128 cols = 2 tiles of 32 kept: 2 x (8 + 64)
    assert s.matrix_bytes(128, 1) == 144
    assert s.matrix_bytes(128, 1, nnz_per_tile=[0, 64]) == 8 + 8 + 128


def test_llama2_7b_weight_bytes_fp16_and_accllm():
    m = get_model("llama-2-7b")
    assert get_scheme("fp16").weight_bytes(m).total == 2 * m.param_count
    wb = get_scheme("accllm").weight_bytes(m)
    # by hand: q/k/v/o 4096x4096 under 2:4 W2 g64 with 2-bit positions: per row 2048 kept -> 512 B values +
    # 2048 x 2-bit positions = 512 B, 64 groups -> 128 B scales + 16 B zeros = 1168 B; x 4096 rows = 4,784,128 B.
    assert wb.per_linear["q_proj"] == 4_784_128
    # gate/up 11008 rows x 1168 B; down 4096 rows x (1376 + 1376 + 172*2 + ceil(172/4)) = 3139 B
    assert wb.per_linear["up_proj"] == 11008 * 1168 and wb.per_linear["down_proj"] == 4096 * 3139
    per_layer = 4 * 4_784_128 + 2 * 11008 * 1168 + 4096 * 3139 + 2 * 4096 * 2
    assert wb.blocks == 32 * per_layer
    assert wb.total == 32 * per_layer + 2 * 32000 * 4096 * 2 + 4096 * 2


def test_nm_index_formats_by_hand():
    pat = CompressionScheme(weight_bits=4, weight_group_size=128, weight_pruning="2:4")
    pos = pat.replace(weight_nm_index="positions")
    # 2 rows x 256 cols, 64 blocks: pattern 64 x 3 bit = 24 B; positions 128 kept x 2 bit = 32 B
    assert pos.matrix_bytes(256, 2) - pat.matrix_bytes(256, 2) == 2 * (32 - 24)
    # 1:8 positions: 3 bits per kept value (32 groups -> 12 B); pattern: C(8, 1) = 8 -> 3-bit code, the same
    one8 = CompressionScheme(weight_bits=4, weight_pruning="1:8")
    assert one8.matrix_bytes(256, 1) == one8.replace(weight_nm_index="positions").matrix_bytes(256, 1)
    with pytest.raises(SpecError, match="weight_nm_index"):
        CompressionScheme(weight_pruning="2:4", weight_nm_index="bitmap")


def test_kv_chunk_bytes_by_hand():
    kv4 = get_scheme("w2a8kv4")
    # 64 tokens x 128 ch, K+V at 4 bit = 8192 B; K scales 128 ch x 1 group x 2 B; V scales 64 tok x 2 groups x 2 B
    assert kv4.kv_chunk_bytes_per_head(128) == 8192 + 256 + 256
    assert kv4.kv_bits_per_element(128) == pytest.approx(4.25)
    mus = get_scheme("mustafar70")
    # 38 kept per token: K = 128 tiles x 8 B + 64 x 38 x 2 B; V = 64 tokens x (2 tiles x 8 B + 38 x 2 B)
    assert mus.kv_chunk_bytes_per_head(128) == (1024 + 4864) + 64 * (16 + 76)


def test_kv_cache_split_and_lambda():
    m = get_model("llama-2-7b")
    kv4 = get_scheme("w2a8kv4")
    assert kv4.kv_split(31) == (0, 31) and kv4.kv_split(96) == (64, 32) and kv4.kv_split(100) == (64, 36)
    fp16 = get_scheme("fp16")
    assert fp16.kv_cache_bytes(m, 1000, batch=2) == 2 * 1000 * 32 * 2 * 4096 * 2
    acc = get_scheme("accllm")
    assert acc.kv_stored_tokens(m, 10_000) == 4 + 2048 and acc.kv_stored_tokens(m, 100) == 100
    gqa = get_model("llama-2-70b")  # GQA: 8 KV heads, not 64
    assert fp16.kv_cache_bytes(gqa, 1) == 80 * 2 * 8 * 128 * 2
    mis = get_model("mistral-7b")
    assert fp16.kv_stored_tokens(mis, 10_000) == 4096


def test_act_bytes():
    assert get_scheme("fp16").act_bytes(3, 4096) == 3 * 4096 * 2
    assert get_scheme("w2a8kv4").act_bytes(3, 4096) == 3 * (4096 + 2)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(weight_bits=5), "weight_bits=5"),
        (dict(kv_bits=3), "kv_bits=3"),
        (dict(act_bits=4), "act_bits=4"),
        (dict(weight_pruning="unstructured"), "0 < weight_sparsity"),
        (dict(weight_sparsity=0.3), "only used with"),
        (dict(kv_sparsity=1.5), "kv_sparsity"),
        (dict(attn_sink=4), "needs attn_window"),
        (dict(attn_window=0), "attn_window"),
    ],
)
def test_invalid_schemes(kwargs, fragment):
    with pytest.raises(SpecError, match=fragment):
        CompressionScheme(**kwargs)


def test_scheme_yaml(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: mine\nweight_bits: 4\nweight_group_size: 32\nkv_bits: 8\n")
    s = get_scheme(str(p))
    assert (s.weight_bits, s.weight_group_size, s.kv_bits) == (4, 32, 8)
    p.write_text("name: mine\nweight_bits: four\n")
    with pytest.raises(SpecError, match="expected an integer"):
        get_scheme(str(p))
    with pytest.raises(SpecError, match="unknown scheme"):
        get_scheme("w3a3")


def test_nm_any_n_below_m_by_hand():
    s = CompressionScheme(weight_bits=4, weight_group_size=128, weight_pruning="1:4")
    # 2 rows x 256 cols: 64 kept x 4 bit = 32 B + 64 blocks x 2-bit pattern code (C(4, 1) = 4) = 16 B; 2 groups:
    # 4 B scales + 1 B zeros
    assert s.matrix_bytes(256, 2) == 2 * (32 + 16 + 4 + 1)
    assert s.weight_density == 0.25
    s48 = CompressionScheme(weight_bits=8, weight_pruning="4:8")  # 7-bit pattern codes: C(8, 4) = 70
    assert s48.matrix_bytes(16, 1) == 8 + 2 + 2 + 1 and s48.weight_density == 0.5
    for bad in ("4:4", "5:4", "0:4", "a:b"):
        with pytest.raises(SpecError, match="N:M|0 < N < M"):
            CompressionScheme(weight_pruning=bad)


def test_block_sparsity_by_hand():
    s = CompressionScheme(
        weight_bits=8, weight_group_size=64, weight_pruning="block", weight_sparsity=0.25, weight_block_size=16
    )
    # 1 row x 64 cols: 4 blocks -> 1 B bitmap; 48 kept cols x 8 bit = 48 B; 1 group: 2 B scale + 1 B zero
    assert s.matrix_bytes(64, 1) == 1 + 48 + 2 + 1
    assert s.weight_density == 0.75
    with pytest.raises(SpecError, match="0 < weight_sparsity < 1"):
        CompressionScheme(weight_pruning="block")


def test_per_operator_and_per_layer_overrides():
    from quant.scheme import OpOverride

    m = get_model("llama-2-7b")
    base = CompressionScheme(weight_bits=4, weight_group_size=128, act_bits=8)
    edge = base.replace(
        overrides={
            "attention": OpOverride(act_bits=16),
            "attn_linear": OpOverride(weight_bits=16),
            "ffn@0-1": OpOverride(weight_bits=8),
            "down_proj@1": OpOverride(weight_bits=2),
        }
    )
    assert edge.for_op("q_proj").weight_bits == 16 and edge.for_op("gate_proj").weight_bits == 4
    assert edge.for_op("gate_proj", 0).weight_bits == 8 and edge.for_op("down_proj", 1).weight_bits == 2
    assert edge.for_op("down_proj", 0).weight_bits == 8 and edge.for_op("attention").act_bits == 16
    wb = edge.weight_bytes(m)
    by_layer = [sum(edge.layer_linear_bytes(m, layer).values()) for layer in range(m.num_layers)]
    norms = m.num_layers * 2 * m.hidden_size * 2
    assert wb.blocks == sum(by_layer) + norms
    assert by_layer[0] > by_layer[2] and by_layer[1] < by_layer[0]
    with pytest.raises(SpecError, match="names no operator"):
        base.replace(overrides={"qproj": OpOverride(weight_bits=8)})
    with pytest.raises(SpecError, match="overrides.*weight_bits"):
        base.replace(overrides={"ffn": OpOverride(weight_bits=5)})


def test_scheme_yaml_with_overrides(tmp_path):
    p = tmp_path / "edge.yaml"
    p.write_text(
        "name: edge\nweight_bits: 4\nact_bits: 8\noverrides:\n  attention: {act_bits: 16}\n"
        "  q_proj: {weight_pruning: '2:8'}\n"
    )
    s = get_scheme(str(p))
    assert s.for_op("q_proj").weight_pruning == "2:8" and s.for_op("attention").act_bits == 16


def test_kv_head_bytes_is_the_one_kv_cost():
    s = get_scheme("w2a8kv4")
    # 64 tokens x 128 channels at 4 bits, K and V, plus per-channel K scales and per-token V scales (group 64)
    assert s.kv_head_bytes(64, 128) == 2 * 64 * 64 + 128 * 2 + 64 * 2 * 2
    assert s.kv_head_bytes(64, 128) == s.kv_chunk_bytes_per_head(128)
    assert s.kv_append_bytes(get_model("llama-2-7b")) == 2 * 4096 * 2
