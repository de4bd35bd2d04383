"""FlexGen's policy search as a linear program, solved exactly by HiGHS (scipy.optimize.linprog).

FlexGen (Sheng et al., ICML'23, Sec. 4.3) poses placement as an LP: for a fixed GPU batch size and number of GPU
batches (enumerated outside the LP), minimise the block's time T = l * (T_prefill + (n_gen - 1) * T_decode) over the
fractions of weights (wg, wc), KV cache (cg, cc) and activations (hg, hc) on GPU and CPU (the rest on disk), each T
bounded below by every resource's busy time, subject to the GPU, CPU and disk capacities. Here the resources and
their busy times are those of the plans the simulation runs (`offload.planners`): every channel's work in a layer
step and the footprint are linear in the six fractions, so their coefficients are read off the planner at the
all-on-disk placement and at the six unit placements. Each T is bounded below by

* every channel's total work over the three overlapped stages (load(s+1), compute(s), store(s-1) share channels),
* the compute stage's pipelined chain (CPU delegation: GPU -> PCIe -> CPU -> PCIe -> GPU over the GPU batches):
  for a chain of hops with per-piece work w_h cut in n pieces, sum_h w_h / n + (n - 1) / n * w_k for every hop k.

CPU delegation (FlexGen's ``cpu_cache_compute``) is a second outer choice. The analytical estimate of the chosen
policy on the same plans (`estimate_total_s`) is reported beside the LP's objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from base.errors import SpecError
from offload.channels import ChannelSpec, channels
from offload.cost import step_times
from offload.footprint import FIX_HINTS, capacities
from offload.planners import make_planner
from offload.policy import Policy

if TYPE_CHECKING:
    from offload.platform import Platform
    from offload.workload import Workload

__all__ = ["SearchResult", "search_flexgen", "estimate_total_s", "FRACTIONS"]

FRACTIONS = ("w_gpu", "w_cpu", "kv_gpu", "kv_cpu", "act_gpu", "act_cpu")
_STORES = ("gpu", "cpu", "disk")


@dataclass(frozen=True)
class SearchResult:
    policy: Policy
    lp_total_s: float  # the LP's objective at its optimum: predicted time of the whole run
    estimated_total_s: float  # the analytical model on the chosen policy's plans (latencies, pipelining)
    candidates: int  # LPs solved to optimality (GPU batch splits x CPU-delegation choices)
    rejected: int  # LPs without a feasible placement


def estimate_total_s(
    platform: Platform, workload: Workload, policy: Policy, ch: dict[str, ChannelSpec] | None = None
) -> float:
    """L * (T_prefill + (gen - 1) * T_decode(mean context)), steps fully overlapped (or summed without overlap)."""
    ch = channels(platform, policy.pinned) if ch is None else ch
    planner = make_planner(platform, workload, policy, ch)
    L = workload.model.num_layers
    pre = planner.plan("prefill", workload.prompt_len, False, False)
    total = L * (max(step_times(pre, ch)) if policy.overlap else sum(step_times(pre, ch)))
    if workload.gen_len > 1:
        dec = planner.plan("decode", _mid_context(workload), False, False)
        t = step_times(dec, ch)
        total += L * (workload.gen_len - 1) * (max(t) if policy.overlap else sum(t))
    return total


def _mid_context(workload: Workload) -> int:
    return workload.prompt_len + workload.gen_len // 2 - 1


def _policy_at(base: Policy, x: np.ndarray) -> Policy:
    v = dict(zip(FRACTIONS, (float(min(1.0, max(0.0, a))) for a in x)))
    for g, c in (("w_gpu", "w_cpu"), ("kv_gpu", "kv_cpu"), ("act_gpu", "act_cpu")):
        v[c] = min(v[c], 1.0 - v[g])
    return base.replace(**v)


def _linear_terms(platform, workload, base: Policy, ch) -> tuple[dict, dict]:
    """Coefficients (a0, a) with value = a0 + a . x of: every channel's work per phase, the compute chains'
    per-hop work, and each store's footprint, read off the planner at x = 0 and x = e_i."""
    points = [np.zeros(6)] + [np.eye(6)[i] for i in range(6)]
    samples: list[tuple[dict, dict]] = []
    for x in points:
        pol = base.replace(**dict(zip(FRACTIONS, x.tolist())))
        planner = make_planner(platform, workload, pol, ch)
        terms: dict[tuple, float] = {}
        for phase, ctx in (("prefill", workload.prompt_len), ("decode", _mid_context(workload))):
            plan = planner.plan(phase, ctx, False, False)
            for _, routes in plan.stages:
                for r in routes:
                    for hop in r.hops:
                        for u in hop.uses:
                            key = (phase, "channel", u.channel)
                            terms[key] = terms.get(key, 0.0) + u.seconds
            for i, r in enumerate(plan.compute):
                for k, hop in enumerate(r.hops):
                    terms[(phase, "chain", i, k, r.chunks)] = hop.uses[0].seconds
        samples.append((terms, planner.footprint()))
    keys = set().union(*(t for t, _ in samples))
    coef = {}
    for key in keys:
        v0 = samples[0][0].get(key, 0.0)
        coef[key] = (v0, np.array([samples[i + 1][0].get(key, 0.0) - v0 for i in range(6)]))
    mem = {}
    for s in _STORES:
        v0 = samples[0][1][s]
        mem[s] = (v0, np.array([samples[i + 1][1][s] - v0 for i in range(6)]))
    return coef, mem


