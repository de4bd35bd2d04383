"""Off-chip memory as the accelerator sees it: channels, bursts, latency, efficiency, all from the HardwareSpec.

Model (one clock domain: the accelerator's ``freq_hz``):

* A transfer of ``n`` bytes is split into bursts of ``memory.burst_bytes`` and the bursts are interleaved over the
  channels the design's dies are wired to (``HardwareSpec.active_channels``; all ``memory.channels`` by default)
  (address interleaving at burst granularity, as an AXI crossbar or a striped layout
  does). The channels work in parallel; the transfer occupies them for the time the busiest channel needs:
  ``ceil(ceil(n / burst) / channels) * burst`` bytes at the channel's sustained rate.
* A channel's sustained rate is its theoretical bandwidth times ``memory.efficiency`` (refresh, page misses and
  controller turnarounds of long sequential streams, a measured figure), expressed in bytes per accelerator cycle.
* A write costs ``memory.turnaround_ns`` twice (the bus turns to writing and back). Row misses out of stream order
  (``memory.row_miss_ns``) and a limited number of loads in flight (``fpga.outstanding_loads``) are priced by the
  analytical model only; here double buffering and the FIFO below decide what latency is hidden.
* Every request sees ``memory.latency_ns`` between its issue and its first data; requests queue FIFO on the data
  path, so the latency of a request issued while the channels still deliver older data is hidden.

`MemoryBus.read` is the whole interface: given the cycle a request is issued and its size, it returns the cycle
its last byte arrives, and moves the bus's busy horizon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.hardware import HardwareSpec

__all__ = ["MemoryModel", "MemoryBus"]


@dataclass(frozen=True)
class MemoryModel:
    """Static timing figures of the off-chip memory in accelerator cycles (derived from ``hw.memory``)."""

    channels: int
    burst_bytes: int
    channel_bytes_per_cycle: float  # sustained, efficiency applied
    latency_cycles: int
    turnaround_cycles: int = 0  # read <-> write bus turnaround (memory.turnaround_ns)

    @classmethod
    def from_hardware(cls, hw: HardwareSpec) -> MemoryModel:
        m = hw.memory
        return cls(
            channels=hw.active_channels,
            burst_bytes=m.burst_bytes,
            channel_bytes_per_cycle=m.channel_bandwidth_bytes_per_s * m.efficiency / hw.freq_hz,
            latency_cycles=math.ceil(m.latency_ns * 1e-9 * hw.freq_hz - 1e-9),
            turnaround_cycles=math.ceil(m.turnaround_ns * 1e-9 * hw.freq_hz - 1e-9),
        )

    @property
    def bytes_per_cycle(self) -> float:
        """Sustained bytes per cycle of all channels together."""
        return self.channel_bytes_per_cycle * self.channels

    def transfer_cycles(self, nbytes: int) -> int:
        """Cycles the channels are busy delivering one transfer of `nbytes` (0 for an empty transfer)."""
        if nbytes <= 0:
            return 0
        bursts = -(-int(nbytes) // self.burst_bytes)
        per_channel = -(-bursts // self.channels) * self.burst_bytes
        return math.ceil(per_channel / self.channel_bytes_per_cycle - 1e-9)


class MemoryBus:
    """The shared data path of all channels: FIFO service of requests in issue order.

    `busy_until` is the cycle at which the channels finish the data of every request issued so far;
    `bytes_moved` and `busy_cycles` count traffic (for utilisation figures).
    """

    __slots__ = ("model", "busy_until", "bytes_moved", "busy_cycles")

    def __init__(self, model: MemoryModel, start: int = 0) -> None:
        self.model = model
        self.busy_until = start
        self.bytes_moved = 0
        self.busy_cycles = 0

    def read(self, issue: int, nbytes: int) -> int:
        """Issue a transfer of `nbytes` at cycle `issue`; returns the cycle its last byte has arrived."""
        t = self.model.transfer_cycles(nbytes)
        start = max(issue + self.model.latency_cycles, self.busy_until)
        self.busy_until = start + t
        self.bytes_moved += int(nbytes)
        self.busy_cycles += t
        return self.busy_until

    def write(self, issue: int, nbytes: int) -> int:
        """A posted write occupies the channels like a read (its latency is the write response), plus the bus
        turnaround into and out of the write (2 x ``turnaround_cycles``)."""
        end = self.read(issue, nbytes)
        turn = 2 * self.model.turnaround_cycles
        self.busy_until += turn
        self.busy_cycles += turn
        return end + turn
