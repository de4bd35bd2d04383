"""Quantization-aware training with distillation from the uncompressed model (weights W2..W8, and masked fine-tuning
of pruned fp weights), in two phases after an error-compensating initialisation.

Design (ours; in the spirit of EfficientQAT, Chen et al. 2024, arXiv 2407.11062, Sec. 3: block-wise training of all
parameters "Block-AP", then end-to-end training "E2E-QP"; OmniQuant, Shao et al. 2023, arXiv 2308.13137, for
block-wise reconstruction with learnable quantization parameters; ParetoQ, Liu et al. 2025, arXiv 2502.02631, for
QAT of small models at 2 bits with a straight-through estimator):

0. Teacher: a frozen copy of the incoming (uncompressed) model. Initialisation: GPTQ / SparseGPT (`GPTQConfig` with
   the same bits, group size and pruning) on the first `gptq_windows` training windows, or round-to-nearest with
   MSE clip search (+ Wanda masks) with ``init="rtn"``. The pruning mask is fixed from here on.
1. Every projection becomes a fake-quantized linear (QATLinear) with latent codes u (the init's codes at step 0,
   in steps of the quantization grid), learnable per-group scales s and zero points z. Forward:
   (clamp(round(u) + round(z), 0, 2^b - 1) - round(z)) * s * mask, rounding with a straight-through estimator, so
   a scale's gradient is that of the codebook with its codes held (EfficientQAT's E2E-QP). With bits = 16 (pruning
   only) the forward is w * mask: a masked fine-tune of the surviving weights. Int8 per-token inputs (A8), if the
   layer has them, are fake-quantized in the loop with a straight-through estimator. Learning rates are relative
   (module QATLinear): one rate means the same in every layer whatever its weights' magnitude.
2. Block-wise reconstruction (``block_steps`` per block, block 0 first): minimise the MSE between the student
   block's output on the student's own inputs (the outputs of the already-trained student blocks) and the teacher
   block's output on the teacher's inputs, over random minibatches of training windows; s, z and, where asked,
   the block's RMSNorm weights (``train_norms``) and u (``train_weights``) train with Adam.
3. End-to-end distillation (``steps``): KL(teacher || student) of the next-token distributions (temperature
   ``temperature``) over random minibatches of training windows; s, z and, where asked, norms and u train with
   Adam and cosine learning-rate decay. The tied embedding / LM head stays frozen. The KL on `val_windows`
   training windows held out of this phase is measured before the first step and every tenth of the phase; the
   best state is kept (so this phase never leaves the model worse on held-out training text than it found it).
4. Freeze: scales are rounded to fp16, zero points to integers, codes recomputed from them, so the result is
   exactly what the packed format stores (QuantLinear with codes/scales/zeros/keep).

Latent codes train only where asked (by default only with bits = 16, where nothing else would): Adam moves every
latent by about its learning rate per step whatever its gradient's size, so the codes of an error-compensated init
either stay put (none reaches a rounding boundary within a few hundred steps) or, at a rate that lets them move,
millions flip together and the block's error rises. benchmarks/qat_probe.py measures this and the other choices
on SmolLM2-135M (benchmarks/data/qat_probe_cpu.json).

Divergence: a non-finite loss, or a phase whose mean loss over its last tenth of steps exceeds `diverge_factor`
times its mean over its first tenth, stops the method with a SpecError (the caller writes no artifact).

Training text: whatever `calibration` holds (Wikipedia lead sections from models.data; never evaluation text). The
report records the text's provenance, tokens seen, steps, seed and device. Results reproduce from a fixed seed on
the same device type (CPU runs are bitwise deterministic; CUDA kernels may differ in the last bits).
Meant for a GPU (one H100 initialises SmolLM2-135M W2 g64 by GPTQ on 128 windows in about 45 s; benchmarks/data/
quality_device.json); it runs on CPU too, slowly (benchmarks/qat_probe.py runs short phases there).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from base.errors import SpecError
from quant.methods._calib import block_inputs, require_calibration
from quant.methods._prims import QuantLinear, quant_act_int8
from quant.methods.gptq import GPTQConfig
from quant.quantize import quantize, register

__all__ = [
    "QATConfig",
    "QATDiverged",
    "QATLinear",
    "init_student",
    "prepare_student",
    "block_reconstruct",
    "distill",
    "freeze",
]


class QATDiverged(SpecError):
    """The training loss became non-finite or rose; nothing was written."""


@dataclass(frozen=True)
class QATConfig:
    """The QAT recipe (module docstring).

    bits: 2..8, or 16 for a masked fine-tune of pruned fp weights (then pruning is required); group_size, pruning,
    sparsity: the weight format (as GPTQConfig); init: gptq | rtn; gptq_windows: training windows the
    initialisation calibrates on (the first ones); block_steps / block_windows / block_lr / block_lr_scale: the
    block-wise phase (steps per block, training windows it draws from, Adam learning rates of latent weights and of
    scales / zero points / norms); steps / lr / lr_scale: the end-to-end phase. Learning rates are relative: latent
    codes in grid steps, fp latent weights (bits = 16) in units of their row's RMS, scales as a fraction of their
    initial value, zero points in grid steps, norm weights as they are (about 1). train_weights: whether latent
    weights train (None: only with bits = 16; False gives EfficientQAT's E2E-QP); train_norms: whether the RMSNorm
    weights train with the scales; val_windows: training windows
    (the last ones) held out of the end-to-end phase to pick its best checkpoint (0: keep the last); batch: windows
    per step; temperature: of the distillation; diverge_factor: last over first tenth's mean loss that counts as
    divergence; seed: of the minibatch order and of torch.
    """

    bits: int = 2
    group_size: int = 64
    pruning: Literal["none", "2:4", "unstructured"] = "none"
    sparsity: float = 0.0
    init: Literal["gptq", "rtn"] = "gptq"
    gptq_windows: int = 128
    block_steps: int = 100
    block_windows: int = 256
    # Relative rates. Scales: Adam moves each by about lr_scale of itself per step, so over a cosine-decayed phase
    # of n steps by at most n * lr / 2: 5% in 100 block-wise steps, 12% in 500 end-to-end ones (EfficientQAT's
    # 2e-5 absolute on Llama-2-7B's 2-bit step sizes of a few 1e-2 is the same order). Latent weights (bits = 16):
    # 5e-4 of the row RMS per step, the relative size of EfficientQAT's 2e-5 on Llama-2-7B's weights (RMS ~0.02).
    block_lr: float = 5e-4
    block_lr_scale: float = 1e-3
    steps: int = 500
    lr: float = 2.5e-4
    lr_scale: float = 5e-4
    train_weights: bool | None = None
    train_norms: bool = True
    val_windows: int = 16
    batch: int = 8
    temperature: float = 1.0
    diverge_factor: float = 1.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not (2 <= self.bits <= 8 or self.bits == 16):
            raise SpecError(f"QAT bits must be 2..8 (or 16 for a masked fine-tune of pruned weights), got {self.bits}")
        if self.init not in ("gptq", "rtn"):
            raise SpecError(f"QAT init {self.init!r} unknown; use gptq or rtn")
        if (
            self.steps < 0
            or self.block_steps < 0
            or self.batch < 1
            or min(self.gptq_windows, self.block_windows) < 1
            or self.val_windows < 0
        ):
            raise SpecError("QAT needs steps >= 0, block_steps >= 0, batch >= 1, gptq_windows >= 1, block_windows >= 1")
        if min(self.lr, self.lr_scale, self.block_lr, self.block_lr_scale) <= 0 or self.temperature <= 0:
            raise SpecError("QAT learning rates and temperature must be positive")
        if self.bits == 16 and self.train_weights is False:
            raise SpecError("a masked fine-tune (bits 16) trains the surviving weights: train_weights cannot be False")
        if self.diverge_factor <= 1:
            raise SpecError(f"diverge_factor must be > 1, got {self.diverge_factor}")
        GPTQConfig(bits=self.bits, group_size=self.group_size, pruning=self.pruning, sparsity=self.sparsity)


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def _act8_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (quant_act_int8(x) - x).detach()


class QATLinear(nn.Module):
    """A trainable fake-quantized (or masked) linear layer built from a QuantLinear (see module docstring).

    Every trained quantity is stored relative to its initial size, so that one Adam learning rate means the same
    thing in every layer: latent codes `u` in steps of the quantization grid (integers, the init's codes minus the
    zero point, at step 0), scales as multiples `s` of the init's scales `s0`, zero points `z` in grid steps, and,
    with bits = 16, latent weights in units of their row's RMS. The weight is

        (clamp(round(u) + round(z), 0, 2^b - 1) - round(z)) * s0 * |s|    (rounding: straight-through estimator)

    so a scale's gradient is that of the codebook with the codes held (EfficientQAT's end-to-end step-size training)
    rather than LSQ's, which vanishes where the latent weights sit at the centres of their bins, as they do after an
    initialisation that starts from quantized weights.
    """

    def __init__(self, ql: QuantLinear) -> None:
        super().__init__()
        dev = ql.weight.device
        self.bits, self.g, self.pruning, self.act_bits = ql.bits, ql.group_size, ql.pruning, ql.act_bits
        self.in_f = ql.weight.shape[1]
        w0 = ql.weight.detach().float()
        if self.bits < 16:
            s0 = ql.scales.to(dev).float().abs().clamp(min=2**-24)
            z0 = ql.zeros.to(dev).float()
            self.register_buffer("s0", s0)
            self.s = nn.Parameter(torch.ones_like(s0))
            self.z = nn.Parameter(z0.clone())
            if ql.codes is not None:
                u = ql.codes.to(dev).float() - self._expand(z0)
            else:
                u = torch.round(w0 / self._expand(s0))
            self.register_buffer("unit", None)
        else:
            self.s = self.z = None
            self.register_buffer("s0", None)
            unit = w0.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=2**-24)
            self.register_buffer("unit", unit)
            u = w0 / unit
        self.w = nn.Parameter(u)
        self.register_buffer("keep", ql.keep.to(dev) if ql.keep is not None else None)

    def _expand(self, t: torch.Tensor) -> torch.Tensor:  # [out, G] -> [out, in]
        return t.repeat_interleave(self.g, dim=1)[:, : self.in_f]

    def scales(self) -> torch.Tensor:
        """The current per-group scales [out, G] in weight units."""
        return self.s0 * self.s.abs().clamp(min=2**-24)

    def qweight(self) -> torch.Tensor:
        if self.bits == 16:
            w = self.w * self.unit
        else:
            qmax = 2**self.bits - 1
            z = self._expand(torch.clamp(_RoundSTE.apply(self.z), 0, qmax))
            q = torch.clamp(_RoundSTE.apply(self.w) + z, 0, qmax)
            w = (q - z) * self._expand(self.scales())
        return w if self.keep is None else w * self.keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits == 8:
            x = _act8_ste(x)
        return torch.nn.functional.linear(x, self.qweight().to(x.dtype))

    def params(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(latent weights, quantization parameters)."""
        return [self.w], [p for p in (self.s, self.z) if p is not None]

    def freeze(self) -> QuantLinear:
        """The trained layer as a QuantLinear: fp16 scales, integer zero points and the codes they imply."""
        with torch.no_grad():
            keep = self.keep.cpu() if self.keep is not None else None
            if self.bits == 16:
                w = self.w.detach() * self.unit
                w = w if self.keep is None else w * self.keep
                return QuantLinear(w, bits=16, keep=keep, pruning=self.pruning, act_bits=self.act_bits)
            qmax = 2**self.bits - 1
            s16 = self.scales().half().float()
            z = torch.clamp(torch.round(self.z), 0, qmax)
            se, ze = self._expand(s16), self._expand(z)
            codes = torch.clamp(torch.round(self.w) + ze, 0, qmax)
            if self.keep is not None:
                codes = torch.where(self.keep, codes, ze)
            deq = (codes - ze) * se
            return QuantLinear(
                deq,
                bits=self.bits,
                group_size=self.g,
                codes=codes.to(torch.uint8).cpu(),
                scales=s16.half().cpu(),
                zeros=z.to(torch.uint8).cpu(),
                keep=keep,
                pruning=self.pruning,
                act_bits=self.act_bits,
            )


