import pytest
import torch

from base.errors import SpecError
from quant.methods import GPTQConfig, QATConfig
from quant.quantize import quantize


def _kl(teacher, student, ids):
    with torch.no_grad():
        t = torch.log_softmax(teacher(ids), -1)
        s = torch.log_softmax(student(ids), -1)
    return float(torch.nn.functional.kl_div(s.flatten(0, 1), t.flatten(0, 1), log_target=True,
                                            reduction="batchmean"))


def test_qat_improves_on_gptq_and_keeps_format(tiny_model, tiny_calibration):
    import copy

    base = tiny_model()
    cal = tiny_calibration(n=8, t=64)
    ids = torch.tensor(cal.windows[:4])
    g = copy.deepcopy(base)
    quantize(g, GPTQConfig(bits=2, group_size=32, pruning="2:4"), calibration=cal)
    q = copy.deepcopy(base)
    rep = quantize(q, QATConfig(bits=2, group_size=32, pruning="2:4", steps=60, batch=4, lr=1e-3,
                                lr_scale=1e-3), calibration=cal)[0]
    assert rep["method"] == "gptq+qat" and rep["kd_loss_last"] < rep["kd_loss_first"]
    assert _kl(base, q, ids) < _kl(base, g, ids)
    for blk in q.blocks:
        for lin in blk.linears().values():
            assert lin.bits == 2 and lin.codes.max() <= 3 and lin.scales.dtype == torch.float16
            gi = torch.arange(lin.in_features) // 32
            deq = (lin.codes.float() - lin.zeros.float()[:, gi]) * lin.scales.float()[:, gi]
            torch.testing.assert_close(lin.weight, deq * lin.keep)
            assert torch.all(lin.keep.view(lin.out_features, -1, 4).sum(-1) == 2)


def test_qat_config_checks():
    with pytest.raises(SpecError):
        QATConfig(bits=16)
    with pytest.raises(SpecError):
        QATConfig(steps=-1)
    with pytest.raises(SpecError):
        QATConfig(pruning="unstructured")
