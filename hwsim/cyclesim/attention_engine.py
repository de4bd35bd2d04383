"""Cycle model of the RTL attention engine (rtl/engine.py), phase by phase, with an optional functional datapath.

The engine (documented in engine/cycles.py; lanes L, head_dim D, G = D / 64 V tiles per token, E = softmax_lanes(L)
= min(L, 16) softmax lanes; pipeline depths from engine/timing.py, the contract the RTL units are tested against) is a
sequential controller. For every 64-token block it runs the phases

    BLK    accept the block header, clear the score accumulators, popcount(sel)        BLK_CYCLES (3)
    KRUN   the D K tiles (channel d); the header FIFO (filled one per cycle ahead of use) lets the first value
           beat go with the header, so a tile occupies the lanes max(1, ceil(n / L)) cycles
    KDRAIN the last K beats pass the beat pipeline                                      BEAT_LATENCY - 1 (11)
    SCAN   block max of the selected raw scores, E scores per cycle                      64 / E
    UPD    the last scan reaches the block max, then the update command                  SCAN_LATENCY (5)
    UWAIT  running max and rescale of the accumulators in the update pipeline            UPDATE_LATENCY (6)
    EXP    scaled score + exp2 of E tokens per cycle, l += sum p                         64 / E
    EWAIT  the last p values and l land (V beats read p; the normaliser reads l)         EWAIT_CYCLES (9)
    VRUN   for each selected token its G V tiles, max(1, ceil(n / L)) cycles each

and after the last block NSTART (1 cycle), DIV (restoring division 2^44 / l, one quotient bit per cycle:
RECIP_BITS cycles), NPIPE (the normaliser's NORM_PIPE output stages) and OUT (D output beats, one per cycle).
Cycles count from the first header beat accepted to the last output beat.

Two ways to run the same machine:

* `EngineModel.run` -- event-driven: each phase is one event whose length is the sum of its beats' occupancies
  (vectorised over tiles), consecutive identical blocks are jumped over in one step. This is what the accelerator
  schedule uses.
* `EngineModel.run_stepped` -- the controller stepped one clock cycle at a time (tile by tile, beat by beat), the
  slow reference the tests compare the event-driven mode against.

With `functional=True` each block's phases also run the golden datapath on integers (engine/datapath.py: scores,
block max, exp2, p', output accumulators; after the last block the division and normalisation), so the output is
`engine.datapath.run_engine`'s bit for bit (a test checks it).

Block arrival times (from the memory model) can be given: a block's BLK phase cannot start before its data is in
the engine's block buffer; the engine then only waits, it never reorders (the RTL's valid/ready behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from base.errors import SpecError
from engine.cycles import tile_cycles, tile_value_counts
from engine.datapath import SoftmaxState
from engine.params import LANES, TILE, check_head_dim, check_lanes
from engine.timing import FIXED_PHASES, TAIL_PHASES, softmax_lanes

__all__ = ["BlockWork", "HeadWork", "EngineRun", "EngineModel", "head_work"]

PHASES = ("BLK", "KRUN", "KDRAIN", "SCAN", "UPD", "UWAIT", "EXP", "EWAIT", "VRUN", "NSTART", "DIV", "NPIPE", "OUT")


@dataclass(frozen=True)
class BlockWork:
    """The beats one 64-token block asks of the engine.

    nk: int [D] values streamed per K tile (dense block: popcount(sel) each; sparse: the bitmap's popcount, the
    kept values of masked tokens included). nv: int [n_sel, G] values per V tile of each selected token (dense: 64).
    """

    nk: np.ndarray
    nv: np.ndarray

    @property
    def n_sel(self) -> int:
        return int(self.nv.shape[0])

    def key(self) -> tuple:
        return (self.nk.tobytes(), self.nv.shape, self.nv.tobytes())

    @classmethod
    def uniform(cls, head_dim: int, n_sel: int, k_values: int, v_values: int) -> BlockWork:
        """A block whose K tiles all stream `k_values` values and whose V tiles all stream `v_values`."""
        g = head_dim // TILE
        return cls(nk=np.full(head_dim, k_values, dtype=np.int64), nv=np.full((n_sel, g), v_values, dtype=np.int64))


@dataclass(frozen=True)
class HeadWork:
    """All blocks of one head, in the order the engine receives them.

    `arrays` (optional, from `head_work`): (nk int [B, D], nv int [B, 64, G] with 0 rows for unselected tokens,
    sel bool [B, 64]) -- the same counts as `blocks`, kept whole so a stall-free run is one vectorised event per
    phase for all blocks at once.
    """

    head_dim: int
    blocks: tuple[BlockWork, ...]
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)

    def runs(self) -> list[tuple[BlockWork, int]]:
        """Consecutive identical blocks as (block, count)."""
        out: list[tuple[BlockWork, int]] = []
        last_key = None
        for b in self.blocks:
            k = b.key()
            if k == last_key:
                out[-1] = (out[-1][0], out[-1][1] + 1)
            else:
                out.append((b, 1))
                last_key = k
        return out


def head_work(head) -> HeadWork:
    """The beats of an `engine.datapath.EngineHead`: per-tile value counts as the sequencer streams them
    (engine.cycles.tile_value_counts)."""
    nk, nv = tile_value_counts(head)
    sel = head.sel_bits()  # [B, 64]
    blocks = tuple(BlockWork(nk=nk[b], nv=nv[b][sel[b]]) for b in range(head.n_blocks))
    return HeadWork(head.head_dim, blocks, (nk, nv, sel))


@dataclass(frozen=True)
class EngineRun:
    """Result of one head: total cycles (stall-free part + waits), per-phase busy cycles, the output if functional,
    and the cycle each block's BLK phase started (relative to the head's start)."""

    cycles: int
    phase_cycles: dict[str, int]
    lane_ops: int  # values streamed through the lanes (useful MACs)
    block_starts: tuple[int, ...] = ()
    output: np.ndarray | None = None
    wait_cycles: int = 0


class EngineModel:
    """One attention engine with `lanes` int4 x int8 MAC lanes for heads of `head_dim`."""

    def __init__(self, head_dim: int, lanes: int) -> None:
        check_head_dim(head_dim, "the attention engine takes no other head size; use the linear engine for it")
        check_lanes(lanes, f"set fpga.attention_lanes to one of {LANES}")
        self.D = head_dim
        self.L = lanes
        self.E = softmax_lanes(lanes)  # scan/exp lanes of the softmax unit
        self.G = head_dim // TILE
        self._cache: dict[tuple, dict[str, int]] = {}

    # ---- per-phase occupancy (the beats each phase consumes) ------------------------------------------------
    def _tiles(self, n: np.ndarray) -> int:
        """Cycles a run of tiles occupies the lanes: header and first value beat together, >= 1 per tile."""
        return int(tile_cycles(n, self.L).sum())

    def block_phases(self, blk: BlockWork) -> dict[str, int]:
        """Cycles of each phase of one block (event-driven: one event per phase)."""
        key = blk.key()
        got = self._cache.get(key)
        if got is None:
            got = {
                **FIXED_PHASES,
                "KRUN": self._tiles(blk.nk),
                "SCAN": TILE // self.E,
                "EXP": TILE // self.E,
                "VRUN": self._tiles(blk.nv.reshape(-1)),
            }
            self._cache[key] = got
        return got

    def tail_phases(self) -> dict[str, int]:
        return {**TAIL_PHASES, "OUT": self.D}

    # ---- event-driven run ------------------------------------------------------------------------------------
    def run(
        self, work: HeadWork, arrivals: list[int] | None = None, *, engine_head=None, functional: bool = False
    ) -> EngineRun:
        """Run one head. `arrivals[b]`: cycle (relative to the head's first header) at which block b's data is in
        the block buffer (None: always there, the stall-free count). `engine_head`: the EngineHead whose values
        the functional mode computes on (required when functional)."""
        if work.head_dim != self.D:
            raise SpecError(f"head of dim {work.head_dim} on an engine built for {self.D}")
        if not work.blocks:
            raise SpecError("a head needs at least one block; select at least one token")
        phases = {k: 0 for k in PHASES}
        lane_ops = 0
        t = 0
        wait = 0
        starts: list[int] = []
        dp = SoftmaxState(self.D) if functional else None
        if functional and engine_head is None:
            raise SpecError("functional mode needs the EngineHead whose values it computes on")
        if arrivals is None and not functional and work.arrays is not None:
            # stall-free, whole head at once: one vectorised event per phase for all blocks
            nk, nv, sel = work.arrays
            krun = tile_cycles(nk, self.L).sum(axis=1)  # [B]
            vrun = (tile_cycles(nv, self.L) * sel[:, :, None]).sum(axis=(1, 2))  # [B]
            B = nk.shape[0]
            fixed = {k: B * v for k, v in self.block_phases(work.blocks[0]).items() if k not in ("KRUN", "VRUN")}
            per = krun + vrun + sum(fixed.values()) // B
            phases.update(fixed, KRUN=int(krun.sum()), VRUN=int(vrun.sum()))
            ends = np.cumsum(per)
            starts = (ends - per).tolist()
            t = int(ends[-1])
            lane_ops = int(nk.sum() + nv.sum())
        elif arrivals is None and not functional:
            # stall-free: identical consecutive blocks are one event each phase, times their count
            for blk, count in work.runs():
                ph = self.block_phases(blk)
                per = sum(ph.values())
                for k, v in ph.items():
                    phases[k] += v * count
                starts.extend(t + i * per for i in range(count))
                t += per * count
                lane_ops += count * (int(blk.nk.sum()) + int(blk.nv.sum()))
        else:
            for b, blk in enumerate(work.blocks):
                if arrivals is not None and arrivals[b] > t:
                    wait += arrivals[b] - t
                    t = arrivals[b]
                starts.append(t)
                ph = self.block_phases(blk)
                for k, v in ph.items():
                    phases[k] += v
                t += sum(ph.values())
                lane_ops += int(blk.nk.sum()) + int(blk.nv.sum())
                if dp is not None:  # KRUN .. VRUN of block b on integers
                    dp.block(engine_head, b)
        tail = self.tail_phases()
        for k, v in tail.items():
            phases[k] += v
        t += sum(tail.values())
        out = dp.finish()[0] if dp is not None else None  # DIV, NPIPE, OUT
        return EngineRun(
            cycles=t, phase_cycles=phases, lane_ops=lane_ops, block_starts=tuple(starts), output=out, wait_cycles=wait
        )

    # ---- cycle-stepped reference ----------------------------------------------------------------------------
    def run_stepped(self, work: HeadWork) -> int:
        """The controller advanced one clock at a time (stall-free). Slow; the reference for `run`."""
        L = self.L
        waits = FIXED_PHASES  # fixed-length states: cycles each
        after = {"BLK": "KRUN", "KDRAIN": "SCAN", "UPD": "UWAIT", "UWAIT": "EXP", "EWAIT": "VRUN"}
        cycles = 0
        for blk in work.blocks:
            state, left = "BLK", waits["BLK"]
            tiles_k = [int(n) for n in blk.nk]
            tiles_v = [int(n) for n in blk.nv.reshape(-1)]
            ti = 0
            beats_left = 0
            count = 0
            while state != "NEXT":
                cycles += 1
                if state in waits:
                    left -= 1
                    if left == 0:
                        state = after[state]
                        left = waits.get(state, 0)
                        ti = beats_left = count = 0
                        if state == "VRUN" and not tiles_v:
                            state = "NEXT"
                elif state in ("KRUN", "VRUN"):
                    tiles = tiles_k if state == "KRUN" else tiles_v
                    if beats_left == 0:  # header beat accepted, first value beat (if any) with it
                        beats_left = int(tile_cycles(tiles[ti], L))
                    beats_left -= 1
                    if beats_left == 0:
                        ti += 1
                        if ti == len(tiles):
                            state, left = ("KDRAIN", waits["KDRAIN"]) if state == "KRUN" else ("NEXT", 0)
                elif state in ("SCAN", "EXP"):
                    count += self.E
                    if count >= TILE:
                        state = "UPD" if state == "SCAN" else "EWAIT"
                        left = waits[state]
        for _ in range(sum(TAIL_PHASES.values())):  # NSTART, DIV (one quotient bit per cycle), NPIPE
            cycles += 1
        for _ in range(self.D):  # OUT: one output beat per cycle
            cycles += 1
        return cycles
