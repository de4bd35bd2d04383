import pytest
import torch

from base.errors import SpecError
from quant.methods import RTNConfig
from quant.methods._prims import QuantLinear
from quant.quantize import quantize


def test_rtn_replaces_every_projection(tiny_model):
    m = tiny_model()
    orig = {n: l.weight.clone() for n, l in m.blocks[0].linears().items()}
    rep = quantize(m, RTNConfig(bits=4, group_size=32))
    assert rep[0]["method"] == "rtn"
    for n, lin in m.blocks[0].linears().items():
        assert isinstance(lin, QuantLinear) and lin.bits == 4 and lin.codes.max() <= 15
        w = orig[n]
        err = (lin.weight - w).abs()
        step = lin.scales.float().repeat_interleave(32, dim=1)[:, : w.shape[1]]
        assert torch.all(err <= step + 1e-6)  # nearest code; the rounded zero point may shift the ends by step/2
        assert float((err / step).mean()) < 0.3


def test_rtn_keeps_pruned_zeros(tiny_model):
    m = tiny_model()
    lin = m.blocks[0].attn.q_proj
    keep = torch.rand(lin.weight.shape) > 0.5
    m.blocks[0].set_linear("q_proj", QuantLinear(lin.weight * keep, keep=keep, pruning="unstructured"))
    quantize(m, RTNConfig(bits=2, group_size=16))
    q = m.blocks[0].attn.q_proj
    assert torch.all(q.weight[~keep] == 0) and q.pruning == "unstructured"


def test_bad_config():
    with pytest.raises(SpecError, match="bits"):
        RTNConfig(bits=1)
