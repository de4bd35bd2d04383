import pytest
import torch

from base.errors import SpecError
from quant.methods import KV4Config, KVBitmapConfig, KVCodec
from quant.methods.kvcache import kv_statistics, prune_per_token
from quant.quantize import quantize
from quant.scheme import CompressionScheme, get_scheme


def test_compressed_mask_matches_scheme_split():
    s = get_scheme("w2a8kv4")
    codec = KVCodec(bits=4, dense_recent=s.kv_dense_recent)
    m = codec.compressed_mask(300, None)
    for i in (0, 50, 95, 96, 97, 159, 160, 299):
        assert int(m[i].sum()) == s.kv_split(i + 1)[0]


def test_kv4_matches_packed_format():
    import numpy as np

    from quant.formats import QuantKV

    torch.manual_seed(0)
    k, v = torch.randn(1, 2, 128, 64), torch.randn(1, 2, 128, 64)
    kc, vc = KVCodec(bits=4, group_size=64).compress(k, v)
    kf, vf = QuantKV.from_float(k[0].double().numpy(), v[0].double().numpy(), bits=4, group_size=64).dequantize()
    np.testing.assert_allclose(kc[0].numpy(), kf, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vc[0].numpy(), vf, rtol=1e-6, atol=1e-6)


def test_per_token_pruning():
    x = torch.randn(3, 10, 64)
    p = prune_per_token(x, 0.7)
    assert torch.all((p != 0).sum(-1) == 64 - round(0.7 * 64))
    kept_min = torch.where(p != 0, p.abs(), torch.inf).amin(-1)
    dropped_max = torch.where(p == 0, x.abs(), 0).amax(-1)
    assert torch.all(kept_min >= dropped_max)


def test_handlers_compose_and_check_window(tiny_model):
    m = tiny_model()
    quantize(m, KV4Config(dense_recent=32))
    quantize(m, KVBitmapConfig(0.5, dense_recent=32))
    c = m.blocks[1].attn.kv_codec
    assert (c.bits, c.sparsity, c.dense_recent) == (4, 0.5, 32)
    with pytest.raises(SpecError, match="recent"):
        quantize(m, KVBitmapConfig(0.5, dense_recent=16))


def test_kv_statistics_bytes_match_scheme(tiny_calibration, tiny_model):
    m = tiny_model()
    calib = tiny_calibration(n=2, t=128)
    s = CompressionScheme(kv_bits=4, kv_group_size=64, kv_dense_recent=32)
    st = kv_statistics(m, list(calib.windows), s)
    head_dim = m.cfg.head_dim
    per_tok = s.kv_chunk_bytes_per_head(head_dim) / 64
    assert len(st["layers"]) == 2 and len(st["layers"][0]) == 2
    assert st["mean_bytes_per_token_per_head"] == pytest.approx(per_tok)
    s2 = CompressionScheme(kv_sparsity=0.7, kv_dense_recent=32)
    st2 = kv_statistics(m, list(calib.windows), s2)
    dens = st2["layers"][0][0]["k_density"]
    assert dens == pytest.approx((head_dim - round(0.7 * head_dim)) / head_dim)
    assert st2["mean_bytes_per_token_per_head"] < 2 * head_dim * 2 * 0.5


def test_channel_pruning_keeps_per_channel_tiles():
    from quant.methods.kvcache import prune_per_channel

    x = torch.randn(2, 150, 16)
    p = prune_per_channel(x, 0.75, tile=64)
    assert torch.all((p[:, :128] != 0).view(2, 2, 64, 16).sum(2) == 16)  # 64 - round(0.75 * 64) per full tile
    assert torch.all((p[:, 128:] != 0).sum(1) == 22 - round(0.75 * 22))  # the partial tile keeps its share
    tile = x[:, :64].abs()
    kept_min = torch.where(p[:, :64] != 0, tile, torch.inf).amin(1)
    dropped_max = torch.where(p[:, :64] == 0, tile, 0).amax(1)
    assert torch.all(kept_min >= dropped_max)


def test_output_aware_weights_change_the_selection():
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    assert torch.equal(prune_per_token(x, 0.5) != 0, torch.tensor([[[False, False, True, True]]]))
    w = torch.tensor([10.0, 10.0, 1.0, 1.0])
    assert torch.equal(prune_per_token(x, 0.5, w) != 0, torch.tensor([[[True, True, False, False]]]))


def test_sinks_stay_dense_and_variants_run(tiny_model, tiny_calibration):
    cal = tiny_calibration(n=2, t=128)
    ids = torch.tensor(cal.windows[:1])
    base = tiny_model()
    with torch.no_grad():
        ref = base(ids)
    errs = {}
    for kw in (
        {},
        {"sink": 4},
        {"selection": "output_aware"},
        {"k_granularity": "channel"},
        {"allocation": "sensitivity"},
    ):
        m = tiny_model()
        rep = quantize(m, KVBitmapConfig(0.7, dense_recent=0, calib_windows=2, **kw), calibration=cal)[0]
        c = m.blocks[0].attn.kv_codec
        k, v = torch.randn(1, 2, 128, 16), torch.randn(1, 2, 128, 16)
        kp, vp = c.prune(k, v, 0)
        if kw.get("sink"):
            assert torch.equal(kp[..., :4, :], k[..., :4, :]) and torch.equal(vp[..., :4, :], v[..., :4, :])
        if kw.get("allocation"):
            kept = rep["allocation_detail"]["kept_per_layer"]
            assert sum(kept) == len(m.blocks) * (16 - round(0.7 * 16))  # same total bytes as uniform
            st = kv_statistics(m, list(cal.windows), CompressionScheme(kv_sparsity=0.7))
            assert st["mean_density"] == pytest.approx(sum(kept) / len(kept) / 16)
        with torch.no_grad():
            errs[str(kw)] = float((m(ids) - ref).abs().mean())
    assert all(e > 0 for e in errs.values())


def test_bitmap_variant_checks():
    with pytest.raises(SpecError, match="selection"):
        KVBitmapConfig(selection="attention")
    with pytest.raises(SpecError, match="sink"):
        KVBitmapConfig(sink=-1)
    with pytest.raises(SpecError, match="calibration"):
        quantize(__import__("copy").deepcopy(_tiny()), KVBitmapConfig(selection="output_aware"))


def _tiny():
    from models.llama import Llama, LlamaConfig

    return Llama(
        LlamaConfig(
            n_layers=1,
            d_model=32,
            n_heads=2,
            n_kv_heads=1,
            d_ff=64,
            vocab_size=11,
            rope_theta=1e4,
            norm_eps=1e-5,
            max_seq_len=64,
        )
    )