def _trains_weights(cfg: QATConfig) -> bool:
    return cfg.bits == 16 if cfg.train_weights is None else cfg.train_weights


def _adam(weights: list, lr_weights: float, others: list, lr_others: float) -> torch.optim.Adam:
    """Adam over latent weights at one (relative) rate and scales / zero points / norms at another."""
    groups = [{"params": weights, "lr": lr_weights}, {"params": others, "lr": lr_others}]
    return torch.optim.Adam([g for g in groups if g["params"]])


def init_student(model, cfg: QATConfig, calibration) -> dict:
    """Step 0 of the module docstring: GPTQ / SparseGPT, or Wanda + RTN, on the first gptq_windows windows."""
    from quant.methods.prune import WandaConfig
    from quant.methods.rtn import RTNConfig

    n = min(cfg.gptq_windows, len(calibration.windows))
    cal = replace(calibration, windows=calibration.windows[:n])
    if cfg.init == "gptq":
        return quantize(
            model,
            GPTQConfig(bits=cfg.bits, group_size=cfg.group_size, pruning=cfg.pruning, sparsity=cfg.sparsity),
            calibration=cal,
        )[0]
    reps = []
    if cfg.pruning != "none":
        reps += quantize(model, WandaConfig(pattern=cfg.pruning, sparsity=cfg.sparsity), calibration=cal)
    if cfg.bits < 16:
        reps += quantize(model, RTNConfig(bits=cfg.bits, group_size=cfg.group_size, clip_search=True))
    return {"method": "wanda+rtn", "steps": reps}


