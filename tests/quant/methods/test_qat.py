import copy

import pytest
import torch

from base.errors import SpecError
from quant.methods import A8Config, GPTQConfig, QATConfig
from quant.methods._prims import QuantLinear
from quant.methods.qat import QATDiverged, QATLinear, _check
from quant.quantize import configs_for_scheme, quantize
from quant.scheme import CompressionScheme


def _kl(teacher, student, ids):
    with torch.no_grad():
        t = torch.log_softmax(teacher(ids)[:, :-1], -1)  # positions that predict a next token, as QAT's loss
        s = torch.log_softmax(student(ids)[:, :-1], -1)
    return float(torch.nn.functional.kl_div(s.flatten(0, 1), t.flatten(0, 1), log_target=True, reduction="batchmean"))


def _check_format(model, bits, g, pruning):
    for blk in model.blocks:
        for lin in blk.linears().values():
            assert lin.bits == bits and lin.pruning == pruning
            if pruning == "2:4":
                assert torch.all(lin.keep.view(lin.out_features, -1, 4).sum(-1) == 2)
                assert torch.all(lin.weight[~lin.keep] == 0)
            if bits < 16:
                assert lin.codes.max() <= 2**bits - 1 and lin.scales.dtype == torch.float16
                gi = torch.arange(lin.in_features) // g
                deq = (lin.codes.float() - lin.zeros.float()[:, gi]) * lin.scales.float()[:, gi]
                if lin.keep is not None:
                    deq = deq * lin.keep
                torch.testing.assert_close(lin.weight, deq)


def test_qat_improves_on_gptq_and_keeps_format(tiny_model, tiny_calibration):
    base = tiny_model()
    cal = tiny_calibration(n=12, t=64)
    ids = torch.tensor(cal.windows[:8])
    g = copy.deepcopy(base)
    quantize(g, GPTQConfig(bits=2, group_size=32, pruning="2:4"), calibration=cal)
    q = copy.deepcopy(base)
    rep = quantize(
        q,
        QATConfig(
            bits=2,
            group_size=32,
            pruning="2:4",
            block_steps=20,
            steps=40,
            batch=4,
            lr=1e-3,
            lr_scale=1e-3,
            block_lr=1e-3,
            block_lr_scale=1e-3,
            val_windows=4,
        ),
        calibration=cal,
    )[0]
    assert rep["method"] == "qat" and rep["kd_loss_last"] < rep["kd_loss_first"]
    assert rep["tokens_seen"]["end_to_end"] == 40 * 4 * 64 and rep["device"] == "cpu"
    assert rep["training_text"] == cal.provenance and rep["seed"] == 0
    assert _kl(base, q, ids) < _kl(base, g, ids)
    _check_format(q, 2, 32, "2:4")


def test_best_checkpoint_is_restored(tiny_model, tiny_calibration):
    base = tiny_model()
    cal = tiny_calibration(n=10, t=64)
    q = copy.deepcopy(base)
    rep = quantize(
        q,
        QATConfig(
            bits=4,
            group_size=32,
            block_steps=0,
            steps=20,
            batch=2,
            lr=3e-3,
            lr_scale=3e-3,
            val_windows=4,
            diverge_factor=100.0,
        ),
        calibration=cal,
    )[0]
    v = rep["end_to_end_validation"]
    assert v["val_kl_best"] <= v["val_kl_first"] and v["val_windows"] == 4
    val = torch.tensor(cal.windows[-4:])
    assert _kl(base, q, val) == pytest.approx(v["val_kl_best"], rel=0.05)  # frozen model = restored best state
    _check_format(q, 4, 32, "none")


def test_masked_finetune_keeps_the_sparsegpt_mask(tiny_model, tiny_calibration):
    base = tiny_model()
    cal = tiny_calibration(n=8, t=64)
    ids = torch.tensor(cal.windows[:4])
    sp = copy.deepcopy(base)
    quantize(sp, GPTQConfig(bits=16, pruning="2:4"), calibration=cal)
    ft = copy.deepcopy(base)
    quantize(
        ft,
        QATConfig(bits=16, pruning="2:4", block_steps=10, steps=30, batch=4, lr=1e-3, block_lr=1e-3),
        calibration=cal,
    )
    _check_format(ft, 16, 0, "2:4")
    for a, b in zip(sp.blocks, ft.blocks):
        for n in a.linears():
            assert torch.equal(a.linears()[n].keep, b.linears()[n].keep)
    assert _kl(base, ft, ids) < _kl(base, sp, ids)


def test_fixed_seed_reproduces(tiny_model, tiny_calibration):
    cal = tiny_calibration(n=6, t=48)
    cfg = QATConfig(bits=3, group_size=32, block_steps=3, steps=5, batch=2, init="rtn", seed=7)
    a, b = tiny_model(), tiny_model()
    quantize(a, cfg, calibration=cal)
    quantize(b, cfg, calibration=cal)
    for x, y in zip(a.blocks, b.blocks):
        for n in x.linears():
            assert torch.equal(x.linears()[n].codes, y.linears()[n].codes)
            assert torch.equal(x.linears()[n].scales, y.linears()[n].scales)


