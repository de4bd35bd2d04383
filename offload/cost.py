"""The analytical cost model: price the same layer-step plans the simulation runs, in closed form.

Per stage (FlexGen, Sec. 4.3 generalised to any set of channels): a stage lasts as long as its busiest channel
(the sum of the work booked on it) or its longest dependent chain of pipelined routes, whichever is longer. A route
of h hops cut into n pieces takes sum_h (w_h + latency_h) + (n - 1) * max_h w_h with w_h its per-piece work. With
overlap, a layer step lasts max(load(s+1), compute(s), store(s-1)) -- FlexGen's
T = max(ctog, gtoc, dtoc, ctod, comp) -- and without it the sum of the three. Contention between routes that share a
channel inside a stage is counted only through the channel sums; that is where the simulation can differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offload.channels import ChannelSpec, channels
from offload.footprint import capacities, check_fits
from offload.plan import STORES, Route, StepPlan
from offload.planners import make_planner
from offload.result import OffloadResult, StoreStats

if TYPE_CHECKING:
    from offload.platform import Platform
    from offload.policy import Policy
    from offload.workload import Workload

__all__ = ["analyze", "route_time", "stage_time", "step_times"]


def route_time(route: Route, ch: dict[str, ChannelSpec]) -> float:
    if not route.hops:
        return 0.0
    n = route.chunks
    works = [max(u.seconds for u in hop.uses) / n for hop in route.hops]
    lats = [max(ch[u.channel].latency_s for u in hop.uses) for hop in route.hops]
    return sum(works) + sum(lats) + (n - 1) * max(works)


def stage_time(routes: tuple[Route, ...], ch: dict[str, ChannelSpec]) -> float:
    ends: list[float] = []
    load: dict[str, float] = {}
    for r in routes:
        start = max([0.0] + [ends[i] for i in r.after])
        ends.append(start + route_time(r, ch))
        for hop in r.hops:
            for u in hop.uses:
                load[u.channel] = load.get(u.channel, 0.0) + u.seconds
    return max([0.0] + ends + list(load.values()))


def step_times(plan: StepPlan, ch: dict[str, ChannelSpec]) -> tuple[float, float, float]:
    return stage_time(plan.load, ch), stage_time(plan.compute, ch), stage_time(plan.store, ch)


def analyze(platform: Platform, workload: Workload, policy: Policy) -> OffloadResult:
    """Closed-form time of the whole run (every layer step priced; plans are cached per distinct step)."""
    planner = make_planner(platform, workload, policy)
    check_fits(platform, workload, policy)
    ch = channels(platform, policy.pinned)
    S, L = planner.num_steps, workload.model.num_layers
    cache: dict[tuple, tuple[float, float, float]] = {}
    counts: dict[tuple, int] = {}

    def times(s: int) -> tuple[float, float, float]:
        key = planner.step_key(s)
        if key not in cache:
            cache[key] = step_times(planner.plan(*key), ch)
        return cache[key]

    total = prefill = 0.0
    if policy.overlap:
        total = times(0)[0]
        for s in range(S):
            key = planner.step_key(s)
            counts[key] = counts.get(key, 0) + 1
            parts = [times(s)[1]]
            if s + 1 < S:
                parts.append(times(s + 1)[0])
            if s > 0:
                parts.append(times(s - 1)[2])
            total += max(parts)
            if s == L - 1:
                prefill = total
        total += times(S - 1)[2]
    else:
        for s in range(S):
            key = planner.step_key(s)
            counts[key] = counts.get(key, 0) + 1
            total += sum(times(s))
            if s == L - 1:
                prefill = total

    busy = {n: 0.0 for n in ch}
    nbytes = {n: 0.0 for n, c in ch.items() if c.kind == "link"}
    flops = {n: 0.0 for n, c in ch.items() if c.kind == "compute"}
    init = planner.initial_residency()
    acc = {s: {"written": 0.0, "read": 0.0, "freed": 0.0} for s in STORES}
    op_key = {"write": "written", "read": "read", "free": "freed"}
    for key, k in counts.items():
        plan = planner.plan(*key)
        for _, routes in plan.stages:
            for r in routes:
                for hop in r.hops:
                    for u in hop.uses:
                        busy[u.channel] += k * u.seconds
                        if u.channel in nbytes:
                            nbytes[u.channel] += k * u.nbytes
                        else:
                            flops[u.channel] += k * u.flops
                for e in r.effects:
                    acc[e.store][op_key[e.op]] += k * e.nbytes
    cap = capacities(platform)
    stores = {}
    for s in STORES:
        a = acc[s]
        resident = init[s] + a["written"] - a["freed"]
        stores[s] = StoreStats(
            s, cap[s], init[s], a["written"], a["read"], a["freed"], resident, max(init[s], resident)
        )
    return OffloadResult(
        fidelity="analytical",
        platform=platform.name,
        model=workload.model.name,
        policy=policy.label(),
        batch=workload.batch,
        prompt_len=workload.prompt_len,
        gen_len=workload.gen_len,
        total_s=total,
        prefill_s=prefill,
        busy_s=busy,
        members={n: c.members for n, c in ch.items()},
        bytes_moved=nbytes,
        flops=flops,
        stores=stores,
        requests_submitted=workload.batch,
        requests_completed=workload.batch,
    )