def prepare_student(model) -> list[tuple[object, str, QATLinear]]:
    """Swap every (already initialised) QuantLinear projection for a QATLinear; returns (block, name, module)."""
    mods = []
    model.requires_grad_(False)
    for blk in model.blocks:
        for n, lin in blk.linears().items():
            m = QATLinear(QuantLinear.wrap(lin)).requires_grad_(False)  # each phase turns on what it trains
            blk.set_linear(n, m)
            mods.append((blk, n, m))
    return mods


def freeze(model) -> None:
    """Swap every QATLinear back for the QuantLinear it implies."""
    for blk in model.blocks:
        for n, lin in blk.linears().items():
            if isinstance(lin, QATLinear):
                blk.set_linear(n, lin.freeze())
    model.eval().requires_grad_(False)


def _autocast(dev: torch.device):
    import contextlib

    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check(losses: list[float], phase: str, factor: float) -> None:
    if not losses:
        return
    if not math.isfinite(losses[-1]):
        raise QATDiverged(
            f"QAT diverged: {phase} loss became {losses[-1]} at step {len(losses)}; lower the "
            "learning rates (--lr) or check the training text"
        )
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k  # tenths, not single minibatches: one can be easy
    if len(losses) >= 10 and last > factor * first:
        raise QATDiverged(
            f"QAT diverged: {phase} loss rose from {first:.4g} to {last:.4g} over {len(losses)} "
            "steps; lower the learning rates"
        )


