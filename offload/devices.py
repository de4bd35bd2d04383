"""Devices of the simulation: channels (links and engines) move bytes or do work; stores hold bytes.

A `Channel` is SimPy's ``Cable`` idea grown up: a link object with its own bandwidth and latency. Each member keeps
a calendar of busy intervals; a piece of work is placed, without preemption, in the earliest idle gap at or after
the time its input is ready (pieces posted at the same time are served in posting order, like DMA descriptors in a
copy engine's queue; a piece whose input is ready later may fill an earlier gap). Booking returns the finish time at
once, so the simulation needs one timeout per stage instead of one per request/grant/release. A channel with several
members (striped drives) splits each piece evenly over them; the piece ends when the slowest member ends.
Injected slowdowns (`Slowdown`) scale a member's speed over a time window; a piece's duration integrates the speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from base.errors import SpecError
from base.specio import rng

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


def work_between(t0: float, t1: float, windows: list[tuple[float, float, float]]) -> float:
    """Full-speed seconds of work a member does in [t0, t1) under piecewise speed `windows`."""
    done = t1 - t0
    for a, b, f in windows:
        lo, hi = max(a, t0), min(b, t1)
        if hi > lo:
            done -= (hi - lo) * (1 - f)
    return done


class Channel:
    """A link or engine with `members` parallel units, each with a calendar of busy intervals.

    ``splittable`` (links): a piece may be cut to fill idle gaps, as a DMA transfer is cut into packets that
    interleave with other transfers. Engines (GPU kernels, FPGA, CPU) run a piece without interruption."""

    def __init__(self, name: str, members: int, latency_s: float, splittable: bool = False) -> None:
        self.name, self.members, self.latency_s, self.splittable = name, members, latency_s, splittable
        self.calendar: list[list[tuple[float, float]]] = [[] for _ in range(members)]
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

    def forget_before(self, now: float) -> None:
        """Drop busy intervals that ended by `now` (no later piece can start before now)."""
        for cal in self.calendar:
            k = 0
            while k < len(cal) and cal[k][1] <= now:
                k += 1
            if k:
                del cal[:k]

    def _place_split(self, m: int, earliest: float, work_s: float) -> tuple[float, float]:
        """Fill idle gaps from `earliest` on until `work_s` is done; returns (busy seconds, end)."""
        cal, win = self.calendar[m], self.windows[m]
        t, left, busy = earliest, work_s, 0.0
        i = 0
        while i < len(cal) and left > 0:
            a, b = cal[i]
            if b <= t:
                i += 1
                continue
            if a > t:  # an idle gap [t, a)
                cap = work_between(t, a, win) if win else a - t
                if cap >= left:
                    break
                cal.insert(i, (t, a))
                busy += a - t
                left -= cap
                i += 1
            t = max(t, b)
            i += 1
        if left <= 0:
            return busy, t
        stop = finish_time(t, left, win) if win else t + left
        if stop > t:
            cal.insert(i, (t, stop))
        return busy + stop - t, stop

    def _place(self, m: int, earliest: float, work_s: float) -> tuple[float, float]:
        cal, win = self.calendar[m], self.windows[m]
        t = earliest
        i = 0
        while i < len(cal):
            a, b = cal[i]
            if b <= t:
                i += 1
                continue
            stop = finish_time(t, work_s, win) if win else t + work_s
            if stop <= a:  # fits in the gap before interval i
                break
            t = b
            i += 1
        stop = finish_time(t, work_s, win) if win else t + work_s
        if stop > t:
            if i > 0 and cal[i - 1][1] == t:  # merge with the interval it touches
                cal[i - 1] = (cal[i - 1][0], stop)
            else:
                cal.insert(i, (t, stop))
        return t, stop

    def book(self, earliest: float, work_s: float) -> float:
        """Place `work_s` seconds of full-speed work per member, not before `earliest`; return when the result is
        available (the slowest member's end plus the channel latency)."""
        end = earliest
        self.pieces += 1
        for m in range(self.members):
            cal, win = self.calendar[m], self.windows[m]
            if not cal or cal[-1][1] <= earliest:  # fast path: nothing booked at or after `earliest`
                stop = finish_time(earliest, work_s, win) if win else earliest + work_s
                if stop > earliest:
                    if cal and cal[-1][1] == earliest:
                        cal[-1] = (cal[-1][0], stop)
                    else:
                        cal.append((earliest, stop))
                self.busy_s[m] += stop - earliest
                end = max(end, stop)
                continue
            if self.splittable:
                busy, stop = self._place_split(m, earliest, work_s)
            else:
                start, stop = self._place(m, earliest, work_s)
                busy = stop - start
            self.busy_s[m] += busy
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
