"""Figures measured on a compressed model (an artifact) that a performance model uses instead of nominal ones."""

from __future__ import annotations

from dataclasses import dataclass

from base.errors import SpecError

__all__ = ["MeasuredProfile"]


@dataclass(frozen=True)
class MeasuredProfile:
    """Figures measured on a compressed model (an artifact), used instead of the scheme's nominal ones.

    `layer_weight_bytes[l]`: bytes of block l's linear layers (biases included) as stored; `lm_head_bytes`: the LM
    head as stored (None: nominal); `kv_sparsity_per_layer[l]`: fraction of K/V elements pruned in layer l,
    measured on calibration text (None: the scheme's nominal sparsity).
    """

    source: str
    layer_weight_bytes: tuple[int, ...]
    lm_head_bytes: int | None = None
    kv_sparsity_per_layer: tuple[float, ...] | None = None

    def check(self, num_layers: int) -> None:
        if len(self.layer_weight_bytes) != num_layers:
            raise SpecError(
                f"{self.source}: {len(self.layer_weight_bytes)} per-layer weight sizes for a model of "
                f"{num_layers} layers; the artifact does not match its model spec"
            )
        if self.kv_sparsity_per_layer is not None and len(self.kv_sparsity_per_layer) != num_layers:
            raise SpecError(
                f"{self.source}: {len(self.kv_sparsity_per_layer)} per-layer KV sparsities for "
                f"{num_layers} layers; the artifact does not match its model spec"
            )
