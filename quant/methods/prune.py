"""Wanda pruning (Sun et al. 2023, arXiv 2306.11695): score |W_ij| * ||X_j||_2, compared within each output row
(unstructured: the lowest `sparsity` fraction of the row is removed) or within each group of 4 consecutive input
columns (2:4: the 2 lowest of every 4 are removed). No weight update; one pass of calibration text through the
uncompressed model. Leaves a `keep` mask that a later RTN step respects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from base.errors import SpecError
from quant.methods._calib import block_inputs, collect, require_calibration, run_block
from quant.methods._prims import QuantLinear
from quant.quantize import register

__all__ = ["WandaConfig", "wanda_mask"]


@dataclass(frozen=True)
class WandaConfig:
    pattern: Literal["2:4", "unstructured"] = "2:4"
    sparsity: float = 0.0
    batch: int = 8

    def __post_init__(self) -> None:
        if self.pattern not in ("2:4", "unstructured"):
            raise SpecError(f"Wanda pattern {self.pattern!r} unknown; use 2:4 or unstructured")
        if self.pattern == "unstructured" and not 0 < self.sparsity < 1:
            raise SpecError(f"unstructured pruning needs 0 < sparsity < 1, got {self.sparsity}")


def wanda_mask(w: torch.Tensor, col_norm: torch.Tensor, pattern: str, sparsity: float = 0.5) -> torch.Tensor:
    """keep mask bool [out, in] for W [out, in] and input norms [in]."""
    score = w.abs() * col_norm[None, :]
    rows, cols = w.shape
    keep = torch.ones_like(w, dtype=torch.bool)
    if pattern == "2:4":
        if cols % 4:
            raise SpecError(f"2:4 pruning needs in_features divisible by 4, got {cols}")
        s4 = score.view(rows, cols // 4, 4)
        idx = s4.topk(2, dim=-1, largest=False).indices
        keep = keep.view(rows, cols // 4, 4).scatter_(-1, idx, False).view(rows, cols)
    else:
        n = round(cols * sparsity)
        idx = score.topk(n, dim=1, largest=False).indices
        keep.scatter_(1, idx, False)
    return keep


@register(WandaConfig)
def _wanda(model, cfg: WandaConfig, calibration=None) -> dict:
    ids = require_calibration(calibration, "Wanda").to(model.embed.weight.device)
    with torch.no_grad():
        x, cos, sin = block_inputs(model, ids)
        for blk in model.blocks:
            names = list(blk.linears())
            stats = collect(blk, names, x, cos, sin, cfg.batch)
            for n in names:
                old = QuantLinear.wrap(blk.linears()[n])
                keep = wanda_mask(old.weight.data, stats[n].col_norm.to(old.weight.device), cfg.pattern, cfg.sparsity)
                if old.keep is not None:
                    keep &= old.keep.to(keep.device)
                blk.set_linear(
                    n,
                    QuantLinear(
                        old.weight.data * keep, bits=16, keep=keep.cpu(), pruning=cfg.pattern, act_bits=old.act_bits
                    ),
                )
            x = run_block(blk, x, cos, sin, cfg.batch)
    return {
        "method": "wanda",
        "pattern": cfg.pattern,
        "sparsity": cfg.sparsity,
        "calibration": dict(calibration.provenance),
    }
