"""The links and engines of a platform that a plan books, and the shared wires each transfer crosses.

A base channel is one hop's own resource (the GPU's PCIe link in one direction, the striped SSDs, a drive's flash).
A transfer also occupies every shared wire on its path (`path_of`): the uplink of a PCIe switch the device sits
below (several drives behind one switch share its bandwidth), the root complex when the platform caps it, and
inside a SmartSSD-class drive the internal switch port into the FPGA, which host->drive traffic and (for an engine
that reads flash through the switch) the engine's flash reads share. A hop books its base channel and its wires at
once, so it lasts as long as the slowest of them and each wire's total work bounds the stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from offload.platform import Platform

__all__ = ["ChannelSpec", "channels", "path_of", "host_link_rate"]


@dataclass(frozen=True)
class ChannelSpec:
    """A link or compute engine: `members` identical units (striped drives) working in parallel."""

    name: str
    kind: Literal["link", "compute"]
    members: int
    latency_s: float  # added to every piece a route books on it (does not occupy the channel)
    rate_per_member: float  # bytes/s (links) or FLOP/s (engines; the GPU's figure is informative only)


def host_link_rate(platform: Platform, pinned: bool) -> float:
    """Host <-> GPU bandwidth per direction for pinned or pageable host buffers."""
    link = platform.gpu_link
    if pinned:
        return link.bytes_per_s
    rate = link.pageable_bytes_per_s
    if rate is None:
        from base.errors import SpecError

        raise SpecError(
            f"platform {platform.name!r}: gpu_link has no pageable_efficiency, so copies from pageable "
            "host memory cannot be priced; add gpu_link.pageable_efficiency or keep the policy pinned"
        )
    return rate


def channels(platform: Platform, pinned: bool = True) -> dict[str, ChannelSpec]:
    """The links and engines a plan may book, by name (shared wires included)."""
    gpu = platform.gpu_spec
    link = platform.gpu_link
    rate = host_link_rate(platform, pinned)
    out = {
        "gpu": ChannelSpec("gpu", "compute", 1, 0.0, gpu.peak_ops_per_s(16, 16)),
        "pcie_h2d": ChannelSpec("pcie_h2d", "link", 1, link.latency_s, rate),
        "pcie_d2h": ChannelSpec("pcie_d2h", "link", 1, link.latency_s, rate),
    }
    host = platform.host
    out["cpu"] = ChannelSpec("cpu", "compute", 1, 0.0, host.cpu_flops_per_s * host.cpu_attention_efficiency)
    if platform.ssd is not None:
        s = platform.ssd
        lat = s.latency_s + s.link.latency_s
        out["disk_read"] = ChannelSpec("disk_read", "link", s.count, lat, s.drive_read_bytes_per_s)
        out["disk_write"] = ChannelSpec("disk_write", "link", s.count, lat, s.drive_write_bytes_per_s)
    if platform.csd is not None:
        c = platform.csd
        lat = c.nand_read_latency_s + c.host_link.latency_s + c.internal_switch.latency_s
        if platform.ssd is None:  # the drives double as the disk tier of flexgen/leoam
            out["disk_read"] = ChannelSpec("disk_read", "link", c.count, lat, c.host_read_bytes_per_s)
            out["disk_write"] = ChannelSpec("disk_write", "link", c.count, lat, c.host_write_bytes_per_s)
        hl = c.host_link.bytes_per_s
        out["csd_in"] = ChannelSpec("csd_in", "link", c.count, c.host_link.latency_s, hl)
        out["csd_out"] = ChannelSpec("csd_out", "link", c.count, c.host_link.latency_s, hl)
        flash = min(c.nand_read_bytes_per_s, c.fpga_dram_bandwidth_bytes_per_s)
        out["csd_flash_read"] = ChannelSpec("csd_flash_read", "link", c.count, c.nand_read_latency_s, flash)
        out["csd_flash_write"] = ChannelSpec("csd_flash_write", "link", c.count, 0.0, c.nand_write_bytes_per_s)
        out["csd_fpga"] = ChannelSpec("csd_fpga", "compute", c.count, 0.0, c.attention_flops_per_s)
        # the internal switch: its port into the FPGA (host->drive traffic, and flash reads when the engine reads
        # through the switch) and its port out of the FPGA (drive->host)
        sw = c.internal_switch
        out["csd_switch_in"] = ChannelSpec("csd_switch_in", "link", c.count, sw.latency_s, sw.bytes_per_s)
        out["csd_switch_out"] = ChannelSpec("csd_switch_out", "link", c.count, sw.latency_s, sw.bytes_per_s)
    topo = platform.topology
    for sw in topo.switches:
        r = sw.uplink.bytes_per_s
        out[f"{sw.name}_up"] = ChannelSpec(f"{sw.name}_up", "link", 1, sw.uplink.latency_s, r)
        out[f"{sw.name}_down"] = ChannelSpec(f"{sw.name}_down", "link", 1, sw.uplink.latency_s, r)
    if topo.root_complex_bytes_per_s is not None:
        out["root_complex"] = ChannelSpec("root_complex", "link", 1, 0.0, topo.root_complex_bytes_per_s)
    return out


def path_of(platform: Platform, base: str) -> tuple[str, ...]:
    """The shared wires a transfer on base channel `base` crosses besides its own link (see the module doc)."""
    topo = platform.topology
    root = ("root_complex",) if topo.root_complex_bytes_per_s is not None else ()

    def up(dev: str) -> tuple[str, ...]:
        sw = topo.switch_of(dev)
        return (f"{sw.name}_up",) if sw is not None else ()

    def down(dev: str) -> tuple[str, ...]:
        sw = topo.switch_of(dev)
        return (f"{sw.name}_down",) if sw is not None else ()

    disk = "ssd" if platform.ssd is not None else "csd"
    csd = platform.csd
    if base == "pcie_h2d":
        return down("gpu") + root
    if base == "pcie_d2h":
        return up("gpu") + root
    if base == "disk_read":
        return up(disk) + root + (("csd_switch_out",) if disk == "csd" else ())
    if base == "disk_write":
        return down(disk) + root + (("csd_switch_in",) if disk == "csd" else ())
    if base in ("csd_in", "csd_out"):
        g, d = topo.switch_of("gpu"), topo.switch_of("csd")
        same = g is not None and g is d  # peer to peer below one switch: the uplink and root are not crossed
        port = ("csd_switch_in",) if base == "csd_in" else ("csd_switch_out",)
        if same:
            return port
        wires = (up("gpu") + down("csd")) if base == "csd_in" else (up("csd") + down("gpu"))
        return port + wires + root
    if base == "csd_flash_read" and csd is not None and not csd.engine_at_flash:
        return ("csd_switch_in",)
    return ()
