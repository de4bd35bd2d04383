"""Default policies: what `hwsim offload --policy NAME` runs when no placement is given."""

from __future__ import annotations

from typing import TYPE_CHECKING

from base.errors import SpecError
from offload.footprint import capacities, check_capacity, footprint
from offload.policy import POLICY_KINDS, Policy

if TYPE_CHECKING:
    from offload.platform import Platform
    from offload.workload import Workload

__all__ = ["default_policy", "INSTINFER_TOPK", "INSTINFER_TOPR_DIV", "LEOAM_LOAD_FRACTION"]

# SparF-style settings used by default. InstInfer's exact k and r are not in reachable sources: we take 1/8 of the
# tokens and 1/8 of the head channels, SparQ's (Ribar et al. 2023) typical compression of 1/8 of the KV reads.
INSTINFER_TOPK = 0.125
INSTINFER_TOPR_DIV = 8
# LeoAM loads the same fraction of offloaded chunks, so the two sparse policies read comparable amounts.
LEOAM_LOAD_FRACTION = 0.125


def _split(batch: int, want: int) -> tuple[int, int]:
    n = max(d for d in range(1, min(want, batch) + 1) if batch % d == 0)
    return batch // n, n


def _greedy_kv(platform: Platform, workload: Workload, base: Policy) -> Policy:
    """Fill the GPU, then host DRAM, with the KV cache (steps of 1%); the rest goes to disk."""
    cap = capacities(platform)
    pol = base.replace(kv_gpu=0.0, kv_cpu=0.0)
    for key in ("kv_gpu", "kv_cpu"):
        lo = 0
        for pct in range(0, 101):
            other = pol.kv_cpu if key == "kv_gpu" else pol.kv_gpu
            if pct / 100 + other > 1 + 1e-9:
                break
            cand = pol.replace(**{key: pct / 100})
            fp = footprint(platform, workload, cand)
            if all(fp[s] <= cap[s] for s in fp):
                lo = pct
            else:
                break
        pol = pol.replace(**{key: lo / 100})
    return pol


def default_policy(kind: str, platform: Platform, workload: Workload) -> Policy:
    """flexgen: FlexGen's policy search; leoam: greedy GPU -> CPU -> disk KV tiers, weights on GPU, the number of GPU
    batches that prices cheapest;
    instinfer: weights on GPU, KV in the drives, two GPU batches pipelined, SparF top-k 1/8, r = head_dim/8."""
    if kind not in POLICY_KINDS:
        raise SpecError(f"unknown policy {kind!r}; use one of {', '.join(POLICY_KINDS)}")
    check_capacity(platform, workload)
    if kind == "flexgen":
        from offload.search import search_flexgen

        return search_flexgen(platform, workload).policy
    if kind == "instinfer":
        gbs, n = _split(workload.batch, 2)
        Policy("instinfer", gpu_batch_size=gbs, num_gpu_batches=n).check(platform, workload)
        return Policy(
            "instinfer",
            gpu_batch_size=gbs,
            num_gpu_batches=n,
            topk_fraction=INSTINFER_TOPK,
            topr_channels=max(1, workload.model.head_dim // INSTINFER_TOPR_DIV),
        )
    from offload.search import estimate_total_s

    best: tuple[float, Policy] | None = None
    for n in (d for d in range(1, 17) if workload.batch % d == 0):  # fewer GPU batches re-read weights less often
        pol = _greedy_kv(
            platform,
            workload,
            Policy("leoam", gpu_batch_size=workload.batch // n, num_gpu_batches=n, load_fraction=LEOAM_LOAD_FRACTION),
        )
        fp, cap = footprint(platform, workload, pol), capacities(platform)
        if any(fp[s] > cap[s] for s in fp):
            continue
        t = estimate_total_s(platform, workload, pol)
        if best is None or t < best[0]:
            best = (t, pol)
    if best is None:
        raise SpecError(
            f"no LeoAM placement of {workload.model.name} (batch {workload.batch}) fits platform "
            f"{platform.name!r}; lower the batch or the context"
        )
    return best[1]