def block_reconstruct(student, teacher, ids: torch.Tensor, cfg: QATConfig, gen: torch.Generator) -> list[dict]:
    """Phase 2 (module docstring): per block, MSE of student block output on student inputs vs teacher block output
    on teacher inputs. ids [N, T] on the model's device. Returns per-block first/last losses."""
    dev = ids.device
    out = []
    with torch.no_grad(), _autocast(dev):
        xs, cos, sin = block_inputs(student, ids)
        xt = xs.clone()
    xs, xt = xs.float(), xt.float()
    bs = cfg.batch
    for li, (sb, tb) in enumerate(zip(student.blocks, teacher.blocks)):
        with torch.no_grad(), _autocast(dev):
            yt = torch.cat([tb(xt[i : i + bs], cos, sin).float() for i in range(0, xt.shape[0], bs)])
        ws, qs = [], []
        for lin in sb.linears().values():
            if isinstance(lin, QATLinear):
                a, b = lin.params()
                ws += a
                qs += b
        norms = [sb.attn_norm.weight, sb.ffn_norm.weight] if cfg.train_norms else []
        losses: list[float] = []
        if not _trains_weights(cfg):
            ws = []
        if cfg.block_steps and (ws or qs):
            for p in ws + qs + norms:
                p.requires_grad_(True)
            opt = _adam(ws, cfg.block_lr, norms + qs, cfg.block_lr_scale)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(1, cfg.block_steps)))
            )
            scale = float(yt.pow(2).mean()) or 1.0  # normalise the MSE by the target's power
            for _ in range(cfg.block_steps):
                idx = torch.randint(0, xs.shape[0], (bs,), generator=gen).to(dev)
                with torch.enable_grad(), _autocast(dev):
                    y = sb(xs[idx], cos, sin).float()
                    loss = (y - yt[idx]).pow(2).mean() / scale
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                _check(losses[-1:], f"block {li} reconstruction", cfg.diverge_factor)
            _check(losses, f"block {li} reconstruction", cfg.diverge_factor)
            for p in ws + qs + norms:
                p.requires_grad_(False)
        with torch.no_grad(), _autocast(dev):
            xs = torch.cat([sb(xs[i : i + bs], cos, sin).float() for i in range(0, xs.shape[0], bs)])
        xt = yt
        k = max(1, len(losses) // 10)
        out.append(
            {
                "block": li,
                "loss_first": round(sum(losses[:k]) / k, 5) if losses else None,
                "loss_last": round(sum(losses[-k:]) / k, 5) if losses else None,
            }
        )
    return out


def _kd(student, teacher, x: torch.Tensor, t: float) -> torch.Tensor:
    with torch.no_grad():
        t_logp = torch.log_softmax(teacher(x)[:, :-1].float() / t, dim=-1)
    s_logp = torch.log_softmax(student(x)[:, :-1].float() / t, dim=-1)
    return (
        torch.nn.functional.kl_div(s_logp.flatten(0, 1), t_logp.flatten(0, 1), log_target=True, reduction="batchmean")
        * t
        * t
    )


def distill(
    student, teacher, ids: torch.Tensor, cfg: QATConfig, gen: torch.Generator, info: dict | None = None
) -> list[float]:
    """Phase 3 (module docstring): end-to-end KL distillation. ids [N, T] on the model's device (the last
    cfg.val_windows held out to pick the best checkpoint). Returns the training losses; `info` (if given) receives
    the held-out KL before, at its best and the best step."""
    dev = ids.device
    n_val = cfg.val_windows if ids.shape[0] > cfg.val_windows else 0
    val, ids = (ids[-n_val:], ids[:-n_val]) if n_val else (None, ids)
    ws, qs = [], []
    for blk in student.blocks:
        for lin in blk.linears().values():
            if isinstance(lin, QATLinear):
                a, b = lin.params()
                ws += a
                qs += b
    norms = [p for name, p in student.named_parameters() if "norm" in name] if cfg.train_norms else []
    tw = _trains_weights(cfg)
    train = (ws if tw else []) + qs + norms
    for p in train:
        p.requires_grad_(True)
    opt = _adam(ws if tw else [], cfg.lr, norms + qs, cfg.lr_scale)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(1, cfg.steps))))
    losses: list[float] = []
    t = cfg.temperature

    def val_kl() -> float:
        with torch.no_grad(), _autocast(dev):
            return (
                sum(
                    float(_kd(student, teacher, val[i : i + cfg.batch], t)) * min(cfg.batch, n_val - i)
                    for i in range(0, n_val, cfg.batch)
                )
                / n_val
            )

    every = max(1, cfg.steps // 10)
    best = val_kl() if n_val else None
    best_step, first_val = 0, best
    best_state = [p.detach().clone() for p in train] if n_val else None
    student.train()
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, ids.shape[0], (cfg.batch,), generator=gen).to(dev)
        with torch.enable_grad(), _autocast(dev):
            loss = _kd(student, teacher, ids[idx], t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        _check(losses[-1:], "end-to-end distillation", cfg.diverge_factor)
        if n_val and (step % every == 0 or step == cfg.steps):
            v = val_kl()
            if v < best:
                best, best_step = v, step
                best_state = [p.detach().clone() for p in train]
    _check(losses, "end-to-end distillation", cfg.diverge_factor)
    if n_val:
        with torch.no_grad():
            for p, b in zip(train, best_state):
                p.copy_(b)
    for p in train:
        p.requires_grad_(False)
    student.eval()
    if info is not None and n_val:
        info.update(
            {
                "val_windows": n_val,
                "val_kl_first": round(first_val, 5),
                "val_kl_best": round(best, 5),
                "best_step": best_step,
            }
        )
    return losses


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return "cpu"


@register(QATConfig)
def _qat(model, cfg: QATConfig, calibration=None) -> dict:
    ids = require_calibration(calibration, "QAT")
    for blk in model.blocks:
        for lin in blk.linears().values():
            if isinstance(lin, QuantLinear) and (lin.bits < 16 or lin.keep is not None):
                raise SpecError(
                    "QAT starts from the uncompressed model (its teacher); apply it before any other weight method"
                )
    dev = model.embed.weight.device
    ids = ids.to(dev)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    init_rep = init_student(model, cfg, calibration)
    t_init = time.time() - t0
    prepare_student(model)
    blocks = block_reconstruct(model, teacher, ids[: cfg.block_windows], cfg, gen) if cfg.block_steps else []
    t_block = time.time() - t0 - t_init
    val_info: dict = {}
    losses = distill(model, teacher, ids, cfg, gen, val_info) if cfg.steps else []
    freeze(model)
    del teacher
    k = max(1, len(losses) // 10)
    win = ids.shape[1]
    return {
        "method": "qat",
        "init": cfg.init,
        "bits": cfg.bits,
        "group_size": cfg.group_size,
        "pruning": cfg.pruning,
        "sparsity": cfg.sparsity,
        "block_steps": cfg.block_steps,
        "block_lr": cfg.block_lr,
        "block_lr_scale": cfg.block_lr_scale,
        "steps": cfg.steps,
        "batch": cfg.batch,
        "lr": cfg.lr,
        "lr_scale": cfg.lr_scale,
        "train_weights": _trains_weights(cfg),
        "train_norms": cfg.train_norms,
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "block_windows": min(cfg.block_windows, int(ids.shape[0])),
        "tokens_seen": {
            "block": cfg.block_steps * cfg.batch * win * len(model.blocks),
            "end_to_end": cfg.steps * cfg.batch * win,
        },
        "kd_loss_first": round(sum(losses[:k]) / k, 4) if losses else None,
        "kd_loss_last": round(sum(losses[-k:]) / k, 4) if losses else None,
        "block_losses": blocks,
        "end_to_end_validation": val_info,
        "init_report": init_rep,
        "training_text": dict(calibration.provenance),
        "training_windows": int(ids.shape[0]),
        "window_tokens": int(win),
        "device": _device_name(dev),
        "torch": torch.__version__,
        "seconds": {
            "init": round(t_init, 1),
            "block": round(t_block, 1),
            "end_to_end": round(time.time() - t0 - t_init - t_block, 1),
        },
    }
