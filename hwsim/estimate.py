"""`estimate(...)`: one entry point, one result type, for every fidelity of performance model.

Fidelities register themselves by name in `FIDELITIES` (module path + function); ``analytical`` is the roofline
model of hwsim/analytical.py, ``cycle`` the cycle-level simulator. Both return an `Estimate`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from base.errors import SpecError
from quant.measured import MeasuredProfile

if TYPE_CHECKING:
    from hwsim.hardware import HardwareSpec
    from hwsim.workload import Workload
    from models.spec import ModelSpec
    from quant.scheme import CompressionScheme

__all__ = ["Estimate", "OpClass", "MeasuredProfile", "estimate", "FIDELITIES"]

FIDELITIES: dict[str, str] = {
    "analytical": "hwsim.analytical:estimate_analytical",
    "cycle": "hwsim.cyclesim:estimate_cycle",
}


@dataclass(frozen=True)
class OpClass:
    """Totals of one operator class over a phase (prefill, or all decode steps)."""

    name: str
    flops: float
    bytes: float
    time_s: float
    bound: str  # "compute" | "memory" | "mixed" (some ops of the class on each side)


@dataclass(frozen=True)
class Estimate:
    """The result of a performance estimate. Times in seconds, sizes in bytes, energy in joules."""

    fidelity: str
    model: str
    hardware: str
    scheme: str
    batch: int
    prompt_len: int
    gen_len: int
    ttft_s: float  # prefill of the whole batch, producing the first token
    decode_step_s: tuple[float, ...]  # latency of each decode step; step i runs at context prompt_len + i
    weight_bytes: int
    kv_bytes_final: float  # KV cache after prompt_len + gen_len tokens, whole batch
    activation_bytes_peak: int
    capacity_bytes: int
    prefill_ops: tuple[OpClass, ...]
    decode_ops: tuple[OpClass, ...]
    power_w: float | None
    notes: tuple[str, ...] = field(default=())

    @property
    def tpot_s(self) -> float:
        """Mean time per output token (per decode step)."""
        return sum(self.decode_step_s) / len(self.decode_step_s)

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode throughput: tokens produced per second by the whole batch."""
        return self.batch / self.tpot_s

    @property
    def e2e_s(self) -> float:
        return self.ttft_s + sum(self.decode_step_s)

    @property
    def e2e_tokens_per_s(self) -> float:
        return self.batch * self.gen_len / self.e2e_s

    @property
    def memory_bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes_final + self.activation_bytes_peak

    @property
    def fits(self) -> bool:
        return self.memory_bytes <= self.capacity_bytes

    @property
    def energy_per_token_j(self) -> float | None:
        return None if self.power_w is None else self.power_w * self.tpot_s / self.batch

    @property
    def tokens_per_j(self) -> float | None:
        e = self.energy_per_token_j
        return None if e is None else 1.0 / e

    def to_dict(self, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every figure (and, if given, the resolved inputs) as JSON-able data."""
        ops = lambda xs: [dict(name=o.name, flops=o.flops, bytes=o.bytes, time_s=o.time_s, bound=o.bound)  # noqa
                          for o in xs]
        out: dict[str, Any] = {
            "fidelity": self.fidelity, "model": self.model, "hardware": self.hardware, "scheme": self.scheme,
            "workload": {"batch": self.batch, "prompt_len": self.prompt_len, "gen_len": self.gen_len},
            "ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "decode_tokens_per_s": self.decode_tokens_per_s,
            "e2e_s": self.e2e_s, "e2e_tokens_per_s": self.e2e_tokens_per_s,
            "decode_step_s": list(self.decode_step_s),
            "memory": {"weight_bytes": self.weight_bytes, "kv_bytes_final": self.kv_bytes_final,
                       "activation_bytes_peak": self.activation_bytes_peak, "total_bytes": self.memory_bytes,
                       "capacity_bytes": self.capacity_bytes, "fits": self.fits},
            "energy": {"power_w": self.power_w, "energy_per_token_j": self.energy_per_token_j,
                       "tokens_per_j": self.tokens_per_j},
            "prefill_ops": ops(self.prefill_ops), "decode_ops": ops(self.decode_ops),
            "notes": list(self.notes),
        }
        if inputs is not None:
            out["inputs"] = inputs
        return out


def estimate(model: "ModelSpec", hardware: "HardwareSpec", scheme: "CompressionScheme",
             workload: "Workload", fidelity: str = "analytical", profile: MeasuredProfile | None = None) -> Estimate:
    """Estimate latency, throughput, memory and energy of `model` compressed by `scheme` on `hardware`.

    `profile` (from a compressed artifact) replaces nominal per-layer weight bytes and KV sparsity by measured ones.
    """
    if profile is not None:
        profile.check(model.num_layers)
    if fidelity not in FIDELITIES:
        raise SpecError(f"unknown fidelity {fidelity!r}; use one of {', '.join(FIDELITIES)}")
    module, func = FIDELITIES[fidelity].split(":")
    try:
        impl = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise SpecError(f"fidelity {fidelity!r} is not available in this build; use 'analytical'") from None
    if profile is None:
        return impl(model, hardware, scheme, workload)
    return impl(model, hardware, scheme, workload, profile=profile)
