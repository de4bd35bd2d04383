"""`estimate(...)`: one entry point, one result type, for every fidelity of performance model.

``fidelity`` picks the model: ``analytical`` is the roofline-plus-mechanisms model of hwsim/analytical.py, ``cycle``
the cycle-level simulator of hwsim/cyclesim. Both price the same operator list (hwsim/ops.py) and return an
`Estimate`. The cycle-level simulator is imported only when asked for, so `hwsim estimate` starts fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from base.errors import SpecError
from quant.measured import MeasuredProfile

if TYPE_CHECKING:
    from hwsim.hardware import HardwareSpec
    from hwsim.workload import Workload
    from models.spec import ModelSpec
    from quant.scheme import CompressionScheme

__all__ = [
    "Estimate",
    "OpClass",
    "Breakdown",
    "MeasuredProfile",
    "estimate",
    "FIDELITIES",
    "decode_samples",
    "EXACT_DECODE_STEPS",
]

EXACT_DECODE_STEPS = 1 << 16  # up to this many decode steps are priced one by one; beyond, at this many samples


def decode_samples(prompt_len: int, gen_len: int, cap: int = EXACT_DECODE_STEPS):
    """(contexts, weights) of the decode steps priced: step i runs at context prompt_len + i + 1 (the new token
    included). Up to `cap` steps, every step (weight 1); beyond, `cap` steps at the midpoints of `cap` equal slices
    of the run, each standing for its slice (step time is monotone and close to affine in the context, so the
    midpoint rule keeps the mean exact to second order)."""
    import numpy as np

    if gen_len <= cap:
        return np.arange(prompt_len + 1, prompt_len + gen_len + 1, dtype=np.float64), None
    edges = np.linspace(0.0, float(gen_len), cap + 1)
    idx = np.floor((edges[:-1] + edges[1:]) / 2)
    return prompt_len + 1 + idx, np.diff(np.floor(edges))


FIDELITIES = ("analytical", "cycle")


def _model_of(fidelity: str) -> Callable[..., Estimate]:
    """The estimate function of one fidelity."""
    if fidelity == "analytical":
        from hwsim.analytical import estimate_analytical

        return estimate_analytical
    if fidelity == "cycle":
        from hwsim.cyclesim import estimate_cycle

        return estimate_cycle
    raise SpecError(f"unknown fidelity {fidelity!r}; use one of {', '.join(FIDELITIES)}")


@dataclass(frozen=True)
class OpClass:
    """Totals of one operator class over a phase (prefill, or all decode steps)."""

    name: str
    flops: float
    bytes: float
    time_s: float
    bound: str  # "compute" | "memory" | "mixed" (some ops of the class on each side)


@dataclass(frozen=True)
class Breakdown:
    """Mean seconds per decode step that operator class `cls` spends in `mechanism` (hwsim/ops.py MECHANISMS)."""

    cls: str
    mechanism: str
    seconds: float


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
    # latency of each decode step priced; step i runs at context prompt_len + i + 1. With `decode_step_weights`
    # (long runs, see decode_samples) entry j stands for decode_step_weights[j] consecutive steps.
    decode_step_s: tuple[float, ...]
    weight_bytes: int
    kv_bytes_final: float  # KV cache after prompt_len + gen_len tokens, whole batch
    activation_bytes_peak: int
    capacity_bytes: int
    prefill_ops: tuple[OpClass, ...]
    decode_ops: tuple[OpClass, ...]
    power_w: float | None
    notes: tuple[str, ...] = field(default=())
    decode_step_weights: tuple[float, ...] = ()
    decode_breakdown: tuple[Breakdown, ...] = ()  # mean seconds per step by operator class and mechanism
    decode_bytes_per_step: float = 0.0  # mean off-chip bytes moved per decode step
    peak_bandwidth_bytes_per_s: float = 0.0  # theoretical peak of the off-chip memory (all channels)

    @property
    def decode_total_s(self) -> float:
        if self.decode_step_weights:
            return sum(t * w for t, w in zip(self.decode_step_s, self.decode_step_weights))
        return sum(self.decode_step_s)

    @property
    def tpot_s(self) -> float:
        """Mean time per output token (per decode step)."""
        return self.decode_total_s / self.gen_len

    @property
    def bandwidth_utilisation(self) -> float | None:
        """Predicted off-chip bandwidth utilisation in decode: bytes moved per step over the step time, as a fraction
        of the memory's theoretical peak (all channels, as papers quote it)."""
        if not self.peak_bandwidth_bytes_per_s or not self.decode_bytes_per_step:
            return None
        return self.decode_bytes_per_step / self.tpot_s / self.peak_bandwidth_bytes_per_s

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode throughput: tokens produced per second by the whole batch."""
        return self.batch / self.tpot_s

    @property
    def e2e_s(self) -> float:
        return self.ttft_s + self.decode_total_s

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
        ops = lambda xs: [
            dict(name=o.name, flops=o.flops, bytes=o.bytes, time_s=o.time_s, bound=o.bound)  # noqa
            for o in xs
        ]
        out: dict[str, Any] = {
            "fidelity": self.fidelity,
            "model": self.model,
            "hardware": self.hardware,
            "scheme": self.scheme,
            "workload": {"batch": self.batch, "prompt_len": self.prompt_len, "gen_len": self.gen_len},
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "e2e_s": self.e2e_s,
            "e2e_tokens_per_s": self.e2e_tokens_per_s,
            "decode_step_s": list(self.decode_step_s),
            "decode_step_weights": list(self.decode_step_weights) or None,
            "decode_bytes_per_step": self.decode_bytes_per_step,
            "bandwidth_utilisation": self.bandwidth_utilisation,
            "breakdown": [
                dict(cls=b.cls, mechanism=b.mechanism, seconds_per_step=b.seconds) for b in self.decode_breakdown
            ],
            "memory": {
                "weight_bytes": self.weight_bytes,
                "kv_bytes_final": self.kv_bytes_final,
                "activation_bytes_peak": self.activation_bytes_peak,
                "total_bytes": self.memory_bytes,
                "capacity_bytes": self.capacity_bytes,
                "fits": self.fits,
            },
            "energy": {
                "power_w": self.power_w,
                "energy_per_token_j": self.energy_per_token_j,
                "tokens_per_j": self.tokens_per_j,
            },
            "prefill_ops": ops(self.prefill_ops),
            "decode_ops": ops(self.decode_ops),
            "notes": list(self.notes),
        }
        if inputs is not None:
            out["inputs"] = inputs
        return out


def estimate(
    model: ModelSpec,
    hardware: HardwareSpec,
    scheme: CompressionScheme,
    workload: Workload,
    fidelity: str = "analytical",
    profile: MeasuredProfile | None = None,
) -> Estimate:
    """Estimate latency, throughput, memory and energy of `model` compressed by `scheme` on `hardware`.

    `profile` (from a compressed artifact) replaces nominal per-layer weight bytes and KV sparsity by measured ones.
    """
    if profile is not None:
        profile.check(model.num_layers)
    impl = _model_of(fidelity)
    est = (
        impl(model, hardware, scheme, workload)
        if profile is None
        else impl(model, hardware, scheme, workload, profile=profile)
    )
    if not est.fits:  # the figures assume the model fits; say loudly that it does not
        import dataclasses

        note = (
            f"DOES NOT FIT: needs {est.memory_bytes / 1e9:.3g} GB (weights {est.weight_bytes / 1e9:.3g} GB, KV "
            f"{est.kv_bytes_final / 1e9:.3g} GB) of {est.capacity_bytes / 1e9:.3g} GB on {hardware.name}; the "
            "times assume it did (compress more, or shorten the context)"
        )
        est = dataclasses.replace(est, notes=(note, *est.notes))
    return est
