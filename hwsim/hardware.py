"""HardwareSpec: what an accelerator can do, loaded from YAML (hwsim/hardware/NAME.yaml) or a user's file.

Units are in field names. Every number of a shipped spec names its source in the YAML's ``sources`` mapping
(key = dotted field path); a test checks that no number is left without one.

Precision keys of ``compute.peak_ops_per_s`` are ``w{weight_bits}a{act_bits}`` (``w16a16`` = fp16). An operation
whose key is missing runs at the cheapest listed key that covers both widths (e.g. w2a8 falls back to w4a8, then
w8a8), never at a faster one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from base.errors import SpecError
from base.specio import from_mapping, read_json, read_yaml, rng

__all__ = ["HardwareSpec", "MemorySpec", "ComputeSpec", "FpgaSpec", "get_hardware", "list_hardware",
           "HARDWARE_DIR", "precision_key"]

HARDWARE_DIR = Path(__file__).with_name("hardware")
_KEY = re.compile(r"^w(\d+)a(\d+)$")


def precision_key(weight_bits: int, act_bits: int) -> str:
    return f"w{weight_bits}a{act_bits}"


@dataclass(frozen=True)
class MemorySpec:
    """Off-chip memory (HBM, GDDR, DDR, SDRAM) as seen by the accelerator."""

    kind: str
    capacity_bytes: int = field(metadata=rng(gt=0))
    bandwidth_bytes_per_s: float = field(metadata=rng(gt=0))  # theoretical peak, all channels
    efficiency: float = field(metadata=rng(gt=0, le=1))  # achievable fraction of peak for long sequential reads
    channels: int = field(default=1, metadata=rng(ge=1))
    burst_bytes: int = field(default=64, metadata=rng(ge=1))
    latency_ns: float = field(default=100.0, metadata=rng(ge=0))

    @property
    def channel_bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_bytes_per_s / self.channels

    @property
    def effective_bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_bytes_per_s * self.efficiency


@dataclass(frozen=True)
class ComputeSpec:
    """Peak arithmetic rates (2 ops per multiply-accumulate) by operand precision, and achievable fractions."""

    peak_ops_per_s: dict[str, float] = field(metadata=rng(gt=0))
    matrix_efficiency: float = field(metadata=rng(gt=0, le=1))  # large GEMM/GEMV work, fraction of peak
    vector_ops_per_s: float = field(metadata=rng(gt=0))  # elementwise/softmax/norm work (fp16 or fixed point)

    def __post_init__(self) -> None:
        if not self.peak_ops_per_s:
            raise SpecError("compute.peak_ops_per_s is empty; give at least one precision, e.g. w16a16")
        for key in self.peak_ops_per_s:
            if not _KEY.match(key):
                raise SpecError(f"compute.peak_ops_per_s: key {key!r} is not of the form w<bits>a<bits> "
                                "(e.g. w8a8, w16a16)")

    def peak(self, weight_bits: int, act_bits: int) -> float:
        """Peak ops/s for a weight x activation product; the cheapest listed precision covering both widths."""
        best = None
        for key, rate in self.peak_ops_per_s.items():
            w, a = map(int, _KEY.match(key).groups())
            if w >= weight_bits and a >= act_bits and (best is None or (w, a) < best[0]):
                best = ((w, a), rate)
        if best is None:
            raise SpecError(f"hardware lists no precision covering w{weight_bits}a{act_bits}; add a key "
                            f"w{max(weight_bits, 16)}a{max(act_bits, 16)} to compute.peak_ops_per_s")
        return best[1]


@dataclass(frozen=True)
class FpgaSpec:
    """FPGA-specific figures: the part's resources, the design's compute-engine shape and DSP packing."""

    part: str
    luts: int = field(metadata=rng(ge=0))
    ffs: int = field(metadata=rng(ge=0))
    dsps: int = field(metadata=rng(ge=0))
    bram_bytes: int = field(metadata=rng(ge=0))
    uram_bytes: int = field(default=0, metadata=rng(ge=0))
    engine_dsps: int = field(default=0, metadata=rng(ge=0))  # DSPs the linear-layer compute engine uses
    macs_per_dsp: dict[str, float] = field(default_factory=dict, metadata=rng(gt=0))  # DSP packing by precision
    attention_lanes: int = field(default=0, metadata=rng(ge=0))  # int4 x int8 MAC lanes of ONE attention engine
    attention_engines: int = field(default=1, metadata=rng(ge=1))  # copies of that engine
    # ---- used by the cycle-level simulator (hwsim/cyclesim); 0 = not described (the cycle model then refuses) ----
    weight_buffer_bytes: int = field(default=0, metadata=rng(ge=0))  # ONE of the linear engine's 2 weight buffers
    activation_buffer_bytes: int = field(default=0, metadata=rng(ge=0))  # on-chip activations (prefill token tile)
    linear_pipeline_cycles: int = field(default=0, metadata=rng(ge=0))  # fill/drain latency of one GEMV/GEMM


@dataclass(frozen=True)
class HardwareSpec:
    """An accelerator (GPU or FPGA design). Derived figures are properties."""

    name: str
    kind: Literal["gpu", "fpga"]
    description: str
    freq_hz: float = field(metadata=rng(gt=0))
    memory: MemorySpec
    compute: ComputeSpec
    on_chip_bytes: int = field(metadata=rng(ge=0))
    power_w: float | None = field(default=None, metadata=rng(gt=0))
    fpga: FpgaSpec | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind == "fpga" and self.fpga is None:
            raise SpecError(f"hardware {self.name!r}: kind fpga needs an 'fpga' section (part, resources)")
        if self.fpga is not None and self.fpga.engine_dsps > self.fpga.dsps:
            raise SpecError(f"hardware {self.name!r}: fpga.engine_dsps {self.fpga.engine_dsps} exceeds the part's "
                            f"{self.fpga.dsps} DSPs; lower engine_dsps")

    def peak_ops_per_s(self, weight_bits: int, act_bits: int) -> float:
        return self.compute.peak(weight_bits, act_bits)


def list_hardware() -> list[str]:
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.yaml"))


def hardware_from_mapping(data: object, where: str) -> HardwareSpec:
    return from_mapping(HardwareSpec, data, where)


def get_hardware(name_or_path: str | Path) -> HardwareSpec:
    """A shipped spec by exact name, or a user's YAML file, or an FPGA build report (JSON with a 'hardware'
    mapping, as written by `hwsim fpga build`)."""
    text = str(name_or_path)
    if text in list_hardware():
        path = HARDWARE_DIR / f"{text}.yaml"
        return hardware_from_mapping(read_yaml(path), str(path))
    path = Path(text)
    if path.suffix in (".yaml", ".yml"):
        return hardware_from_mapping(read_yaml(path), str(path))
    if path.suffix == ".json":
        data = read_json(path)
        if not isinstance(data, dict) or "hardware" not in data:
            raise SpecError(f"{path}: not an FPGA build report (no 'hardware' key); give a hardware YAML or the "
                            "report.json written by `hwsim fpga build`")
        return hardware_from_mapping(data["hardware"], f"{path}: hardware")
    raise SpecError(f"unknown hardware {text!r}; use one of {', '.join(list_hardware())}, or a path to a "
                    "hardware YAML or an FPGA build report.json")
