import torch

from quant.methods._prims import fake_quant_weight, quant_act_int8, quant_sym_int, weight_qparams


def test_fake_quant_codes_and_dequant_agree():
    torch.manual_seed(0)
    w = torch.randn(8, 100)
    deq, codes, scales, zeros = fake_quant_weight(w, 2, 32)
    assert codes.max() <= 3 and zeros.max() <= 3 and scales.dtype == torch.float16
    g = torch.arange(100) // 32
    ref = (codes.float() - zeros.float()[:, g]) * scales.float()[:, g]
    torch.testing.assert_close(deq, ref, rtol=0, atol=0)


def test_clip_search_never_worse():
    torch.manual_seed(1)
    w = torch.randn(16, 64) ** 3
    s0, z0 = weight_qparams(w, 2, clip_search=False)
    s1, z1 = weight_qparams(w, 2, clip_search=True)

    def err(s, z):
        q = torch.clamp(torch.round(w / s[:, None]) + z[:, None], 0, 3)
        return ((q - z[:, None]) * s[:, None] - w).abs().pow(2.4).sum(1)

    assert torch.all(err(s1, z1) <= err(s0, z0) + 1e-6)


def test_int8_activation_per_token():
    x = torch.tensor([[1.0, -2.0, 0.5], [100.0, 3.0, -50.0]])
    q = quant_act_int8(x)
    s = (x.abs().amax(1, keepdim=True) / 127).half().float()
    torch.testing.assert_close(q, torch.round(x / s) * s)
    assert torch.all((q / s).abs() <= 127)


def test_sym_int4_range():
    x = torch.randn(5, 64)
    deq, codes, s = quant_sym_int(x, 4, dim=1)
    assert codes.abs().max() <= 7 and s.shape == (5, 1)
    assert torch.all((deq - x).abs() <= s.float() / 2 + 1e-6)
