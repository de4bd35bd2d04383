"""Functional mode on the small real model: SmolLM2-135M's decode attention through the simulated engines equals
the fixed-point golden model bit for bit (and stays within the golden model's documented error bound)."""

from __future__ import annotations

import numpy as np
import pytest

from base.errors import SpecError
from engine.datapath import run_engine
from engine.host import lambda_mask, reference_attention
from hwsim.cyclesim.functional import engine_attention

torch = pytest.importorskip("torch")  # the real model's forward pass (the [quant] extra)


@pytest.fixture(scope="module")
def smollm_qkv():
    """q of the last token [H, D] and K/V [Hkv, T, D] (after RoPE) of SmolLM2's first 2 layers on 256 tokens."""
    from models.llama import apply_rope
    from models.smollm import load_smollm2

    try:
        model, tok = load_smollm2(n_layers=2, fresh=False)
    except SpecError as exc:
        pytest.skip(str(exc))
    text = "The cycle-level simulator models an FPGA accelerator for large language models. " * 40
    ids = torch.tensor([tok.encode(text)[:256]])
    T = ids.shape[1]
    got: dict[int, dict] = {}
    hooks = []
    for blk in model.blocks:
        att = blk.attn
        layer = att.layer
        hooks.append(
            att.q_proj.register_forward_hook(
                lambda mod, inp, out, layer=layer: got.setdefault(layer, {}).__setitem__("q", out.detach())
            )
        )
        att.kv_observer = lambda l, k, v: got.setdefault(l, {}).update(k=k.detach(), v=v.detach())
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    for blk in model.blocks:
        blk.attn.kv_observer = None
    cfg = model.cfg
    cos, sin = model.rope(T)
    out = []
    for layer in sorted(got):
        q = got[layer]["q"].view(1, T, cfg.n_heads, cfg.head_dim).transpose(1, 2)  # [1, H, T, D]
        q = apply_rope(q, cos, sin)[0, :, -1].numpy().astype(np.float64)  # [H, D] the decode query
        out.append((q, got[layer]["k"][0].numpy().astype(np.float64), got[layer]["v"][0].numpy().astype(np.float64)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sink,window,lanes", [(0, None, 64), (4, 100, 8)])
def test_smollm2_attention_through_engine_is_bit_exact(smollm_qkv, sink, window, lanes):
    from quant.formats.kv import QuantKV

    for q, k, v in smollm_qkv:
        cache = QuantKV.from_float(k, v, bits=4, group_size=64, n_compressed=k.shape[1])
        res = engine_attention(q, cache, lanes=lanes, sink=sink, window=window)
        for h, head in enumerate(res.heads):
            assert np.array_equal(res.o_int[h], run_engine(head))  # bit for bit
        # sanity: the golden model's documented bound against fp64 attention on the dequantized cache
        kd, vd = cache._compressed_kv()
        rep = q.shape[0] // k.shape[0]
        for h in range(q.shape[0]):
            ref = reference_attention(q[h], kd[h // rep], vd[h // rep], sink=sink, window=window)
            sel = lambda_mask(k.shape[1], sink, window)
            assert np.abs(res.out[h] - ref).max() <= 0.04 * np.abs(vd[h // rep][sel]).max()
        assert min(res.cycles) > 0


def test_fp16_window_refused():
    from quant.formats.kv import QuantKV

    rng = np.random.default_rng(0)
    k, v = rng.normal(size=(2, 100, 64)), rng.normal(size=(2, 100, 64))
    cache = QuantKV.from_float(k, v)  # 64 tokens compressed, 36 in the fp16 window
    with pytest.raises(SpecError, match="int4 KV only"):
        engine_attention(rng.normal(size=(4, 64)), cache, lanes=8)


def test_random_gqa_layer_bit_exact():
    from quant.formats.kv import QuantKV

    rng = np.random.default_rng(1)
    k, v = rng.normal(size=(2, 192, 128)), rng.normal(size=(2, 192, 128))
    cache = QuantKV.from_float(k, v, n_compressed=192)
    res = engine_attention(rng.normal(size=(6, 128)) * 3, cache, lanes=16, sink=2, window=70)
    assert [int(np.array_equal(res.o_int[h], run_engine(hd))) for h, hd in enumerate(res.heads)] == [1] * 6
    assert len(set(res.cycles)) == 1  # same Λ pattern, dense: every head takes the same cycles
