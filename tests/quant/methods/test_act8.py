import pytest
import torch

from base.errors import SpecError
from quant.methods import A8Config
from quant.quantize import quantize


def test_a8_changes_outputs_slightly(tiny_model):
    m = tiny_model()
    ids = torch.randint(0, 97, (1, 20))
    ref = m(ids)
    quantize(m, A8Config())
    assert all(l.act_bits == 8 for b in m.blocks for l in b.linears().values())
    out = m(ids)
    assert not torch.equal(out, ref)
    assert float((out - ref).abs().max()) < 0.05 * float(ref.abs().max())
    with pytest.raises(SpecError):
        A8Config(bits=4)
