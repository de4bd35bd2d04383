import pytest
import torch

from base.errors import SpecError
from quant.methods import RTNConfig, WandaConfig
from quant.methods.prune import wanda_mask
from quant.quantize import quantize


def test_wanda_mask_uses_activation_norms():
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0, 4.0, 3.0, 2.0, 1.0]])
    norms = torch.tensor([1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0])
    keep = wanda_mask(w, norms, "2:4")
    assert keep.tolist() == [[False, False, True, True, True, True, False, False]]
    keep = wanda_mask(w, norms, "unstructured", 0.25)
    assert int(keep.sum()) == 6 and not keep[0, 0] and not keep[0, 7]


def test_wanda_then_rtn_composes(tiny_calibration, tiny_model):
    m = tiny_model()
    quantize(m, WandaConfig("2:4"), calibration=tiny_calibration())
    quantize(m, RTNConfig(2, 32))
    for blk in m.blocks:
        for lin in blk.linears().values():
            assert lin.pruning == "2:4" and lin.bits == 2
            assert torch.all(lin.keep.view(lin.out_features, -1, 4).sum(-1) == 2)
            assert torch.all(lin.weight[~lin.keep] == 0)


def test_bad_pattern():
    with pytest.raises(SpecError):
        WandaConfig("1:2")
    with pytest.raises(SpecError, match="sparsity"):
        WandaConfig("unstructured", 0.0)
