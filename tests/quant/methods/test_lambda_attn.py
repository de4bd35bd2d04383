import pytest
import torch

from base.errors import SpecError
from quant.kernels import attended_mask
from quant.methods import LambdaConfig, LambdaMask
from quant.quantize import quantize


def test_mask_rows_match_decode_kernel_mask():
    m = LambdaMask(sink=4, window=16)(100)
    for i in (0, 10, 19, 20, 21, 99):
        assert m[i, : i + 1].numpy().tolist() == attended_mask(i + 1, 4, 16).tolist()
        assert not m[i, i + 1 :].any()


def test_handler_installs_mask(tiny_model):
    mdl = tiny_model()
    rep = quantize(mdl, LambdaConfig(sink=2, window=8))
    assert rep == [{"method": "lambda", "sink": 2, "window": 8}]
    assert isinstance(mdl.blocks[0].attn.attn_mask_fn, LambdaMask)
    with pytest.raises(SpecError):
        LambdaConfig(window=0)


def test_exact_masking_equals_truncated_context(tiny_model):
    # with sink=0, query i sees exactly the last `window` tokens: same as running on the truncated input
    mdl = tiny_model()
    ids = torch.randint(0, 97, (1, 30))
    quantize(mdl, LambdaConfig(sink=0, window=30))
    a = mdl(ids)[0, -1]
    mdl.set_attn_mask(None)
    b = mdl(ids)[0, -1]
    torch.testing.assert_close(a, b)
