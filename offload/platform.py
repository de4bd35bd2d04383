"""Platform: the machine an offloaded inference runs on, loaded from YAML (offload/platforms/NAME.yaml).

A platform is a GPU (by name, from hwsim's hardware registry: one source of truth for its memory and compute),
a host (DRAM, CPU), the GPU's PCIe link, optional plain NVMe SSDs and optional computational storage drives (CSDs:
NAND flash behind a controller, an on-drive FPGA attention engine with its own DRAM, an internal PCIe switch).
Every number in a shipped YAML carries its source or a stated assumption in the file's ``sources`` mapping.

Units are in field names; derived figures (PCIe bandwidth from generation and lanes, a drive's internal bandwidth)
are properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from base.errors import SpecError
from base.specio import from_mapping, read_yaml, rng

if TYPE_CHECKING:
    from hwsim.hardware import HardwareSpec

__all__ = [
    "Platform",
    "HostSpec",
    "PcieLinkSpec",
    "SsdSpec",
    "CsdSpec",
    "CompressionCostSpec",
    "SwitchSpec",
    "TopologySpec",
    "CpuAttentionSpec",
    "get_platform",
    "list_platforms",
    "PLATFORM_DIR",
    "PCIE_LANE_BYTES_PER_S",
    "DEVICES",
    "PLATFORM_TEMPLATE",
]

PLATFORM_DIR = Path(__file__).with_name("platforms")
PLATFORM_TEMPLATE = Path(__file__).with_name("templates") / "platform.yaml"  # `hwsim platforms --template`

# Raw data rate of one PCIe lane per direction after line coding (PCI-SIG base specs: Gen3 8 GT/s, Gen4 16 GT/s,
# Gen5 32 GT/s, all 128b/130b encoding). Protocol overhead (TLP headers, flow control) is in `efficiency`.
PCIE_LANE_BYTES_PER_S = {3: 8e9 * 128 / 130 / 8, 4: 16e9 * 128 / 130 / 8, 5: 32e9 * 128 / 130 / 8}


@dataclass(frozen=True)
class PcieLinkSpec:
    """One PCIe link; full duplex, so each direction has the whole bandwidth."""

    generation: Literal[3, 4, 5]
    lanes: Literal[1, 2, 4, 8, 16]
    efficiency: float = field(metadata=rng(gt=0, le=1))  # achieved / raw rate for large DMA transfers
    latency_s: float = field(metadata=rng(ge=0))  # per transfer (DMA setup + flight)
    # host <-> device copies from pageable (not pinned) host memory go through the driver's pinned staging buffer:
    # achieved / raw rate for them; None = not measured (a policy with pinned false is then refused)
    pageable_efficiency: float | None = field(default=None, metadata=rng(gt=0, le=1))

    @property
    def bytes_per_s(self) -> float:
        """Achievable bandwidth per direction (DMA from pinned host memory)."""
        return PCIE_LANE_BYTES_PER_S[self.generation] * self.lanes * self.efficiency

    @property
    def raw_bytes_per_s(self) -> float:
        return PCIE_LANE_BYTES_PER_S[self.generation] * self.lanes

    @property
    def pageable_bytes_per_s(self) -> float | None:
        if self.pageable_efficiency is None:
            return None
        return PCIE_LANE_BYTES_PER_S[self.generation] * self.lanes * self.pageable_efficiency


@dataclass(frozen=True)
class CpuAttentionSpec:
    """Decode attention on the CPU (FlexGen's CPU delegation) as measured: one call per layer costs
    ``call_s + per_head_s * batch * heads + kv_bytes / bytes_per_s``, with kv_bytes the fp16 K and V it reads.
    Fitted by least squares to timings over batch, heads and context (benchmarks/offload_fit.py)."""

    bytes_per_s: float = field(metadata=rng(gt=0))
    call_s: float = field(default=0.0, metadata=rng(ge=0))
    per_head_s: float = field(default=0.0, metadata=rng(ge=0))

    def seconds(self, batch: int, heads: int, kv_bytes: float) -> float:
        return self.call_s + self.per_head_s * batch * heads + kv_bytes / self.bytes_per_s


@dataclass(frozen=True)
class CompressionCostSpec:
    """Group-wise (de)compression of weights and KV (FlexGen's 4-bit, group 64), as memory-bound passes.

    Decompression reads the packed values and scales and writes fp16; compression reads fp16 and writes the packed
    form. Each fraction is the share of the engine's memory bandwidth those passes reach over the bytes they touch
    (packed + fp16): GPU memory for the GPU, host DRAM for the CPU."""

    gpu_dequant_bandwidth_fraction: float = field(metadata=rng(gt=0, le=1))
    gpu_quant_bandwidth_fraction: float = field(metadata=rng(gt=0, le=1))
    cpu_dequant_bandwidth_fraction: float = field(metadata=rng(gt=0, le=1))
    cpu_quant_bandwidth_fraction: float = field(metadata=rng(gt=0, le=1))


DEVICES = ("gpu", "ssd", "csd")


@dataclass(frozen=True)
class SwitchSpec:
    """A PCIe switch: the `devices` below it share its `uplink` towards the root complex (each direction)."""

    name: str
    uplink: PcieLinkSpec
    devices: tuple[Literal["gpu", "ssd", "csd"], ...]


@dataclass(frozen=True)
class TopologySpec:
    """Where the wires are shared. Devices not below a switch attach to the root complex by their own link.
    ``root_complex_bytes_per_s`` caps all traffic between host DRAM and the devices, both directions together."""

    switches: tuple[SwitchSpec, ...] = ()
    root_complex_bytes_per_s: float | None = field(default=None, metadata=rng(gt=0))

    def switch_of(self, device: str) -> SwitchSpec | None:
        return next((s for s in self.switches if device in s.devices), None)


@dataclass(frozen=True)
class HostSpec:
    """The host: DRAM (holds offloaded weights / KV / activations) and the CPU."""

    cpu: str
    dram_bytes: int = field(metadata=rng(gt=0))
    dram_reserved_bytes: int = field(metadata=rng(ge=0))  # OS, framework, pinned staging buffers
    dram_bandwidth_bytes_per_s: float = field(metadata=rng(gt=0))
    cpu_flops_per_s: float = field(metadata=rng(gt=0))  # peak fp32, all cores
    cpu_attention_efficiency: float = field(metadata=rng(gt=0, le=1))  # of DRAM bandwidth and FLOPs, CPU attention
    # measured CPU attention; when given it replaces the roofline of cpu_attention_efficiency
    cpu_attention: CpuAttentionSpec | None = None

    @property
    def usable_bytes(self) -> int:
        return self.dram_bytes - self.dram_reserved_bytes


@dataclass(frozen=True)
class SsdSpec:
    """`count` identical NVMe SSDs, data striped evenly over them."""

    model: str
    count: int = field(metadata=rng(ge=1))
    capacity_bytes: int = field(metadata=rng(gt=0))  # per drive
    read_bytes_per_s: float = field(metadata=rng(gt=0))  # sequential, per drive
    write_bytes_per_s: float = field(metadata=rng(gt=0))  # sequential, sustained, per drive
    latency_s: float = field(metadata=rng(ge=0))  # per request
    queue_depth: int = field(metadata=rng(ge=1))
    link: PcieLinkSpec

    @property
    def drive_read_bytes_per_s(self) -> float:
        return min(self.read_bytes_per_s, self.link.bytes_per_s)

    @property
    def drive_write_bytes_per_s(self) -> float:
        return min(self.write_bytes_per_s, self.link.bytes_per_s)


@dataclass(frozen=True)
class CsdSpec:
    """`count` identical computational storage drives (SmartSSD class).

    Inside one drive: NAND flash on `nand_channels` channels, an SSD controller, an FPGA with its own DRAM, and an
    internal PCIe switch joining controller, FPGA and the host link. `engine_at_flash` says where the FPGA attention
    engine reads the KV cache: True = it reads the flash channels directly (InstInfer's flash-aware engine), False =
    through the internal switch (an off-the-shelf SmartSSD's P2P path).
    """

    model: str
    count: int = field(metadata=rng(ge=1))
    capacity_bytes: int = field(metadata=rng(gt=0))  # per drive
    nand_channels: int = field(metadata=rng(ge=1))
    nand_channel_read_bytes_per_s: float = field(metadata=rng(gt=0))
    nand_write_bytes_per_s: float = field(metadata=rng(gt=0))  # sustained program bandwidth, whole drive
    nand_page_bytes: int = field(metadata=rng(ge=512))
    nand_read_latency_s: float = field(metadata=rng(ge=0))
    internal_switch: PcieLinkSpec
    engine_at_flash: bool
    fpga: str
    fpga_dram_bytes: int = field(metadata=rng(gt=0))
    fpga_dram_bandwidth_bytes_per_s: float = field(metadata=rng(gt=0))
    host_link: PcieLinkSpec
    p2p_gpu: bool  # GPU <-> drive DMA without a bounce through host DRAM
    # the attention engine's rate: a number, or an hwsim FPGA hardware spec (name or path) whose attention engines
    # (lanes x engines MACs per cycle at freq_hz) are placed on the drive's FPGA; exactly one of the two
    fpga_attention_flops_per_s: float | None = field(default=None, metadata=rng(gt=0))
    fpga_attention_hardware: str | None = None

    def __post_init__(self) -> None:
        if (self.fpga_attention_flops_per_s is None) == (self.fpga_attention_hardware is None):
            raise SpecError(
                f"csd {self.model!r}: give exactly one of fpga_attention_flops_per_s and "
                "fpga_attention_hardware (an hwsim FPGA spec with attention engines)"
            )

    @cached_property
    def attention_flops_per_s(self) -> float:
        """FLOP/s (2 per MAC) of the on-drive attention engine."""
        if self.fpga_attention_flops_per_s is not None:
            return self.fpga_attention_flops_per_s
        from hwsim.hardware import get_hardware

        assert self.fpga_attention_hardware is not None  # __post_init__ requires one of the two
        hw = get_hardware(self.fpga_attention_hardware)
        if hw.fpga is None or hw.fpga.attention_lanes == 0:
            raise SpecError(
                f"csd {self.model!r}: hardware {self.fpga_attention_hardware!r} has no attention engine "
                "(fpga.attention_lanes); give fpga_attention_flops_per_s instead"
            )
        return 2.0 * hw.fpga.attention_lanes * hw.fpga.attention_engines * hw.freq_hz

    @property
    def nand_read_bytes_per_s(self) -> float:
        """Aggregate flash read bandwidth of one drive (all channels)."""
        return self.nand_channels * self.nand_channel_read_bytes_per_s

    @property
    def engine_read_bytes_per_s(self) -> float:
        """Bandwidth at which the on-drive attention engine can read the KV cache from flash."""
        flash = min(self.nand_read_bytes_per_s, self.fpga_dram_bandwidth_bytes_per_s)
        return flash if self.engine_at_flash else min(flash, self.internal_switch.bytes_per_s)

    @property
    def host_read_bytes_per_s(self) -> float:
        """Bandwidth of plain reads from the drive's flash by the host (drive used as an ordinary SSD)."""
        return min(self.nand_read_bytes_per_s, self.internal_switch.bytes_per_s, self.host_link.bytes_per_s)

    @property
    def host_write_bytes_per_s(self) -> float:
        return min(self.nand_write_bytes_per_s, self.internal_switch.bytes_per_s, self.host_link.bytes_per_s)


@dataclass(frozen=True)
class Platform:
    """A host with one GPU, its PCIe link, and optional SSDs / computational storage drives."""

    name: str
    description: str
    gpu: str  # name or path understood by hwsim.hardware.get_hardware
    gpu_reserved_bytes: int = field(metadata=rng(ge=0))  # CUDA context, framework, fragmentation
    gpu_kernel_overhead_s: float = field(metadata=rng(ge=0))  # launch/sync overhead per layer and GPU batch
    gpu_link: PcieLinkSpec
    host: HostSpec
    ssd: SsdSpec | None = None
    csd: CsdSpec | None = None
    compression: CompressionCostSpec | None = None
    topology: TopologySpec = field(default_factory=TopologySpec)
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ssd is None and self.csd is None:
            raise SpecError(f"platform {self.name!r}: no storage; add an 'ssd' or a 'csd' section")
        seen: dict[str, str] = {}
        for sw in self.topology.switches:
            for dev in sw.devices:
                if dev in seen:
                    raise SpecError(
                        f"platform {self.name!r}: {dev} sits below switches {seen[dev]!r} and "
                        f"{sw.name!r}; list each device under one switch"
                    )
                if dev != "gpu" and getattr(self, dev) is None:
                    raise SpecError(
                        f"platform {self.name!r}: switch {sw.name!r} lists {dev}, but the platform has "
                        f"no {dev} section; add the {dev} section or remove it from the switch"
                    )
                seen[dev] = sw.name
            if not sw.devices:
                raise SpecError(
                    f"platform {self.name!r}: switch {sw.name!r} has no devices; list the devices "
                    "below it (gpu, ssd, csd) or remove it"
                )
        names = [sw.name for sw in self.topology.switches]
        if len(set(names)) != len(names):
            raise SpecError(f"platform {self.name!r}: switch names repeat ({', '.join(names)}); name each once")

    @cached_property
    def gpu_spec(self) -> HardwareSpec:
        from hwsim.hardware import get_hardware

        spec = get_hardware(self.gpu)
        if spec.kind != "gpu":
            raise SpecError(
                f"platform {self.name!r}: gpu {self.gpu!r} is a {spec.kind}, not a gpu; name a GPU "
                "hardware spec (e.g. a6000)"
            )
        return spec

    @property
    def gpu_usable_bytes(self) -> int:
        return self.gpu_spec.memory.capacity_bytes - self.gpu_reserved_bytes

    @property
    def disk_bytes(self) -> int:
        """Capacity of the disk tier an offloading policy (FlexGen/LeoAM) uses: the plain SSDs if any, else the
        CSDs' flash used as plain storage."""
        if self.ssd is not None:
            return self.ssd.count * self.ssd.capacity_bytes
        assert self.csd is not None
        return self.csd.count * self.csd.capacity_bytes


def list_platforms() -> list[str]:
    return sorted(p.stem for p in PLATFORM_DIR.glob("*.yaml"))


def _resolve_paths(data: object, folder: Path) -> object:
    """Relative paths inside a platform YAML (``gpu`` and ``csd.fpga_attention_hardware`` when they name a YAML
    file) resolve against the YAML's own folder, not the working directory."""
    if not isinstance(data, dict):
        return data
    out = dict(data)

    def fix(value: object) -> object:
        if isinstance(value, str) and Path(value).suffix in (".yaml", ".yml") and not Path(value).is_absolute():
            return str(folder / value)
        return value

    if "gpu" in out:
        out["gpu"] = fix(out["gpu"])
    if isinstance(out.get("csd"), dict) and "fpga_attention_hardware" in out["csd"]:
        out["csd"] = {**out["csd"], "fpga_attention_hardware": fix(out["csd"]["fpga_attention_hardware"])}
    return out


def get_platform(name_or_path: str | Path) -> Platform:
    """A shipped platform by exact name, or a platform YAML file. SpecError names the known platforms."""
    text = str(name_or_path)
    if text in list_platforms():
        path = PLATFORM_DIR / f"{text}.yaml"
    elif Path(text).suffix in (".yaml", ".yml"):
        path = Path(text)
    else:
        raise SpecError(
            f"unknown platform {text!r}; use one of {', '.join(list_platforms())} or a path to a platform YAML"
        )
    data = _resolve_paths(read_yaml(path), path.resolve().parent)
    plat = from_mapping(Platform, data, str(path))
    plat.gpu_spec  # resolve now so that a bad GPU or FPGA name fails at load time  # noqa: B018
    if plat.csd is not None:
        plat.csd.attention_flops_per_s  # noqa: B018
    return plat
