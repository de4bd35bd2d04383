"""HardwareSpec: what an accelerator can do, loaded from YAML (hwsim/hardware/NAME.yaml) or a user's file.

Units are in field names. Every number of a shipped spec names its source in the YAML's ``sources`` mapping
(key = dotted field path); a test checks that no number is left without one. docs/hardware.md documents every field
with a template.

Precision keys (``compute.peak_ops_per_s`` of a GPU, ``macs_per_lane`` of an FPGA engine, ``fpga.macs_per_dsp``) are
``w{weight_bits}a{act_bits}`` (``w16a16`` = fp16). THE precision-fallback rule (`resolve_precision`): an operation
whose key is missing runs at the cheapest listed key that covers both widths (e.g. w2a8 falls back to w4a8, then
w8a8), never at a faster one; estimates say so in their notes.

Peak rates are derived, never stored beside the fields they come from: an FPGA's matrix rate is
``2 x MAC lanes x MACs per lane x dies x freq_hz`` of its decode (matrix-vector) or prefill (matrix-matrix) engine,
or ``2 x engine_dsps x macs_per_dsp x freq_hz`` for one reconfigurable engine. A GPU's peak tensor rate is its data
sheet figure (the physical datum), stored in ``compute.peak_ops_per_s``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from base.errors import SpecError
from base.specio import from_mapping, read_json, read_yaml, rng

__all__ = [
    "HardwareSpec",
    "MemorySpec",
    "ComputeSpec",
    "FpgaSpec",
    "EngineSpec",
    "DieSpec",
    "get_hardware",
    "list_hardware",
    "HARDWARE_DIR",
    "precision_key",
    "resolve_precision",
]

HARDWARE_DIR = Path(__file__).with_name("hardware")
_KEY = re.compile(r"^w(\d+)a(\d+)$")


def precision_key(weight_bits: int, act_bits: int) -> str:
    return f"w{weight_bits}a{act_bits}"


def _check_keys(table: dict[str, float], where: str) -> None:
    for key in table:
        if not _KEY.match(key):
            raise SpecError(f"{where}: key {key!r} is not of the form w<bits>a<bits> (e.g. w8a8, w16a16)")


def resolve_precision(table: dict[str, float], weight_bits: int, act_bits: int, where: str) -> tuple[str, float]:
    """(key, value) of the cheapest listed precision covering (weight_bits, act_bits): THE fallback rule."""
    best = _resolve_cached(tuple(table.items()), weight_bits, act_bits)
    if best is None:
        raise SpecError(
            f"{where} lists no precision covering w{weight_bits}a{act_bits}; add a key "
            f"w{max(weight_bits, 8)}a{max(act_bits, 8)} (or wider) to it"
        )
    return best[1], best[2]


@lru_cache(maxsize=1024)
def _resolve_cached(items: tuple[tuple[str, float], ...], weight_bits: int, act_bits: int):
    best = None
    for key, value in items:
        match = _KEY.match(key)
        if match is None:  # keys are checked when the spec is read
            continue
        w, a = map(int, match.groups())
        if w >= weight_bits and a >= act_bits and (best is None or (w, a) < best[0]):
            best = ((w, a), key, value)
    return best


@dataclass(frozen=True)
class MemorySpec:
    """Off-chip memory (HBM, GDDR, DDR, SDRAM) as seen by the accelerator.

    Access-pattern mechanisms (0 = not modelled): ``efficiency`` is the sustained fraction of peak of long sequential
    reads (refresh and in-stream row changes included, a measured figure); a load that begins a new DRAM row on
    its channels pays ``row_miss_ns`` more latency when it is not hidden behind older data; a read/write switch
    costs ``turnaround_ns`` on the channels it touches.
    """

    kind: str
    capacity_bytes: int = field(metadata=rng(gt=0))
    bandwidth_bytes_per_s: float = field(metadata=rng(ge=1e3, le=1e30))  # theoretical peak, all channels
    efficiency: float = field(metadata=rng(gt=0, le=1))  # achievable fraction of peak for long sequential reads
    channels: int = field(default=1, metadata=rng(ge=1))
    burst_bytes: int = field(default=64, metadata=rng(ge=1))
    latency_ns: float = field(default=100.0, metadata=rng(ge=0))
    page_bytes: int = field(default=0, metadata=rng(ge=0))  # DRAM row size per channel
    row_miss_ns: float = field(default=0.0, metadata=rng(ge=0))  # activate + precharge of a row opened out of stream
    turnaround_ns: float = field(default=0.0, metadata=rng(ge=0))  # read <-> write bus turnaround

    @property
    def channel_bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_bytes_per_s / self.channels

    @property
    def effective_bandwidth_bytes_per_s(self) -> float:
        """Sustained bandwidth of long sequential reads over ALL channels (see HardwareSpec for the active ones)."""
        return self.bandwidth_bytes_per_s * self.efficiency


@dataclass(frozen=True)
class ComputeSpec:
    """Arithmetic rates (2 ops per multiply-accumulate) and achievable fractions.

    ``peak_ops_per_s`` is stored for GPUs only (their data-sheet tensor rates); an FPGA's is derived from its engines
    (HardwareSpec.peak_ops_per_s) and must be left out.
    """

    matrix_efficiency: float = field(metadata=rng(gt=0, le=1))  # large GEMM/GEMV work, fraction of peak
    # elementwise/softmax/norm work (fp16 or fixed point)
    vector_ops_per_s: float = field(metadata=rng(ge=1e3, le=1e30))
    peak_ops_per_s: dict[str, float] = field(default_factory=dict, metadata=rng(gt=0))

    def __post_init__(self) -> None:
        _check_keys(self.peak_ops_per_s, "compute.peak_ops_per_s")

    def peak(self, weight_bits: int, act_bits: int) -> float:
        """Peak ops/s for a weight x activation product (stored table; the fallback rule applies)."""
        return resolve_precision(self.peak_ops_per_s, weight_bits, act_bits, "compute.peak_ops_per_s")[1]


@dataclass(frozen=True)
class EngineSpec:
    """A matrix engine on one die: MAC lanes along its loop dimensions.

    Decode engine (matrix-vector): ``shape`` = (output rows N, reduction K) per cycle, e.g. FlightLLM's MV 64 x 16.
    Prefill engine (matrix-matrix): (tokens M, reduction K, output rows N), e.g. FlightLLM's MM 2 x 16 x 128.
    """

    shape: tuple[int, ...]
    macs_per_lane: dict[str, float] = field(metadata=rng(gt=0))  # MACs per lane per cycle by precision (packing)
    dsps: int = field(default=0, metadata=rng(ge=0))  # DSPs one die's copy uses (0 = not stated)

    @property
    def lanes(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class DieSpec:
    """One die (SLR) running a copy of the engines, wired to a subset of the memory channels."""

    hbm_channels: tuple[int, ...]


@dataclass(frozen=True)
class FpgaSpec:
    """FPGA-specific figures: the part's resources, the design's engines, dies, and control mechanisms."""

    part: str
    luts: int = field(metadata=rng(ge=0))
    ffs: int = field(metadata=rng(ge=0))
    dsps: int = field(metadata=rng(ge=0))
    bram_bytes: int = field(metadata=rng(ge=0))
    uram_bytes: int = field(default=0, metadata=rng(ge=0))
    # one reconfigurable linear engine (decode and prefill), when no shaped engines are given:
    engine_dsps: int = field(default=0, metadata=rng(ge=0))  # DSPs the linear-layer compute engine uses
    macs_per_dsp: dict[str, float] = field(default_factory=dict, metadata=rng(gt=0))  # DSP packing by precision
    # shaped engines, one copy per die:
    decode_engine: EngineSpec | None = None
    prefill_engine: EngineSpec | None = None
    dies: tuple[DieSpec, ...] = ()  # empty: one die wired to every channel
    die_link_bytes_per_cycle: float = field(default=0.0, metadata=rng(ge=0))  # die-to-die link (0 = no exchange)
    sparse_modes: tuple[str, ...] = ()  # weight sparsity the engines skip: "N:M" (any), "2:4", "block", ...
    sparse_efficiency: float = field(default=1.0, metadata=rng(gt=0, le=1))  # MAC-rate fraction on sparse work
    attention_lanes: int = field(default=0, metadata=rng(ge=0))  # int4 x int8 MAC lanes of ONE attention engine
    attention_engines: int = field(default=1, metadata=rng(ge=1))  # copies of that engine
    # ---- buffers (the cycle-level simulator needs them; 0 = not described) ----
    weight_buffer_bytes: int = field(default=0, metadata=rng(ge=0))  # ONE of the linear engine's 2 weight buffers
    activation_buffer_bytes: int = field(default=0, metadata=rng(ge=0))  # on-chip activations (prefill token tile)
    linear_pipeline_cycles: int = field(default=0, metadata=rng(ge=0))  # fill/drain latency of one GEMV/GEMM
    # ---- on-board control mechanisms (0 = none) ----
    instruction_cycles: float = field(default=0.0, metadata=rng(ge=0))  # fetch + decode + issue of one instruction
    instructions_per_tile: int = field(default=0, metadata=rng(ge=0))  # instructions one weight tile needs
    sync_cycles: int = field(default=0, metadata=rng(ge=0))  # barrier between two dependent operators
    host_s_per_token: float = field(default=0.0, metadata=rng(ge=0))  # host control per decode step
    outstanding_loads: int = field(default=0, metadata=rng(ge=0))  # loads in flight per die (0 = latency hidden)
    activations_on_chip: bool = True  # decode activations stay on chip between operators (else HBM round trips)

    @property
    def n_dies(self) -> int:
        return max(1, len(self.dies))

    def engine_macs_per_cycle(self, phase: str, weight_bits: int, act_bits: int) -> tuple[float, str]:
        """(MACs per cycle of all dies, precision key used) of the decode or prefill engine."""
        eng = self.decode_engine if phase == "decode" else self.prefill_engine
        if eng is None:
            eng = self.decode_engine or self.prefill_engine
        if eng is not None:
            key, m = resolve_precision(eng.macs_per_lane, weight_bits, act_bits, f"fpga.{phase}_engine.macs_per_lane")
            return eng.lanes * m * self.n_dies, key
        key, m = resolve_precision(self.macs_per_dsp, weight_bits, act_bits, "fpga.macs_per_dsp")
        return self.engine_dsps * m, key

    def supports_sparsity(self, mode: str) -> bool:
        if mode == "none":
            return True
        if mode in self.sparse_modes:
            return True
        return ":" in mode and "N:M" in self.sparse_modes


@dataclass(frozen=True)
class HardwareSpec:
    """An accelerator (GPU or FPGA design). Derived figures are properties."""

    name: str
    kind: Literal["gpu", "fpga"]
    description: str
    # lower bounds keep every derived time finite; 1e30 stands for "free" in idealised what-if specs
    freq_hz: float = field(metadata=rng(ge=1e3, le=1e11))
    memory: MemorySpec
    compute: ComputeSpec
    on_chip_bytes: int = field(metadata=rng(ge=0))
    power_w: float | None = field(default=None, metadata=rng(gt=0))
    fpga: FpgaSpec | None = None
    # the compression preset the design is built for (`hwsim schemes`); `hwsim estimate` takes its weight and
    # activation precision as the default (None: fp16, as on a GPU)
    design_scheme: str | None = None
    # GPU operator profile (JSON from `hwsim profile`), path relative to this spec's file; operators are then priced
    # from measurements (hwsim/gpuprofile). profile_hardware: the spec it was measured on, when not this one (its
    # times are then transferred by spec-sheet ratios, unvalidated).
    profile: str | None = None
    profile_hardware: str | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f, n = self.fpga, self.name
        if self.kind == "fpga" and f is None:
            raise SpecError(f"hardware {n!r}: kind fpga needs an 'fpga' section (part, resources)")
        if f is None:
            if not self.compute.peak_ops_per_s:
                raise SpecError(
                    f"hardware {n!r}: compute.peak_ops_per_s is empty; give at least one precision, "
                    "e.g. w16a16 (a GPU's data-sheet tensor rate)"
                )
            return
        if self.compute.peak_ops_per_s and (f.engine_dsps or f.decode_engine or f.prefill_engine):
            raise SpecError(
                f"hardware {n!r}: compute.peak_ops_per_s duplicates what the fpga engines derive "
                "(2 x lanes x MACs per lane x dies x freq_hz); remove compute.peak_ops_per_s"
            )
        if f.engine_dsps > f.dsps:
            raise SpecError(
                f"hardware {n!r}: fpga.engine_dsps {f.engine_dsps} exceeds the part's {f.dsps} DSPs; lower engine_dsps"
            )
        _check_keys(f.macs_per_dsp, "fpga.macs_per_dsp")
        for phase, eng, dims in (("decode", f.decode_engine, 2), ("prefill", f.prefill_engine, 3)):
            if eng is None:
                continue
            if len(eng.shape) != dims or any(d < 1 for d in eng.shape):
                what = "(N, K)" if dims == 2 else "(M, K, N)"
                raise SpecError(
                    f"hardware {n!r}: fpga.{phase}_engine.shape {list(eng.shape)} must be {dims} "
                    f"positive lane counts {what}; fix the shape"
                )
            _check_keys(eng.macs_per_lane, f"fpga.{phase}_engine.macs_per_lane")
            if not eng.macs_per_lane:
                raise SpecError(f"hardware {n!r}: fpga.{phase}_engine.macs_per_lane is empty; give e.g. w8a8: 1")
        if (f.decode_engine is None) != (f.prefill_engine is None):
            raise SpecError(
                f"hardware {n!r}: give both fpga.decode_engine and fpga.prefill_engine (the same shape "
                "for a reconfigurable engine), or neither (engine_dsps x macs_per_dsp)"
            )
        used = f.n_dies * max((e.dsps for e in (f.decode_engine, f.prefill_engine) if e is not None), default=0)
        if used > f.dsps:
            raise SpecError(
                f"hardware {n!r}: the engines use {used} DSPs ({f.n_dies} dies x engine dsps) but the "
                f"part has {f.dsps}; lower the engines' dsps or the number of dies"
            )
        seen: set[int] = set()
        for i, die in enumerate(f.dies):
            bad = [c for c in die.hbm_channels if not 0 <= c < self.memory.channels]
            if bad or not die.hbm_channels:
                raise SpecError(
                    f"hardware {n!r}: fpga.dies[{i}].hbm_channels {list(die.hbm_channels)} must be a "
                    f"non-empty list of channels 0..{self.memory.channels - 1}; fix the channel numbers"
                )
            if seen & set(die.hbm_channels):
                raise SpecError(
                    f"hardware {n!r}: fpga.dies[{i}].hbm_channels shares channels with another die; "
                    "give each die its own channels"
                )
            seen |= set(die.hbm_channels)
        for mode in f.sparse_modes:
            if mode not in ("N:M", "block", "unstructured"):
                from quant.scheme import parse_nm

                if parse_nm(mode) is None:
                    raise SpecError(
                        f"hardware {n!r}: fpga.sparse_modes entry {mode!r} is unknown; use N:M, a "
                        "specific N:M like 2:4, block or unstructured"
                    )

    # ---- derived figures ---------------------------------------------------------------------------------------
    @property
    def active_channels(self) -> int:
        """Memory channels the design's engines are wired to (all when no dies are described)."""
        if self.fpga is None or not self.fpga.dies:
            return self.memory.channels
        return sum(len(d.hbm_channels) for d in self.fpga.dies)

    @property
    def active_bandwidth_bytes_per_s(self) -> float:
        """Theoretical peak of the active channels."""
        return self.memory.channel_bandwidth_bytes_per_s * self.active_channels

    @property
    def stream_bandwidth_bytes_per_s(self) -> float:
        """Sustained bandwidth of long sequential reads over the active channels."""
        return self.active_bandwidth_bytes_per_s * self.memory.efficiency

    def matrix_rate(self, weight_bits: int, act_bits: int, phase: str = "decode") -> tuple[float, str]:
        """(peak ops/s, precision key used) of the matrix engine for `phase` ("decode" | "prefill")."""
        if self.fpga is None:
            key, rate = resolve_precision(
                self.compute.peak_ops_per_s, weight_bits, act_bits, f"hardware {self.name!r}: compute.peak_ops_per_s"
            )
            return rate, key
        f = self.fpga
        if f.decode_engine is None and not (f.engine_dsps and f.macs_per_dsp):
            raise SpecError(
                f"hardware {self.name!r} describes no linear engine; add fpga.engine_dsps and "
                "fpga.macs_per_dsp, or fpga.decode_engine and fpga.prefill_engine"
            )
        macs, key = f.engine_macs_per_cycle(phase, weight_bits, act_bits)
        return 2.0 * macs * self.freq_hz, key

    @cached_property
    def gpu_profile(self):
        """The measured operator profile this spec names, as `hwsim.ops.op_time`'s hook (None without one)."""
        if self.profile is None:
            return None
        from hwsim.gpuprofile.hook import ProfileHook

        return ProfileHook(self)

    def peak_ops_per_s(self, weight_bits: int, act_bits: int, phase: str = "decode") -> float:
        return self.matrix_rate(weight_bits, act_bits, phase)[0]

    def sparse_speedup(self, mode: str, density: float) -> float:
        """Fraction of the dense MACs' time a weight-sparse operator takes: density / sparse_efficiency where the
        engines skip zeros of `mode`; 2:4 on hardware that declares no modes runs at density (sparse tensor cores);
        otherwise 1 (zeros multiplied)."""
        if mode == "none":
            return 1.0
        if self.fpga is not None and self.fpga.sparse_modes:
            if not self.fpga.supports_sparsity(mode):
                raise SpecError(
                    f"hardware {self.name!r} runs weight sparsity {', '.join(self.fpga.sparse_modes)} "
                    f"but the scheme uses {mode!r}; change the scheme's weight_pruning or add {mode!r} "
                    "to fpga.sparse_modes"
                )
            return density / self.fpga.sparse_efficiency
        return density if mode == "2:4" else 1.0


