"""One entry point for compression: `quantize(model, config)`, dispatched on the config's type.

Each method is a frozen config dataclass plus one handler registered with `@register(ConfigType)` (quant/methods/).
A `CompressionScheme` is itself accepted: it expands (`configs_for_scheme`) into the method configs it implies and
applies them in order (pruning + weights, activations, KV cache, attention mask).

Handlers modify the model in place (swapping projections for `QuantLinear`, installing a KV codec or an attention
mask) and return a dict describing what they did; `quantize` returns the list of those dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from base.errors import SpecError

__all__ = ["Calibration", "register", "quantize", "configs_for_scheme", "registered_configs", "WEIGHT_METHODS"]

WEIGHT_METHODS = ("gptq", "qat", "rtn")

_HANDLERS: dict[type, Callable[..., dict]] = {}


@dataclass(frozen=True)
class Calibration:
    """Calibration token windows (each a tuple of ids, BOS first) and where they came from."""

    windows: tuple[tuple[int, ...], ...]
    provenance: dict = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def wiki_leads(cls, tokenizer, n: int = 128, seq_len: int = 512, seed: int = 0) -> Calibration:
        """n windows of Wikipedia lead sections (never evaluation text); see models.data.calibration_windows."""
        from models.data import calibration_windows

        wins, prov = calibration_windows(tokenizer, n, seq_len, seed)
        return cls(tuple(tuple(w) for w in wins), prov)


def register(config_type: type) -> Callable:
    """Decorator: register `handler(model, config, calibration) -> dict` for `config_type`."""

    def deco(fn: Callable[..., dict]) -> Callable[..., dict]:
        if config_type in _HANDLERS:
            raise SpecError(f"a handler for {config_type.__name__} is already registered")
        _HANDLERS[config_type] = fn
        return fn

    return deco


def _ensure_methods_loaded() -> None:
    import quant.methods  # noqa: F401  (registers every method's handler)


def registered_configs() -> list[type]:
    _ensure_methods_loaded()
    return list(_HANDLERS)


def quantize(model, config: Any, *, calibration: Calibration | None = None) -> list[dict]:
    """Compress `model` (models.llama.Llama) in place according to `config`; returns one report dict per method."""
    _ensure_methods_loaded()
    handler = _HANDLERS.get(type(config))
    if handler is None:
        known = ", ".join(sorted(t.__name__ for t in _HANDLERS))
        raise SpecError(f"no quantization method for config type {type(config).__name__}; known: {known}")
    out = handler(model, config, calibration)
    return out if isinstance(out, list) else [out]


def configs_for_scheme(scheme, *, weight_method: str = "gptq") -> list:
    """The method configs a CompressionScheme implies, in application order.

    weight_method: 'gptq' (error-compensating; SparseGPT-style joint pruning when the scheme prunes), 'qat' (GPTQ
    initialisation + quantization-aware fine-tune with distillation; GPU advised) or 'rtn' (round to nearest;
    pruning by Wanda first).
    """
    from quant.methods import (
        A8Config,
        GPTQConfig,
        KV4Config,
        KVBitmapConfig,
        LambdaConfig,
        QATConfig,
        RTNConfig,
        WandaConfig,
    )

    if weight_method not in WEIGHT_METHODS:
        raise SpecError(f"weight_method {weight_method!r} unknown; use one of {', '.join(WEIGHT_METHODS)}")
    cfgs: list = []
    if scheme.weight_bits < 16 or scheme.weight_pruning != "none":
        if weight_method == "qat":  # bits 16 with pruning: masked distillation fine-tune of the pruned weights
            cfgs.append(
                QATConfig(
                    bits=scheme.weight_bits,
                    group_size=scheme.weight_group_size,
                    pruning=scheme.weight_pruning,
                    sparsity=scheme.weight_sparsity,
                )
            )
        elif weight_method in ("gptq", "qat"):
            cfgs.append(
                GPTQConfig(
                    bits=scheme.weight_bits,
                    group_size=scheme.weight_group_size,
                    pruning=scheme.weight_pruning,
                    sparsity=scheme.weight_sparsity,
                )
            )
        else:
            if scheme.weight_pruning != "none":
                cfgs.append(WandaConfig(pattern=scheme.weight_pruning, sparsity=scheme.weight_sparsity))
            if scheme.weight_bits < 16:
                cfgs.append(RTNConfig(bits=scheme.weight_bits, group_size=scheme.weight_group_size))
    if scheme.act_bits < 16:
        cfgs.append(A8Config(bits=scheme.act_bits))
    if scheme.kv_bits < 16:
        cfgs.append(
            KV4Config(bits=scheme.kv_bits, group_size=scheme.kv_group_size, dense_recent=scheme.kv_dense_recent)
        )
    if scheme.kv_sparsity > 0:
        cfgs.append(KVBitmapConfig(sparsity=scheme.kv_sparsity, dense_recent=scheme.kv_dense_recent))
    if scheme.attn_window is not None:
        cfgs.append(LambdaConfig(sink=scheme.attn_sink, window=scheme.attn_window))
    return cfgs


def _register_scheme() -> None:
    from quant.scheme import CompressionScheme

    @register(CompressionScheme)
    def _scheme(model, scheme, calibration=None) -> list[dict]:
        reports = []
        for cfg in configs_for_scheme(scheme):
            reports.extend(quantize(model, cfg, calibration=calibration))
        return reports


_register_scheme()
