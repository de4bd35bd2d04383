"""Double-buffered tile streams: the producer/consumer recurrence every engine of the accelerator runs.

A stream is a sequence of tiles. Tile ``i`` is read from memory into one of ``buffers`` on-chip buffers and then
computed on. Its read is issued as soon as its buffer is free (tile ``i - buffers`` has been computed) and the
compute of tile ``i`` starts when its data has arrived, the engine has finished tile ``i - 1`` and the operator's
input is ready::

    issue_i  = cend_{i-buffers}
    dend_i   = bus.read(issue_i, bytes_i)            # FIFO data path, latency hidden behind older data
    cstart_i = max(dend_i, cend_{i-1}, ready)
    cend_i   = cstart_i + compute_i

This is a max-plus linear, time-invariant system: once the whole state (the bus horizon, the compute ends of the
last ``buffers`` tiles, the data ends of tiles already issued) is the previous state shifted by one constant ``d``
and the operator input is in the past, every further identical tile shifts it by ``d`` again. `TileStream.run`
detects that and jumps over the remaining identical tiles in O(1): event-driven, and still cycle-exact (a test
checks the jump against the tile-by-tile loop).
"""

from __future__ import annotations

from collections import deque

from hwsim.cyclesim._memory import MemoryBus

__all__ = ["TileStream"]


class TileStream:
    """One engine's double-buffered input stream, persistent across operators (it prefetches the next operator's
    first tiles while the current one drains).

    ``pending`` holds the data-arrival cycles of tiles already issued but not yet computed (oldest first); ``cends``
    the compute-end cycles of the last ``buffers`` computed tiles (oldest first).
    """

    def __init__(self, bus: MemoryBus, buffers: int = 2, start: int = 0, jump: bool = True) -> None:
        if buffers < 1:
            raise ValueError("a tile stream needs at least one buffer")
        self.bus = bus
        self.buffers = buffers
        self.cends: deque[int] = deque([start] * buffers, maxlen=buffers)
        self.pending: deque[int] = deque()
        self.jump = jump
        self.tiles = 0

    @property
    def last_end(self) -> int:
        return self.cends[-1]

    def prefetch(self, nbytes: int, count: int) -> None:
        """Issue up to `count` reads of `nbytes` into buffers that are free now (the next operator's first tiles)."""
        free = self.buffers - len(self.pending)
        for _ in range(min(count, free)):
            issue = self.cends[len(self.pending)]
            self.pending.append(self.bus.read(issue, nbytes))

    def run(self, n: int, nbytes: int, compute: int, ready: int = 0, next_bytes: int = 0, next_count: int = 0) -> int:
        """Compute `n` identical tiles of `nbytes` bytes and `compute` cycles each, after `ready`.

        Tiles that are not yet issued are read when their buffer frees. When done, the first `next_count` tiles
        of the next operator (of `next_bytes` each) are issued into the buffers that are free. Returns the cycle
        the last tile's compute ends.
        """
        i = 0
        hist: list[tuple[int, ...]] = []  # states before the last tiles (all under the same conditions)
        while i < n:
            # state before tile i: (bus horizon, compute ends); look for a shift-periodic pattern of period p
            if self.jump and not self.pending and ready <= self.cends[0]:
                state = (self.bus.busy_until, *self.cends)
                for p in range(1, self.buffers + 1):
                    if len(hist) >= p:
                        old = hist[-p]
                        d = state[0] - old[0]
                        if all(x - y == d for x, y in zip(state, old)):
                            k = (n - i) // p  # whole periods left: each shifts every component by d
                            if k:
                                self._shift(k * d, k * p, nbytes)
                                i += k * p
                            hist.clear()
                            break
                else:
                    hist.append(state)
                    if len(hist) > self.buffers:
                        hist.pop(0)
                if i >= n:
                    break
            else:
                hist.clear()
            self._issue_one(nbytes)
            self._compute_one(compute, ready)
            i += 1
        if next_count:
            self.prefetch(next_bytes, next_count)
        return self.cends[-1]

    def _shift(self, d: int, tiles: int, nbytes: int) -> None:
        self.bus.busy_until += d
        self.bus.bytes_moved += tiles * int(nbytes)
        self.bus.busy_cycles += tiles * self.bus.model.transfer_cycles(nbytes)
        self.cends = deque((c + d for c in self.cends), maxlen=self.buffers)
        self.tiles += tiles

    def _issue_one(self, nbytes: int) -> None:
        if not self.pending:
            self.pending.append(self.bus.read(self.cends[0], nbytes))

    def _compute_one(self, compute: int, ready: int) -> None:
        dend = self.pending.popleft()
        self.cends.append(max(dend, self.cends[-1], ready) + compute)
        self.tiles += 1
