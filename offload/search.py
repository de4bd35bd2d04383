"""FlexGen's policy search, done by exhaustive grid search (scipy is not a dependency of this project).

FlexGen (Sheng et al., ICML'23, Sec. 4.3) poses placement as a linear program: minimise the time per token of a
block, T = T_prefill * l + T_decode * (n - 1) * l with each T = max(ctog, gtoc, dtoc, ctod, comp) -- linear in the
fractions (wg, wc, cg, cc, hg, hc) -- subject to the GPU, CPU and disk capacities, for each choice of GPU batch size
and number of GPU batches. The decision space is small, so instead of an LP solver we enumerate it: the fractions on a
grid (weights in steps of 1/4, KV cache in steps of 1/10, activations all on GPU or all on CPU), decode attention on
the GPU or delegated to the CPU, every split of the batch into GPU batches, then refine the KV split in steps of 1/50 around the best point. Each candidate is priced by
the analytical cost model (`offload.cost`) on the same plans the simulation runs: one prefill step and one decode step
at the mean context, times the number of layers and tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from base.errors import SpecError
from offload.cost import step_times
from offload.plan import ChannelSpec, capacities, channels, footprint, make_planner
from offload.policy import Policy

if TYPE_CHECKING:
    from offload.platform import Platform
    from offload.workload import Workload

__all__ = ["SearchResult", "search_flexgen", "estimate_total_s"]


@dataclass(frozen=True)
class SearchResult:
    policy: Policy
    estimated_total_s: float
    candidates: int  # priced (feasible) candidates
    rejected: int  # candidates that overfill a store


def estimate_total_s(platform: "Platform", workload: "Workload", policy: Policy,
                     ch: dict[str, ChannelSpec] | None = None) -> float:
    """The search objective: L * (T_prefill + (gen - 1) * T_decode(mean context)), steps fully overlapped."""
    ch = channels(platform) if ch is None else ch
    planner = make_planner(platform, workload, policy, ch)
    L = workload.model.num_layers
    pre = planner.plan("prefill", workload.prompt_len, False, False)
    total = L * (max(step_times(pre, ch)) if policy.overlap else sum(step_times(pre, ch)))
    if workload.gen_len > 1:
        mid = workload.prompt_len + workload.gen_len // 2 - 1
        dec = planner.plan("decode", mid, False, False)
        t = step_times(dec, ch)
        total += L * (workload.gen_len - 1) * (max(t) if policy.overlap else sum(t))
    return total


def _grid(step: float, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    n = round((hi - lo) / step)
    return [round(lo + i * step, 10) for i in range(n + 1)]


def search_flexgen(platform: "Platform", workload: "Workload", max_gpu_batches: int = 16,
                   cpu_attention: tuple[bool, ...] = (False, True), max_kv_cpu: float = 1.0) -> SearchResult:
    """The cheapest feasible FlexGen policy for `workload` on `platform`. SpecError if none fits.
    `cpu_attention` lists the choices of FlexGen's CPU delegation the search may take; `max_kv_cpu` caps the KV
    share in host DRAM (0 = an SSD-based deployment that keeps host DRAM free of KV cache)."""
    cap = capacities(platform)
    ch = channels(platform)
    splits = [n for n in range(1, max_gpu_batches + 1) if workload.batch % n == 0]
    best: tuple[float, Policy] | None = None
    priced = rejected = 0

    def consider(pol: Policy) -> None:
        nonlocal best, priced, rejected
        fp = footprint(platform, workload, pol)
        if any(fp[s] > cap[s] for s in fp):
            rejected += 1
            return
        priced += 1
        t = estimate_total_s(platform, workload, pol, ch)
        if best is None or t < best[0] * (1 - 1e-9):  # ties keep the earlier candidate: more on the GPU
            best = (t, pol)

    wq, kq = _grid(0.25)[::-1], _grid(0.1)[::-1]  # GPU-heavy placements first
    for n in splits:
        for wg in wq:
            for wc in wq:
                if wg + wc > 1 + 1e-9:
                    continue
                for cg in kq:
                    for cc in kq:
                        if cg + cc > 1 + 1e-9 or cc > max_kv_cpu + 1e-9:
                            continue
                        for hg, hc in ((1.0, 0.0), (0.0, 1.0)):
                            for ca in cpu_attention:
                                consider(Policy("flexgen", gpu_batch_size=workload.batch // n, num_gpu_batches=n,
                                                w_gpu=wg, w_cpu=wc, kv_gpu=cg, kv_cpu=cc, act_gpu=hg, act_cpu=hc,
                                                cpu_attention=ca))
    if best is None:
        raise SpecError(f"no FlexGen placement of {workload.model.name} (batch {workload.batch}, context "
                        f"{workload.final_context}) fits platform {platform.name!r}; lower the batch or the context, "
                        "or use a compression scheme")
    p0 = best[1]
    for cg in _grid(0.02, max(0.0, p0.kv_gpu - 0.1), min(1.0, p0.kv_gpu + 0.1))[::-1]:
        for cc in _grid(0.02, max(0.0, p0.kv_cpu - 0.1), min(1.0, p0.kv_cpu + 0.1))[::-1]:
            if cg + cc <= 1 + 1e-9 and cc <= max_kv_cpu + 1e-9:
                consider(p0.replace(kv_gpu=cg, kv_cpu=min(cc, 1.0 - cg)))
    return SearchResult(best[1], best[0], priced, rejected)