def list_hardware() -> list[str]:
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.yaml"))


def hardware_from_mapping(data: object, where: str) -> HardwareSpec:
    return from_mapping(HardwareSpec, data, where)


def _resolve_profile(spec: HardwareSpec, base: Path) -> HardwareSpec:
    """The spec with its `profile` path made relative to `base` (the directory of the file it was read from)."""
    if spec.profile is None or Path(spec.profile).is_absolute():
        return spec
    return dataclasses.replace(spec, profile=str(base / spec.profile))


def get_hardware(name_or_path: str | Path) -> HardwareSpec:
    """A shipped spec by exact name, or a user's YAML file, or an FPGA build report (JSON with a 'hardware'
    mapping, as written by `hwsim fpga build`)."""
    text = str(name_or_path)
    if text in list_hardware():
        path = HARDWARE_DIR / f"{text}.yaml"
        return _resolve_profile(hardware_from_mapping(read_yaml(path), str(path)), path.parent)
    path = Path(text)
    if path.suffix in (".yaml", ".yml"):
        return _resolve_profile(hardware_from_mapping(read_yaml(path), str(path)), path.parent)
    if path.suffix == ".json":
        data = read_json(path)
        if not isinstance(data, dict) or "hardware" not in data:
            raise SpecError(
                f"{path}: not an FPGA build report (no 'hardware' key); give a hardware YAML or the "
                "report.json written by `hwsim fpga build`"
            )
        return hardware_from_mapping(data["hardware"], f"{path}: hardware")
    raise SpecError(
        f"unknown hardware {text!r}; use one of {', '.join(list_hardware())}, or a path to a "
        "hardware YAML or an FPGA build report.json"
    )
