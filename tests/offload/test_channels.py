"""offload/channels.py: the platform's channels and the shared PCIe wires a transfer books."""

import dataclasses

import pytest

from offload import Policy, Workload, analyze, simulate
from offload.channels import channels, path_of
from offload.platform import PcieLinkSpec, SwitchSpec, TopologySpec

UPLINK = PcieLinkSpec(generation=3, lanes=4, efficiency=1.0, latency_s=0.0)


def _with_switch(plat, devices, root=None):
    topo = TopologySpec(switches=(SwitchSpec("sw0", UPLINK, tuple(devices)),), root_complex_bytes_per_s=root)
    return dataclasses.replace(plat, topology=topo)


def test_no_topology_no_shared_wires(tiny):
    plat, _ = tiny
    plat = dataclasses.replace(plat, csd=None)
    assert path_of(plat, "disk_read") == () and path_of(plat, "pcie_h2d") == ()
    assert "root_complex" not in channels(plat)


def test_drives_behind_one_switch_share_its_uplink(tiny):
    plat, model = tiny
    plat = dataclasses.replace(plat, csd=None)
    wl = Workload.make(model, 64, 512, 8)  # 8 MB of cache per layer step: disk-bound
    pol = Policy("flexgen", gpu_batch_size=64, w_gpu=1.0, kv_gpu=0.0, kv_cpu=0.0)  # the whole cache on the 2 SSDs
    free = analyze(plat, wl, pol)
    shared = _with_switch(plat, ["ssd"])
    assert path_of(shared, "disk_read") == ("sw0_up",)
    ch = channels(shared)
    assert ch["sw0_up"].rate_per_member == pytest.approx(UPLINK.bytes_per_s)
    # two drives of 1 GB/s each (2 GB/s) now squeeze through one Gen3 x4 uplink (3.94 GB/s) for reads: no change;
    # a Gen3 x1 uplink (0.98 GB/s) halves the aggregate
    narrow = dataclasses.replace(
        shared, topology=TopologySpec(switches=(SwitchSpec("sw0", dataclasses.replace(UPLINK, lanes=1), ("ssd",)),))
    )
    t_free, t_wide, t_narrow = (analyze(p, wl, pol).total_s for p in (plat, shared, narrow))
    assert t_wide == pytest.approx(t_free, rel=0.02)
    assert t_narrow > 1.5 * t_free
    sim = simulate(narrow, wl, pol)
    assert sim.bytes_moved["sw0_up"] == pytest.approx(sim.bytes_moved["disk_read"])
    assert free.bytes_moved["disk_read"] == pytest.approx(sim.bytes_moved["disk_read"])


def test_gpu_and_drive_below_one_switch_share_its_uplink(tiny):
    plat, _ = tiny
    plat = dataclasses.replace(plat, csd=None)
    both = _with_switch(plat, ["gpu", "ssd"])
    assert path_of(both, "pcie_h2d") == ("sw0_down",) and path_of(both, "disk_read") == ("sw0_up",)
    assert path_of(both, "disk_write") == ("sw0_down",)  # shares the downlink with host->GPU loads


def test_root_complex_caps_all_host_traffic(tiny):
    plat, _ = tiny
    capped = dataclasses.replace(plat, csd=None, topology=TopologySpec(root_complex_bytes_per_s=1e9))
    for base in ("pcie_h2d", "pcie_d2h", "disk_read", "disk_write"):
        assert path_of(capped, base) == ("root_complex",)


def test_csd_peer_to_peer_below_a_common_switch_skips_the_root(tiny):
    plat, _ = tiny
    p2p = _with_switch(plat, ["gpu", "csd"], root=1e9)
    assert path_of(p2p, "csd_in") == ("csd_switch_in",)
    apart = _with_switch(plat, ["csd"], root=1e9)
    assert path_of(apart, "csd_in") == ("csd_switch_in", "sw0_down", "root_complex")


def test_smartssd_switch_is_shared_by_flash_reads_when_the_engine_reads_through_it(tiny):
    plat, _ = tiny
    at_flash = plat
    through = dataclasses.replace(plat, csd=dataclasses.replace(plat.csd, engine_at_flash=False))
    assert path_of(at_flash, "csd_flash_read") == ()
    assert path_of(through, "csd_flash_read") == ("csd_switch_in",)
