import pytest
import torch

from base.errors import SpecError
from quant.methods import GPTQConfig, RTNConfig
from quant.methods._prims import fake_quant_weight
from quant.methods.gptq import gptq_matrix
from quant.quantize import quantize


def _problem(seed=0, rows=32, cols=128, n=2048):
    g = torch.Generator().manual_seed(seed)
    # correlated inputs with uneven channel scales, like real activations
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    x = torch.randn(n, cols, generator=g) @ mix * (torch.rand(cols, generator=g) * 3 + 0.1)
    w = torch.randn(rows, cols, generator=g)
    return w, x, x.T @ x / n


def _out_err(w, wq, x):
    return float(((x @ (w - wq).T) ** 2).mean())


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_layer_output(act_order):
    w, x, h = _problem()
    cfg = GPTQConfig(bits=2, group_size=32, act_order=act_order)
    deq, codes, scales, zeros, keep = gptq_matrix(w, h, cfg)
    rtn = fake_quant_weight(w, 2, 32, clip_search=True)[0]
    assert keep is None and codes.max() <= 3
    g = torch.arange(128) // 32
    torch.testing.assert_close(deq, (codes.float() - zeros.float()[:, g]) * scales.float()[:, g])
    assert _out_err(w, deq, x) < 0.9 * _out_err(w, rtn, x)


def test_sparsegpt_24_and_unstructured_masks():
    w, x, h = _problem(1)
    deq, codes, _, _, keep = gptq_matrix(w, h, GPTQConfig(bits=2, group_size=32, pruning="2:4"))
    assert torch.all(keep.view(32, -1, 4).sum(-1) == 2) and torch.all(deq[~keep] == 0)
    deq16, codes16, _, _, keep16 = gptq_matrix(w, h, GPTQConfig(bits=16, pruning="unstructured", sparsity=0.5))
    assert codes16 is None and abs(float(keep16.float().mean()) - 0.5) < 0.01
    # error compensation: SparseGPT's output error is below plain magnitude pruning at the same sparsity
    from quant.methods.prune import wanda_mask

    mag = w * wanda_mask(w, torch.ones(128), "unstructured", 0.5)
    assert _out_err(w, deq16, x) < _out_err(w, mag, x)


def test_gptq_on_model_uses_calibration(tiny_calibration, tiny_model):
    m = tiny_model()
    calib = tiny_calibration()
    with pytest.raises(SpecError, match="calibration"):
        quantize(m, GPTQConfig(bits=2, group_size=32))
    rep = quantize(m, GPTQConfig(bits=3, group_size=32, pruning="2:4"), calibration=calib)
    assert rep[0]["method"] == "gptq" and rep[0]["pruning"] == "2:4"
    for blk in m.blocks:
        for lin in blk.linears().values():
            assert lin.bits == 3 and lin.keep is not None


def test_config_checks():
    with pytest.raises(SpecError, match="sparsity"):
        GPTQConfig(pruning="unstructured")
    with pytest.raises(SpecError, match="nothing"):
        GPTQConfig(bits=16)
    with pytest.raises(SpecError):
        GPTQConfig(pruning="4:8")
    assert RTNConfig(2, 64) != GPTQConfig()
