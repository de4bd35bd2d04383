"""Fixtures: a small random Llama and random calibration ids for fast method tests."""

import pytest
import torch

from models.llama import Llama, LlamaConfig

CFG = LlamaConfig(
    n_layers=2,
    d_model=64,
    n_heads=4,
    n_kv_heads=2,
    d_ff=128,
    vocab_size=97,
    rope_theta=10000.0,
    norm_eps=1e-5,
    max_seq_len=512,
)


def tiny_model(seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    m = Llama(CFG)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.fill_(1.0)
            else:
                p.normal_(0, 0.08)
    return m.eval().requires_grad_(False)


def tiny_calibration(n: int = 4, t: int = 96, seed: int = 0):
    from quant.quantize import Calibration

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, CFG.vocab_size, (n, t), generator=g)
    return Calibration(tuple(tuple(r.tolist()) for r in ids), {"source": "random ids (test)"})


@pytest.fixture(name="tiny_model")
def _tiny_model_fixture():
    return tiny_model


@pytest.fixture(name="tiny_calibration")
def _tiny_calibration_fixture():
    return tiny_calibration
