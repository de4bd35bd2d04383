"""GPTQ-style error-compensating weight quantization (Frantar et al. 2022, arXiv 2210.17323), optionally joint with
SparseGPT-style pruning (Frantar & Alistarh 2023, arXiv 2301.00774): 2:4 or unstructured.

Per linear layer, with H = E[x x^T] of its calibration inputs: columns are processed left to right (or in
descending diag(H) order, "act-order"); each column is quantized (and pruned where the mask says so) and the error,
scaled by the inverse-Hessian Cholesky factor, is pushed onto the not-yet-quantized columns (Sec. 3-4 of GPTQ, lazy
block updates). Pruning masks are chosen by SparseGPT's saliency w^2 / [H^-1]_jj^2: for 2:4 per group of 4 columns
when its first column is reached, for unstructured per row over each block of `block_size` columns.

Blocks are processed sequentially: each block's calibration inputs are the outputs of the already-compressed
blocks before it; within a block, q/k/v, then o, then gate/up, then down are compressed in turn, each seeing the
inputs produced by the already-compressed projections ("true sequential").

Groups: scales and zero points are per `group_size` consecutive input columns, as the packed format needs. Without
act-order a group's parameters are chosen when its first column is reached (from the error-updated weights). With
act-order the groups stay contiguous in the original column order ("static groups"), their parameters chosen from
the weights before any update. Act-order is not used with 2:4 pruning (the 4-column groups must stay adjacent).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch

from base.errors import SpecError
from quant.methods._calib import block_inputs, collect, require_calibration, run_block
from quant.methods._prims import QuantLinear, weight_qparams
from quant.quantize import register

__all__ = ["GPTQConfig", "gptq_matrix"]

_STAGES = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))


@dataclass(frozen=True)
class GPTQConfig:
    """bits: 2..8, or 16 for pruning only (SparseGPT); group_size: input columns per scale/zero point;
    pruning: none | 2:4 | unstructured (with sparsity); damp: fraction of mean(diag H) added to the diagonal;
    act_order: quantize columns in descending diag(H) order; clip_search: MSE-optimal range per group;
    batch: calibration windows per forward chunk."""

    bits: int = 2
    group_size: int = 64
    pruning: Literal["none", "2:4", "unstructured"] = "none"
    sparsity: float = 0.0
    damp: float = 0.01
    act_order: bool = True
    block_size: int = 128
    clip_search: bool = True
    true_sequential: bool = True
    batch: int = 8

    def __post_init__(self) -> None:
        if not (2 <= self.bits <= 8 or self.bits == 16):
            raise SpecError(f"GPTQ bits must be 2..8 (or 16 for pruning only), got {self.bits}")
        if self.pruning not in ("none", "2:4", "unstructured"):
            raise SpecError(f"pruning {self.pruning!r} unknown; use none, 2:4 or unstructured")
        if self.pruning == "unstructured" and not 0 < self.sparsity < 1:
            raise SpecError(f"unstructured pruning needs 0 < sparsity < 1, got {self.sparsity}")
        if self.bits == 16 and self.pruning == "none":
            raise SpecError("GPTQ with bits=16 and no pruning does nothing; set bits < 16 or a pruning pattern")
        if self.block_size % self.group_size and self.group_size % self.block_size:
            raise SpecError(f"block_size {self.block_size} and group_size {self.group_size} must divide one another")
        if not 0 <= self.damp < 1:
            raise SpecError(f"damp must be in [0, 1), got {self.damp}")


def gptq_matrix(w: torch.Tensor, h: torch.Tensor, cfg: GPTQConfig):
    """Compress one weight matrix W [out, in] given H [in, in].

    Returns (dequantized W with pruned entries zero, codes uint8 [out, in] or None, scales fp16 [out, G] or None,
    zeros uint8 [out, G] or None, keep bool [out, in] or None).
    """
    w = w.detach().clone().float()
    rows, cols = w.shape
    h = h.clone().float()
    quant = cfg.bits < 16
    qmax = 2**cfg.bits - 1
    g = cfg.group_size
    n_groups = -(-cols // g)
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    act_order = cfg.act_order and cfg.pruning == "none" and quant
    dev = w.device
    scales = torch.zeros(rows, n_groups, device=dev)
    zeros = torch.zeros(rows, n_groups, device=dev)
    if act_order:
        for gi in range(n_groups):
            s, z = weight_qparams(w[:, gi * g : (gi + 1) * g], cfg.bits, clip_search=cfg.clip_search)
            scales[:, gi], zeros[:, gi] = s, z
        perm = torch.argsort(torch.diagonal(h), descending=True)
        w, h = w[:, perm], h[perm][:, perm]
    else:
        perm = torch.arange(cols, device=dev)
    gidx = perm // g  # group of each (permuted) column
    h += cfg.damp * torch.mean(torch.diagonal(h)) * torch.eye(cols, device=dev)
    try:
        hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except RuntimeError as exc:  # not positive definite even after damping
        raise SpecError(
            f"GPTQ: Hessian not positive definite ({exc}); raise damp or use more calibration data"
        ) from exc
    q_all = torch.zeros_like(w)
    codes = torch.zeros(rows, cols, device=dev)
    keep = torch.ones(rows, cols, dtype=torch.bool, device=dev)
    bs = cfg.block_size
    for i1 in range(0, cols, bs):
        i2 = min(i1 + bs, cols)
        cnt = i2 - i1
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d1 = torch.diagonal(hinv1)
        m1 = torch.ones_like(w1, dtype=torch.bool)
        if cfg.pruning == "unstructured":
            sal = w1**2 / d1[None, :] ** 2
            n_prune = round(cnt * cfg.sparsity)
            if n_prune:
                idx = sal.topk(n_prune, dim=1, largest=False).indices
                m1.scatter_(1, idx, False)
        for i in range(cnt):
            col = i1 + i
            wc = w1[:, i]
            d = hinv1[i, i]
            if cfg.pruning == "2:4" and i % 4 == 0:
                sal = w1[:, i : i + 4] ** 2 / d1[None, i : i + 4] ** 2
                idx = sal.topk(2, dim=1, largest=False).indices
                m1[:, i : i + 4].scatter_(1, idx, False)
            if quant:
                gi = int(gidx[col])
                if not act_order and col % g == 0:
                    s, z = weight_qparams(w1[:, i : i + g], cfg.bits, clip_search=cfg.clip_search)
                    scales[:, gi], zeros[:, gi] = s, z
                s, z = scales[:, gi], zeros[:, gi]
                c = torch.clamp(torch.round(wc / s) + z, 0, qmax)
                c = torch.where(m1[:, i], c, z)
                qc = (c - z) * s
                codes[:, col] = c
            else:
                qc = torch.where(m1[:, i], wc, torch.zeros_like(wc))
            q1[:, i] = qc
            e = (wc - qc) / d
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        q_all[:, i1:i2] = q1
        keep[:, i1:i2] = m1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    inv = torch.argsort(perm)
    q_all, codes, keep = q_all[:, inv], codes[:, inv], keep[:, inv]
    pruned = cfg.pruning != "none"
    keep = keep.cpu() if pruned else None
    if not quant:
        return q_all, None, None, None, keep
    return q_all, codes.to(torch.uint8).cpu(), scales.half().cpu(), zeros.to(torch.uint8).cpu(), keep


@register(GPTQConfig)
def _gptq(model, cfg: GPTQConfig, calibration=None) -> dict:
    ids = require_calibration(calibration, "GPTQ").to(model.embed.weight.device)
    t0 = time.time()
    with torch.no_grad():
        x, cos, sin = block_inputs(model, ids)
        for blk in model.blocks:
            stages = _STAGES if cfg.true_sequential else (sum(_STAGES, ()),)
            for names in stages:
                stats = collect(blk, list(names), x, cos, sin, cfg.batch)
                for n in names:
                    old = QuantLinear.wrap(blk.linears()[n])
                    deq, codes, scales, zeros, keep = gptq_matrix(old.weight.data, stats[n].hessian, cfg)
                    blk.set_linear(
                        n,
                        QuantLinear(
                            deq,
                            bits=cfg.bits,
                            group_size=cfg.group_size if cfg.bits < 16 else 0,
                            codes=codes,
                            scales=scales,
                            zeros=zeros,
                            keep=keep,
                            pruning=cfg.pruning,
                            act_bits=old.act_bits,
                        ),
                    )
            x = run_block(blk, x, cos, sin, cfg.batch)
    return {
        "method": "gptq" if cfg.bits < 16 else "sparsegpt",
        "bits": cfg.bits,
        "group_size": cfg.group_size,
        "pruning": cfg.pruning,
        "sparsity": cfg.sparsity,
        "damp": cfg.damp,
        "act_order": cfg.act_order,
        "clip_search": cfg.clip_search,
        "true_sequential": cfg.true_sequential,
        "calibration": dict(calibration.provenance),
        "seconds": round(time.time() - t0, 1),
    }
