"""Round-to-nearest group-wise weight quantization (the baseline every error-compensating method is measured
against). Pruned weights (a `keep` mask left by an earlier pruning step) stay zero."""

from __future__ import annotations

from dataclasses import dataclass

from base.errors import SpecError
from quant.methods._prims import QuantLinear, fake_quant_weight
from quant.quantize import register

__all__ = ["RTNConfig"]


@dataclass(frozen=True)
class RTNConfig:
    """bits: 2..8; group_size: input columns per (fp16 scale, zero point); clip_search: MSE-optimal range shrink
    per group instead of plain min/max (off = textbook RTN)."""

    bits: int = 4
    group_size: int = 128
    clip_search: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise SpecError(f"RTN bits must be 2..8, got {self.bits}")
        if self.group_size < 1:
            raise SpecError(f"RTN group_size must be >= 1, got {self.group_size}")


@register(RTNConfig)
def _rtn(model, cfg: RTNConfig, calibration=None) -> dict:
    for blk in model.blocks:
        for name, lin in blk.linears().items():
            ql = QuantLinear.wrap(lin)
            deq, codes, scales, zeros = fake_quant_weight(
                ql.weight.data, cfg.bits, cfg.group_size, clip_search=cfg.clip_search, keep=ql.keep
            )
            new = QuantLinear(
                deq,
                bits=cfg.bits,
                group_size=cfg.group_size,
                codes=codes,
                scales=scales,
                zeros=zeros,
                keep=ql.keep,
                pruning=ql.pruning,
                act_bits=ql.act_bits,
            )
            blk.set_linear(name, new)
    return {"method": "rtn", "bits": cfg.bits, "group_size": cfg.group_size, "clip_search": cfg.clip_search}