def test_a8_in_the_loop_is_kept(tiny_model, tiny_calibration):
    m = tiny_model()
    cal = tiny_calibration(n=4, t=48)
    quantize(m, A8Config())
    with pytest.raises(SpecError, match="before any other"):  # A8 alone is fine, compressed weights are not
        mm = copy.deepcopy(m)
        quantize(mm, GPTQConfig(bits=4, group_size=32), calibration=cal)
        quantize(mm, QATConfig(bits=2, group_size=32, steps=1, block_steps=0), calibration=cal)
    quantize(m, QATConfig(bits=2, group_size=32, steps=2, block_steps=1, batch=2), calibration=cal)
    assert all(lin.act_bits == 8 for blk in m.blocks for lin in blk.linears().values())


def test_divergence_stops_with_a_clear_message(tiny_model, tiny_calibration):
    m = tiny_model()
    cal = tiny_calibration(n=4, t=48)
    with pytest.raises(QATDiverged, match="QAT diverged: end-to-end distillation loss became"):
        quantize(m, QATConfig(bits=2, group_size=32, block_steps=0, steps=30, batch=2, lr_scale=1e30), calibration=cal)


def test_rising_loss_is_divergence_a_noisy_start_is_not():
    rising = [1.0 + 0.1 * i for i in range(20)]  # last tenth 2.85 vs first tenth 1.05
    with pytest.raises(QATDiverged, match="rose from 1.05 to 2.85 over 20 steps"):
        _check(rising, "end-to-end distillation", 1.5)
    easy_first = [0.5] + [1.0] * 19  # one easy minibatch first: the first tenth's mean is 0.75, not 0.5
    _check(easy_first, "end-to-end distillation", 1.5)


def test_qat_needs_training_text(tiny_model):
    with pytest.raises(SpecError, match="calibration"):
        quantize(tiny_model(), QATConfig(bits=2, group_size=32))


def test_qat_config_checks():
    with pytest.raises(SpecError):
        QATConfig(bits=16)  # nothing to train toward: no quantization, no pruning
    QATConfig(bits=16, pruning="2:4")
    with pytest.raises(SpecError):
        QATConfig(steps=-1)
    with pytest.raises(SpecError):
        QATConfig(pruning="unstructured")
    with pytest.raises(SpecError):
        QATConfig(init="awq")
    with pytest.raises(SpecError):
        QATConfig(diverge_factor=1.0)
    with pytest.raises(SpecError, match="train_weights"):
        QATConfig(bits=16, pruning="2:4", train_weights=False)


def test_scale_gradient_holds_the_codes():
    """Step 0 reproduces the init's weights exactly, and a scale's gradient is the codebook's with the codes held:
    sum over its group of dL/dw * (code - zero) * s0 (LSQ's would vanish here, every latent sitting on its code)."""
    gen = torch.Generator().manual_seed(0)
    out, n_in, g = 3, 12, 4
    codes = torch.randint(0, 4, (out, n_in), generator=gen).to(torch.uint8)
    zeros = torch.randint(0, 4, (out, n_in // g), generator=gen).to(torch.uint8)
    scales = (torch.rand(out, n_in // g, generator=gen) + 0.5).half()
    gi = torch.arange(n_in) // g
    offs = codes.float() - zeros.float()[:, gi]
    deq = offs * scales.float()[:, gi]
    m = QATLinear(QuantLinear(deq, bits=2, group_size=g, codes=codes, scales=scales, zeros=zeros))
    assert torch.equal(m.qweight(), deq) and torch.equal(m.w.detach(), offs)
    upstream = torch.randn(out, n_in, generator=gen)
    (m.qweight() * upstream).sum().backward()
    want = (upstream * offs).view(out, -1, g).sum(-1) * scales.float()
    torch.testing.assert_close(m.s.grad, want)
    torch.testing.assert_close(m.w.grad, upstream * scales.float()[:, gi])  # straight through, in grid steps
    frozen = m.freeze()
    assert torch.equal(frozen.codes, codes) and torch.equal(frozen.zeros, zeros) and torch.equal(frozen.weight, deq)


def test_codes_are_held_unless_asked(tiny_model, tiny_calibration):
    """By default (bits < 16) QAT trains scales, zero points and norms and keeps the init's codes; with
    train_weights=True and a rate that lets latents cross a rounding boundary, codes change."""
    base = tiny_model()
    cal = tiny_calibration(n=8, t=48)
    g = copy.deepcopy(base)
    quantize(g, GPTQConfig(bits=2, group_size=32), calibration=cal)
    kw = dict(bits=2, group_size=32, block_steps=5, steps=10, batch=2, val_windows=0, diverge_factor=1e9)
    held = copy.deepcopy(base)
    quantize(held, QATConfig(**kw), calibration=cal)
    moved = copy.deepcopy(base)
    quantize(moved, QATConfig(**kw, train_weights=True, lr=0.5, block_lr=0.5), calibration=cal)
    changed = scaled = 0
    for bg, bh, bm in zip(g.blocks, held.blocks, moved.blocks):
        for n in bg.linears():
            lg, lh, lm = bg.linears()[n], bh.linears()[n], bm.linears()[n]
            assert torch.equal(lg.codes, lh.codes)
            scaled += int(not torch.equal(lg.scales, lh.scales))
            changed += int((lg.codes != lm.codes).sum())
    assert scaled > 0 and changed > 0


def test_scheme_with_qat_method():
    cfgs = configs_for_scheme(CompressionScheme(weight_pruning="2:4"), weight_method="qat")
    assert isinstance(cfgs[0], QATConfig) and cfgs[0].bits == 16 and cfgs[0].pruning == "2:4"
    cfgs = configs_for_scheme(CompressionScheme(weight_bits=2, weight_group_size=64), weight_method="qat")
    assert cfgs[0].bits == 2 and cfgs[0].group_size == 64
