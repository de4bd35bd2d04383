"""Devices of the simulation: channels (links and engines) move bytes or do work; stores hold bytes.

A `Channel` is SimPy's ``Cable`` idea grown up: a link object with its own bandwidth and latency. Work is queued
FIFO in the order it is posted (like DMA descriptors in a copy engine's queue), so a booking returns its finish time
at once and the simulation needs one timeout per route instead of one per request/grant/release. A channel with
several members (striped drives) splits each piece evenly over them; the piece ends when the slowest member ends.
Injected slowdowns (`Slowdown`) scale a member's speed over a time window; a piece's duration integrates the speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hwsim.errors import SpecError
from hwsim.specio import rng

__all__ = ["Slowdown", "Channel", "Store", "finish_time"]


@dataclass(frozen=True)
class Slowdown:
    """Channel `channel` (member `member`, or all members when None) runs at `factor` of its speed in [start, end)."""

    channel: str
    start_s: float = field(metadata=rng(ge=0))
    end_s: float = field(metadata=rng(gt=0))
    factor: float = field(metadata=rng(gt=0, le=1))
    member: int | None = None

    def __post_init__(self) -> None:
        if not self.end_s > self.start_s:
            raise SpecError(f"slowdown of {self.channel}: end_s {self.end_s} must be after start_s {self.start_s}")


def finish_time(start: float, work_s: float, windows: list[tuple[float, float, float]]) -> float:
    """When work of `work_s` seconds at full speed, begun at `start`, ends under piecewise speed `windows`
    (sorted, non-overlapping (t0, t1, factor) intervals; full speed elsewhere)."""
    t, left = start, work_s
    for t0, t1, f in windows:
        if left <= 0 or t1 <= t:
            continue
        if t < t0:  # full speed until the window opens
            if t + left <= t0:
                return t + left
            left -= t0 - t
            t = t0
        cap = (t1 - t) * f  # work the window can absorb
        if left <= cap:
            return t + left / f
        left -= cap
        t = t1
    return t + left


class Channel:
    """A link or engine with `members` parallel units and FIFO work queues."""

    def __init__(self, name: str, members: int, latency_s: float) -> None:
        self.name, self.members, self.latency_s = name, members, latency_s
        self.free_at = [0.0] * members
        self.windows: list[list[tuple[float, float, float]]] = [[] for _ in range(members)]
        self.busy_s = [0.0] * members
        self.nbytes = 0.0
        self.flops = 0.0
        self.pieces = 0

    def add_slowdown(self, sd: Slowdown) -> None:
        targets = range(self.members) if sd.member is None else [sd.member]
        for m in targets:
            if not 0 <= m < self.members:
                raise SpecError(f"slowdown of {self.name}: member {m} does not exist (0..{self.members - 1})")
            ws = sorted(self.windows[m] + [(sd.start_s, sd.end_s, sd.factor)])
            for a, b in zip(ws, ws[1:]):
                if b[0] < a[1]:
                    raise SpecError(f"slowdowns of {self.name} member {m} overlap; give disjoint windows")
            self.windows[m] = ws

    def book(self, earliest: float, work_s: float) -> float:
        """Queue `work_s` seconds of full-speed work per member, not before `earliest`; return when the result is
        available (the slowest member's end plus the channel latency)."""
        end = earliest
        self.pieces += 1
        for m in range(self.members):
            start = max(earliest, self.free_at[m])
            stop = finish_time(start, work_s, self.windows[m]) if self.windows[m] else start + work_s
            self.free_at[m] = stop
            self.busy_s[m] += stop - start
            end = max(end, stop)
        return end + self.latency_s

    @property
    def busy_per_member_s(self) -> float:
        return sum(self.busy_s) / self.members


class Store:
    """A memory or drive that holds bytes: counts what was written, read and freed, and the peak residency."""

    def __init__(self, name: str, capacity_bytes: float, initial_bytes: float = 0.0) -> None:
        self.name, self.capacity_bytes = name, capacity_bytes
        self.initial_bytes = self.resident_bytes = self.peak_bytes = initial_bytes
        self.written_bytes = self.read_bytes = self.freed_bytes = 0.0

    def apply(self, op: str, nbytes: float) -> None:
        if op == "write":
            self.written_bytes += nbytes
            self.resident_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.resident_bytes)
        elif op == "free":
            self.freed_bytes += nbytes
            self.resident_bytes -= nbytes
        elif op == "read":
            self.read_bytes += nbytes
        else:  # pragma: no cover - plans only emit the three ops
            raise ValueError(op)
