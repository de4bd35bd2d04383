"""A8: per-token symmetric int8 quantization of every linear layer's input (one fp16 scale per token)."""

from __future__ import annotations

from dataclasses import dataclass

from base.errors import SpecError
from quant.methods._prims import QuantLinear
from quant.quantize import register

__all__ = ["A8Config"]


@dataclass(frozen=True)
class A8Config:
    bits: int = 8

    def __post_init__(self) -> None:
        if self.bits != 8:
            raise SpecError(f"activation quantization supports 8 bits only, got {self.bits}")


@register(A8Config)
def _a8(model, cfg: A8Config, calibration=None) -> dict:
    for blk in model.blocks:
        for name, lin in blk.linears().items():
            ql = QuantLinear.wrap(lin)
            ql.act_bits = cfg.bits
            blk.set_linear(name, ql)
    return {"method": "a8", "bits": cfg.bits, "granularity": "per-token symmetric"}
