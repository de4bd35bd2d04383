"""Cycle model of the RTL attention engine (rtl/engine.py), phase by phase, with an optional functional datapath.

The engine (documented in rtl/cycles.py; lanes L, head_dim D, G = D / 64 V tiles per token, E = softmax_lanes(L)
= min(L, 16) softmax lanes; pipeline depths from rtl/timing.py, the contract the RTL units are tested against) is a
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

With `functional=True` the phases also compute the datapath on integers (scores, block max, exp2, p', output
accumulators, division, normalisation) with the widths and roundings of quant/fixedpoint.py, and the output must
equal `quant.fixedpoint.run_engine` bit for bit (a test checks it).

Block arrival times (from the memory model) can be given: a block's BLK phase cannot start before its data is in
the engine's block buffer; the engine then only waits, it never reorders (the RTL's valid/ready behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from base.errors import SpecError
from rtl.timing import FIXED_PHASES, NORM_PIPE, softmax_lanes

__all__ = ["BlockWork", "HeadWork", "EngineRun", "EngineModel", "head_work", "ENGINE_LANES", "ENGINE_HEAD_DIMS"]

TILE = 64  # tokens per block / K tile, channels per V tile (TEAM.md tile layout)
ENGINE_LANES = (2, 4, 8, 16, 32, 64)  # the RTL's allowed lane counts (rtl/layouts.py check_lanes)
ENGINE_HEAD_DIMS = (64, 128)
RECIP_BITS = 38  # quotient bits of the normaliser's restoring division (quant/fixedpoint.py RECIP_BITS)
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
    def uniform(cls, head_dim: int, n_sel: int, k_values: int, v_values: int) -> "BlockWork":
        """A block whose K tiles all stream `k_values` values and whose V tiles all stream `v_values`."""
        g = head_dim // TILE
        return cls(nk=np.full(head_dim, k_values, dtype=np.int64),
                   nv=np.full((n_sel, g), v_values, dtype=np.int64))


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
    """The beats of a `quant.fixedpoint.EngineHead`: per-tile value counts as the sequencer streams them (popcounts
    of the bitmaps of a sparse block; the selected tokens / all 64 channels of a dense one)."""
    D = head.head_dim
    G = D // TILE
    B = head.n_blocks
    sel = ((head.sel[:, None] >> np.arange(TILE, dtype=np.uint64)) & np.uint64(1)).astype(bool)  # [B, 64]
    if head.sparse:
        nk = np.bitwise_count(np.asarray(head.k_bitmap, dtype=np.uint64)).astype(np.int64)  # [B, D]
        nv = np.bitwise_count(np.asarray(head.v_bitmap, dtype=np.uint64)).astype(np.int64)  # [B, 64, G]
    else:
        nk = np.repeat(sel.sum(axis=1, dtype=np.int64)[:, None], D, axis=1)
        nv = np.full((B, TILE, G), TILE, dtype=np.int64)
    nv = np.where(sel[:, :, None], nv, 0)
    blocks = tuple(BlockWork(nk=nk[b], nv=nv[b][sel[b]]) for b in range(B))
    return HeadWork(D, blocks, (nk, nv, sel))


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


@dataclass
class _Datapath:
    """Integer state of the functional mode (widths as quant/fixedpoint.py defines them)."""

    D: int
    acc: np.ndarray = field(default=None)  # int64 [D] (32-bit signed values)
    l: int = 0
    M: int = 0
    m_valid: bool = False

    def __post_init__(self) -> None:
        self.acc = np.zeros(self.D, dtype=np.int64)


class EngineModel:
    """One attention engine with `lanes` int4 x int8 MAC lanes for heads of `head_dim`."""

    def __init__(self, head_dim: int, lanes: int) -> None:
        if head_dim not in ENGINE_HEAD_DIMS:
            raise SpecError(f"the attention engine supports head_dim 64 or 128, got {head_dim}; use the linear "
                            "engine for other head sizes")
        if lanes not in ENGINE_LANES:
            raise SpecError(f"attention engine lanes must be one of {ENGINE_LANES} (the RTL's range), got {lanes}; "
                            "set fpga.attention_lanes to one of them")
        self.D = head_dim
        self.L = lanes
        self.E = softmax_lanes(lanes)  # scan/exp lanes of the softmax unit
        self.G = head_dim // TILE
        self._cache: dict[tuple, dict[str, int]] = {}

    # ---- per-phase occupancy (the beats each phase consumes) ------------------------------------------------
    def _tiles(self, n: np.ndarray) -> int:
        """Cycles a run of tiles occupies the lanes: header and first value beat together, >= 1 per tile."""
        return int(np.maximum(1, -(-n // self.L)).sum())

    def block_phases(self, blk: BlockWork) -> dict[str, int]:
        """Cycles of each phase of one block (event-driven: one event per phase)."""
        key = blk.key()
        got = self._cache.get(key)
        if got is None:
            got = {**FIXED_PHASES, "KRUN": self._tiles(blk.nk), "SCAN": TILE // self.E, "EXP": TILE // self.E,
                   "VRUN": self._tiles(blk.nv.reshape(-1))}
            self._cache[key] = got
        return got

    def tail_phases(self) -> dict[str, int]:
        return {"NSTART": 1, "DIV": RECIP_BITS, "NPIPE": NORM_PIPE, "OUT": self.D}

    # ---- event-driven run ------------------------------------------------------------------------------------
    def run(self, work: HeadWork, arrivals: list[int] | None = None, *, engine_head=None,
            functional: bool = False) -> EngineRun:
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
        dp = _Datapath(self.D) if functional else None
        if functional and engine_head is None:
            raise SpecError("functional mode needs the EngineHead whose values it computes on")
        if arrivals is None and not functional and work.arrays is not None:
            # stall-free, whole head at once: one vectorised event per phase for all blocks
            nk, nv, sel = work.arrays
            krun = np.maximum(1, -(-nk // self.L)).sum(axis=1)  # [B]
            vrun = (np.maximum(1, -(-nv // self.L)) * sel[:, :, None]).sum(axis=(1, 2))  # [B]
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
                if dp is not None:
                    self._block_datapath(dp, engine_head, b)
        tail = self.tail_phases()
        for k, v in tail.items():
            phases[k] += v
        t += sum(tail.values())
        out = self._finish_datapath(dp) if dp is not None else None
        return EngineRun(cycles=t, phase_cycles=phases, lane_ops=lane_ops, block_starts=tuple(starts),
                         output=out, wait_cycles=wait)

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
                        beats_left = max(1, -(-tiles[ti] // L))
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
        for _ in range(1 + RECIP_BITS + NORM_PIPE):  # NSTART, DIV (one quotient bit per cycle), NPIPE
            cycles += 1
        for _ in range(self.D):  # OUT: one output beat per cycle
            cycles += 1
        return cycles

    # ---- functional datapath (integer, bit-exact with quant/fixedpoint.run_engine) --------------------------
    def _block_datapath(self, dp: _Datapath, head, b: int) -> None:
        from quant import fixedpoint as fx

        sel = np.array([(int(head.sel[b]) >> i) & 1 for i in range(TILE)], dtype=bool)  # [64] sel bits
        # KRUN: lanes multiply streamed K values by qk[d]; score accumulators add them (gated by sel)
        s = np.zeros(TILE, dtype=np.int64)
        qk = head.qk[b].astype(np.int64)
        kb = head.k[b].astype(np.int64)  # [64, D]: channel d's K tile is column d
        s += kb @ qk  # each lane product k[t, d] * qk[d] added into token t's accumulator
        s = np.where(sel, s, 0)
        # SCAN: block max of the raw selected scores, then scaled (scaling is monotone)
        mant, sh = int(head.score_mant[b]), int(head.score_shift[b])
        xmax = (int(s[sel].max()) * mant) >> sh
        mblk = (xmax + (1 << fx.EXP_FRAC_BITS) - 1) >> fx.EXP_FRAC_BITS
        # UPD: running max and rescale shift of the accumulators
        if dp.m_valid:
            mnew = max(dp.M, mblk)
            delta = mnew - dp.M
        else:
            mnew, delta = mblk, 0
        shift = min(delta, fx.SHIFT_CLAMP)
        dp.acc >>= shift
        dp.l >>= shift
        dp.M, dp.m_valid = mnew, True
        # EXP: X = (s * mant) >> shift; ne = (M << F) - X; p = exp2 table + rounded shift
        x = (s * mant) >> sh
        ne = np.maximum((dp.M << fx.EXP_FRAC_BITS) - x, 0)
        i = np.minimum(ne >> fx.EXP_FRAC_BITS, 9)
        r = (ne >> (fx.EXP_FRAC_BITS - fx.EXP_TABLE_BITS)) & ((1 << fx.EXP_TABLE_BITS) - 1)
        table = np.asarray(fx.EXP2_TABLE, dtype=np.int64)
        p = np.where(sel, (table[r] + ((np.int64(1) << i) >> 1)) >> i, 0)
        dp.l += int(p.sum())
        # VRUN: p' = (p * sv + 128) >> 8 per V tile, lanes multiply V values, output accumulators add
        pp = (p[:, None] * head.sv[b].astype(np.int64) + 128) >> 8  # [64, G] uint8 values
        pv = np.repeat(pp, TILE, axis=1)  # [64, D]: p' of the V tile each channel belongs to
        dp.acc += (pv[sel] * head.v[b][sel].astype(np.int64)).sum(axis=0)

    def _finish_datapath(self, dp: _Datapath) -> np.ndarray:
        from quant import fixedpoint as fx

        # DIV: restoring division, one quotient bit per cycle, MSB first: Q = floor(2^44 / l)
        if not 128 <= dp.l < (1 << fx.L_BITS):
            raise SpecError(f"softmax denominator {dp.l} outside [128, 2^28): engine invariant broken")
        num = 1 << fx.RECIP_SHIFT
        q = self._restoring_div(num, dp.l, fx.RECIP_BITS)
        # OUT: o = clip((acc * Q + 2^35) >> 36, int16), one element per cycle
        sh = fx.RECIP_SHIFT - fx.OUT_FRAC_BITS
        o = [(int(a) * q + (1 << (sh - 1))) >> sh for a in dp.acc.tolist()]
        return np.clip(np.asarray(o, dtype=np.int64), -(1 << 15), (1 << 15) - 1)

    @staticmethod
    def _restoring_div(num: int, den: int, bits: int) -> int:
        """Restoring division producing `bits` quotient bits MSB first (= floor(num / den) when it fits)."""
        rem = num >> bits
        if rem >= den:
            raise SpecError(f"quotient of {num} / {den} does not fit the divider's {bits} bits")
        q = 0
        for bit in range(bits - 1, -1, -1):
            rem = (rem << 1) | ((num >> bit) & 1)
            q <<= 1
            if rem >= den:
                rem -= den
                q |= 1
        return q