def _solve(workload, coef: dict, mem: dict, cap: dict, max_kv_cpu: float, links: set[str]):
    """min L*(Tp + (gen-1)*Td) over x = (6 fractions, Tp, Td). Returns (objective, x) or None if infeasible."""
    from scipy.optimize import linprog

    L = workload.model.num_layers
    c = np.zeros(8)
    c[6], c[7] = L, L * max(workload.gen_len - 1, 0)
    A, b = [], []

    def bound(row6: np.ndarray, t_index: int, const: float) -> None:  # row6 . x + const <= T
        row = np.zeros(8)
        row[:6] = row6
        row[t_index] = -1.0
        A.append(row)
        b.append(-const)

    chains: dict[tuple, list[tuple[float, np.ndarray, int]]] = {}
    traffic = np.zeros(6)
    for key, (a0, a) in coef.items():
        t_index = 6 if key[0] == "prefill" else 7
        if key[1] == "channel":
            bound(a, t_index, a0)
            if key[2] in links:
                traffic += a
        else:
            chains.setdefault((key[0], key[2]), []).append((a0, a, key[4]))
    for (phase, _), hops in chains.items():
        t_index = 6 if phase == "prefill" else 7
        n = hops[0][2]
        s0 = sum(h[0] for h in hops) / n
        s1 = sum(h[1] for h in hops) / n
        for a0, a, _ in hops:
            bound(s1 + (n - 1) / n * a, t_index, s0 + (n - 1) / n * a0)
    for s in _STORES:
        m0, m = mem[s]
        row = np.zeros(8)
        row[:6] = m
        A.append(row)
        b.append(cap[s] * (1 - 1e-9) - m0)
    for i in (0, 2, 4):  # gpu + cpu <= 1 for weights, cache, activations
        row = np.zeros(8)
        row[i] = row[i + 1] = 1.0
        A.append(row)
        b.append(1.0)
    # ties (a transfer hidden under compute costs no time) go to the placement that moves the fewest bytes
    c[:6] = 1e-6 * (c[6] + c[7]) * traffic
    bounds = [(0, 1)] * 6 + [(0, None), (0, None)]
    bounds[3] = (0, max_kv_cpu)
    res = linprog(c, A_ub=np.array(A), b_ub=np.array(b), bounds=bounds, method="highs")
    if res.status != 0:
        return None
    return float(res.fun), res.x


def search_flexgen(
    platform: Platform,
    workload: Workload,
    max_gpu_batches: int = 16,
    cpu_attention: tuple[bool, ...] = (False, True),
    max_kv_cpu: float = 1.0,
    pinned: bool = True,
) -> SearchResult:
    """The FlexGen policy with the least LP time for `workload` on `platform`; SpecError naming the store that
    overflows when no placement fits. `cpu_attention` lists the CPU-delegation choices the search may take;
    `max_kv_cpu` caps the KV share in host DRAM (0 = an SSD-based deployment that keeps DRAM free of KV cache)."""
    cap = capacities(platform)
    ch = channels(platform, pinned)
    splits = [n for n in range(1, max_gpu_batches + 1) if workload.batch % n == 0]
    best: tuple[float, Policy] | None = None
    solved = rejected = 0
    least: dict[str, float] = {}
    for n in splits:
        for ca in cpu_attention:
            base = Policy(
                "flexgen",
                gpu_batch_size=workload.batch // n,
                num_gpu_batches=n,
                w_gpu=0.0,
                act_gpu=0.0,
                cpu_attention=ca,
                pinned=pinned,
            )
            coef, mem = _linear_terms(platform, workload, base, ch)
            for s in _STORES:  # the least each store can hold with these splits (for the error message)
                m0, m = mem[s]
                least[s] = min(least.get(s, float("inf")), m0 + float(np.minimum(m, 0).sum()))
            out = _solve(workload, coef, mem, cap, max_kv_cpu, {k for k, c in ch.items() if c.kind == "link"})
            if out is None:
                rejected += 1
                continue
            solved += 1
            obj, x = out
            if best is None or obj < best[0] * (1 - 1e-9):
                best = (obj, _policy_at(base, x[:6]))
    if best is None:
        gb = 1e9
        over = [s for s in _STORES if least.get(s, 0.0) > cap[s]]
        if over:
            s = over[0]
            raise SpecError(
                f"no FlexGen placement of {workload.model.name} (batch {workload.batch}, context "
                f"{workload.final_context}) fits platform {platform.name!r}: {s} needs at least "
                f"{least[s] / gb:.1f} GB but has {cap[s] / gb:.1f} GB; lower --batch or --prompt/--gen, "
                f"use a compression scheme, or {FIX_HINTS[s]}"
            )
        raise SpecError(
            f"no FlexGen placement of {workload.model.name} (batch {workload.batch}, context "
            f"{workload.final_context}) fits platform {platform.name!r}: weights, KV cache and "
            "activations overfill GPU, host DRAM and disk together; lower --batch or --prompt/--gen, or "
            "use a compression scheme"
        )
    pol = best[1]
    return SearchResult(pol, best[0], estimate_total_s(platform, workload, pol, ch), solved, rejected)
