"""The simpy discrete-event simulation: execute a policy's layer-step plans on channel and store objects.

The driver runs FlexGen's overlapped loop: at every layer step it starts ``load(s+1)``, ``compute(s)`` and
``store(s-1)`` as three processes and waits for all of them (FlexGen's ``sync()``); with ``overlap=False`` the three
stages of a step run one after the other. Each GPU batch of sequences is a request process that waits for every
token of its generation; the run checks that all of them complete. Events scale with layer steps, not bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from offload.channels import channels
from offload.devices import Channel, Slowdown, Store
from offload.footprint import capacities, check_fits
from offload.plan import STORES, Route
from offload.planners import make_planner
from offload.result import OffloadResult, StoreStats, TraceEvent

if TYPE_CHECKING:
    from offload.platform import Platform
    from offload.policy import Policy
    from offload.workload import Workload

__all__ = ["simulate"]


def simulate(
    platform: Platform,
    workload: Workload,
    policy: Policy,
    *,
    slowdowns: Iterable[Slowdown] = (),
    trace: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> OffloadResult:
    """Simulate `workload` on `platform` under `policy`. `progress(done_tokens, total_tokens)` is called as tokens
    complete. Raises SpecError for a placement that does not fit."""
    return _Sim(platform, workload, policy, tuple(slowdowns), trace, progress).run()


class _Sim:
    def __init__(self, platform, workload, policy, slowdowns, trace, progress) -> None:
        import simpy

        self.env = simpy.Environment()
        self.planner = make_planner(platform, workload, policy)
        check_fits(platform, workload, policy)
        self.platform, self.wl, self.pol = platform, workload, policy
        self.specs = channels(platform, policy.pinned)
        self.chans = {n: Channel(n, c.members, c.latency_s, splittable=c.kind == "link") for n, c in self.specs.items()}
        for sd in slowdowns:
            if sd.channel not in self.chans:
                from base.errors import SpecError

                raise SpecError(
                    f"slowdown names channel {sd.channel!r}, which platform {platform.name!r} lacks; "
                    f"use one of {', '.join(self.chans)}"
                )
            self.chans[sd.channel].add_slowdown(sd)
        cap = capacities(platform)
        init = self.planner.initial_residency()
        self.stores = {s: Store(s, cap[s], init[s]) for s in STORES}
        self.trace_on, self.trace = trace, []
        self.progress = progress
        self.L = workload.model.num_layers
        self.token_done = [self.env.event() for _ in range(workload.gen_len)]
        self.completed = 0
        self.prefill_s = 0.0

    # ---- executing one route / stage ----------------------------------------------------------------------
    def _book(self, route: Route, start: float) -> float:
        n = route.chunks
        ready = [start] * n
        for hop in route.hops:
            for u in hop.uses:
                ch = self.chans[u.channel]
                ch.nbytes += u.nbytes
                ch.flops += u.flops
            for c in range(n):
                t = ready[c]
                end = t
                for u in hop.uses:
                    end = max(end, self.chans[u.channel].book(t, u.seconds / n))
                ready[c] = end
        return max(ready)

    def _stage(self, step: int, stage: str, routes: tuple[Route, ...]):
        env = self.env
        now = env.now
        for r in routes:
            for hop in r.hops:
                for u in hop.uses:
                    self.chans[u.channel].forget_before(now)
        ends: list[float] = []
        for r in routes:
            start = max([now] + [ends[i] for i in r.after])
            end = self._book(r, start)
            ends.append(end)
            if self.trace_on:
                token, layer = divmod(step, self.L)
                self.trace.append(TraceEvent(step, token, layer, stage, r.name, start, end))
        if ends and max(ends) > now:
            yield env.timeout(max(ends) - now)
        for r in routes:
            for e in r.effects:
                self.stores[e.store].apply(e.op, e.nbytes)

    def _stages(self, items: list[tuple[int, str]]):
        procs = []
        for step, stage in items:
            plan = self.planner.step_plan(step)
            routes = getattr(plan, stage)
            if routes:
                procs.append(self.env.process(self._stage(step, stage, routes)))
        if procs:
            yield self.env.all_of(procs)

    # ---- the loop -----------------------------------------------------------------------------------------
    def _driver(self):
        S, L = self.planner.num_steps, self.L
        if self.pol.overlap:
            yield from self._stages([(0, "load")])
            for s in range(S):
                # compute(s) is queued first: a load's dependent GPU work (LeoAM's scoring) must not delay it
                items = [(s, "compute")] + ([(s + 1, "load")] if s + 1 < S else [])
                items += [(s - 1, "store")] if s > 0 else []
                yield from self._stages(items)  # sync()
                if s % L == L - 1:
                    self._token_finished(s // L)
            yield from self._stages([(S - 1, "store")])
        else:
            for s in range(S):
                for stage in ("load", "compute", "store"):
                    yield from self._stages([(s, stage)])
                if s % L == L - 1:
                    self._token_finished(s // L)

    def _token_finished(self, token: int) -> None:
        if token == 0:
            self.prefill_s = self.env.now
        self.token_done[token].succeed()
        if self.progress is not None:
            self.progress(token + 1, self.wl.gen_len)

    def _request(self, size: int):
        yield from self.token_done  # one request = one GPU batch of sequences, generating gen_len tokens
        self.completed += size

    def run(self) -> OffloadResult:
        env = self.env
        for _ in range(self.pol.num_gpu_batches):
            env.process(self._request(self.pol.gpu_batch_size))
        done = env.process(self._driver())
        events = 0
        while env.peek() != float("inf"):
            env.step()
            events += 1
        assert done.triggered, "simulation driver did not finish"
        return OffloadResult(
            fidelity="simpy",
            platform=self.platform.name,
            model=self.wl.model.name,
            policy=self.pol.label(),
            batch=self.wl.batch,
            prompt_len=self.wl.prompt_len,
            gen_len=self.wl.gen_len,
            total_s=env.now,
            prefill_s=self.prefill_s,
            busy_s={n: c.busy_per_member_s for n, c in self.chans.items()},
            members={n: c.members for n, c in self.chans.items()},
            bytes_moved={n: c.nbytes for n, c in self.chans.items() if self.specs[n].kind == "link"},
            flops={n: c.flops for n, c in self.chans.items() if self.specs[n].kind == "compute"},
            stores={n: _stats(s) for n, s in self.stores.items()},
            requests_submitted=self.wl.batch,
            requests_completed=self.completed,
            events=events,
            trace=tuple(self.trace),
        )


def _stats(s: Store) -> StoreStats:
    return StoreStats(
        s.name,
        s.capacity_bytes,
        s.initial_bytes,
        s.written_bytes,
        s.read_bytes,
        s.freed_bytes,
        s.resident_bytes,
        s.peak_bytes,
    )
