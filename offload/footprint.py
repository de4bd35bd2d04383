"""Memory: what each store of a platform holds, what a placement needs there, and the checks that refuse a
placement that cannot fit (one line naming the store that overflows and the fix)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from base.errors import SpecError
from offload.planners import make_planner

if TYPE_CHECKING:
    from offload.platform import Platform
    from offload.policy import Policy
    from offload.workload import Workload

__all__ = ["footprint", "capacities", "check_capacity", "check_fits", "FIX_HINTS"]

FIX_HINTS = {
    "gpu": "lower w_gpu/kv_gpu/act_gpu or the GPU batch size",
    "cpu": "lower w_cpu/kv_cpu/act_cpu",
    "disk": "use a platform with more disk",
    "csd": "use more or larger drives",
}


def footprint(platform: Platform, workload: Workload, policy: Policy) -> dict[str, float]:
    """Peak bytes each store must hold under `policy` (the policy's planner accounts for its own loop)."""
    return make_planner(platform, workload, policy).footprint()


def capacities(platform: Platform) -> dict[str, float]:
    csd = platform.csd.count * platform.csd.capacity_bytes if platform.csd is not None else 0.0
    return {
        "gpu": float(platform.gpu_usable_bytes),
        "cpu": float(platform.host.usable_bytes),
        "disk": float(platform.disk_bytes),
        "csd": float(csd),
    }


def check_capacity(platform: Platform, workload: Workload) -> None:
    """Raise SpecError (naming the fix) when weights + final KV cache exceed every store of the platform together."""
    wl = workload
    need = wl.total_weight_bytes + wl.kv_total_bytes(wl.final_context)
    cap = capacities(platform)
    avail = cap["gpu"] + cap["cpu"] + cap["disk"] + cap["csd"]
    gb = 1e9
    if need > avail:
        raise SpecError(
            f"{wl.model.name} with batch {wl.batch} and context {wl.final_context} needs "
            f"{need / gb:.1f} GB (weights + KV cache) but platform {platform.name!r} holds only "
            f"{avail / gb:.1f} GB on GPU, host DRAM and drives together; lower --batch, --prompt or "
            "--gen, or use a compression scheme"
        )


def check_fits(platform: Platform, workload: Workload, policy: Policy) -> dict[str, float]:
    """Raise SpecError (naming the fix) when the workload cannot fit the platform at all, the policy cannot run on
    it, or the policy's placement overfills a store. Returns the footprint."""
    check_capacity(platform, workload)
    policy.check(platform, workload)
    cap = capacities(platform)
    gb = 1e9
    fp = footprint(platform, workload, policy)
    for store, used in fp.items():
        if used > cap[store] * (1 + 1e-9):
            raise SpecError(
                f"policy {policy.kind} places {used / gb:.1f} GB on {store} but platform "
                f"{platform.name!r} has {cap[store] / gb:.1f} GB there; {FIX_HINTS[store]}"
            )
    return fp
