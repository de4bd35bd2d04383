"""Λ-shaped attention (LM-Infinite, Han et al. 2023, arXiv 2308.16137): each query attends to the first `sink`
tokens and the `window` newest tokens (itself included); everything else is masked exactly (and, in a real cache,
evicted)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from base.errors import SpecError
from quant.quantize import register

__all__ = ["LambdaConfig", "LambdaMask"]


@dataclass(frozen=True)
class LambdaConfig:
    sink: int = 4
    window: int = 2048

    def __post_init__(self) -> None:
        if self.sink < 0 or self.window < 1:
            raise SpecError(f"Λ attention needs sink >= 0 and window >= 1, got sink={self.sink} window={self.window}")


@dataclass(frozen=True)
class LambdaMask:
    """Callable (T, device) -> bool [T, T]: key j visible to query i iff j <= i and (j < sink or i - j < window)."""

    sink: int
    window: int

    def __call__(self, t: int, device=None) -> torch.Tensor:
        i = torch.arange(t, device=device)[:, None]
        j = torch.arange(t, device=device)[None, :]
        return (j <= i) & ((j < self.sink) | (i - j < self.window))


@register(LambdaConfig)
def _lambda(model, cfg: LambdaConfig, calibration=None) -> dict:
    model.set_attn_mask(LambdaMask(cfg.sink, cfg.window))
    return {"method": "lambda", "sink": cfg.sink, "window": cfg.window}
