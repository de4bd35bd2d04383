"""Closed-form stall-free cycle count of the attention engine (rtl/engine.py) for one head.

The hwsim cycle-level simulator must reproduce these numbers exactly; tests/cocotb check them against
Verilator for every head they run, and tests/data/rtl_cycles.json records measured examples.

Counting convention
-------------------
Cycles are counted from the clock cycle in which the head's first ``blk`` beat is accepted (valid & ready)
up to and including the cycle in which its last ``out`` beat is accepted, with every input stream always
valid and ``out`` always ready ("stall-free"). With stalls the engine only waits; it never reorders.

Pipeline (single clock domain ``sync``; L = lanes, D = head_dim, G = D / 64; depths from engine/timing.py)
------------------------------------------------------------------------------------------------------------
The engine is a sequential controller that runs one phase at a time; per block b (64 token positions):

==========  =====================================================================  ==========================
phase        work                                                                    cycles
==========  =====================================================================  ==========================
BLK          accept the block header; clear the 64 score accumulators; popcount       BLK_CYCLES = 3
             of sel (2 stages)
KRUN         D K tiles, channel d = 0..D-1; one tile beat issued per cycle: the        sum_d max(1, ceil(nk[b,d]/L))
             bitmap decoder assigns up to L streamed values to token positions, L
             int4 x int8 lanes multiply them by qk[d], the score accumulators add
KDRAIN       the last K beats pass the beat pipeline                                 BEAT_LATENCY - 1 = 11
SCAN         block max of the raw scores of the selected tokens, E per cycle         64 / E
SWAIT + UPD  the last scan reaches the block max; running max M, rescale shift       SCAN_LATENCY = 5
UWAIT        the update pipeline (output accumulators and l >>= shift meanwhile)      UPDATE_LATENCY = 6
EXP          scaled score + exp2 (shift + 32-entry table) for E tokens per cycle,     64 / E
             p stored, l += sum p
EWAIT        the last p values and l land (V beats read p in S2; the normaliser, l)   EWAIT_CYCLES = 9
VRUN         for each selected token, its G V tiles; one tile beat per cycle, the      sum_{t in sel_b} sum_g
             lanes multiply by p'[t,g] = (p_t sv[t,g] + 128) >> 8 and the D output        max(1, ceil(nv[b,t,g]/L))
             accumulators add them
==========  =====================================================================  ==========================

so a block costs BLOCK_FIXED = BLK_CYCLES + BEAT_LATENCY - 1 + SCAN_LATENCY + UPDATE_LATENCY + EWAIT_CYCLES = 34 cycles
plus 2 * 64 / E plus its tile beats, where E = min(L, SOFTMAX_LANES_MAX = 16) is the softmax unit's lane
count (engine/timing.py). A tile with no streamed value still takes one cycle (its header is consumed).
Tile headers pass a 2-stage popcount into a 4-entry FIFO with credit-based ``ready``, so back-to-back one-beat tiles
never stall. After the last block's last V beat: one cycle to start the normaliser, which divides 2^44 by l (one
quotient bit per cycle, RECIP_BITS = 38 cycles), passes NORM_PIPE = 4 pipeline stages, then emits the D outputs,
one per cycle: a tail of RECIP_BITS + NORM_PIPE + 1 + D cycles. The next head's first ``blk`` beat can be accepted in
the cycle after the last ``out`` beat.

Here ``nk[b, d]`` = values streamed for K tile (b, d): popcount of its bitmap in a sparse block (kept values of
masked tokens included: they are fetched and gated), popcount of ``sel_b`` in a dense block; ``nv[b, t, g]`` =
popcount of the V tile's bitmap in a sparse block, 64 in a dense block.

    cycles = sum_b [ BLOCK_FIXED + 2 * 64 / E + sum_d max(1, ceil(nk[b,d] / L))
                     + sum_{t in sel_b} sum_g max(1, ceil(nv[b,t,g] / L)) ]  + RECIP_BITS + NORM_PIPE + 1 + D

MAC-lane utilisation = (sum of all nk and nv) / (L * cycles); dense steady state (all blocks full, no Λ cut)
per block: (2 * 64 * D / L) busy of (BLOCK_FIXED + 128 / E + 2 * 64 * D / L) cycles, e.g. 1024 / 1074 = 95.3 % for
D = 64, L = 8.
"""

from __future__ import annotations

import numpy as np

from engine.datapath import EngineHead
from engine.params import TILE, check_head_dim, check_lanes
from engine.timing import FIXED_PHASES, TAIL_PHASES, softmax_lanes

BLOCK_FIXED = sum(FIXED_PHASES.values())  # 34
TAIL_FIXED = sum(TAIL_PHASES.values())  # 43, + head_dim output beats

__all__ = [
    "BLOCK_FIXED",
    "TAIL_FIXED",
    "block_overhead",
    "tile_cycles",
    "tile_value_counts",
    "head_cycles",
    "cycles_from_counts",
    "head_macs",
    "lane_utilisation",
    "steady_state_utilisation",
]


def block_overhead(lanes: int) -> int:
    """Cycles of a block besides its tile beats: BLOCK_FIXED plus the SCAN and EXP chunks (64 / E each, E =
    softmax_lanes(lanes))."""
    return BLOCK_FIXED + 2 * (TILE // softmax_lanes(lanes))


def tile_value_counts(head: EngineHead) -> tuple[np.ndarray, np.ndarray]:
    """Values streamed per tile: k [B, D] (K tile of channel d) and v [B, 64, D/64] (0 for unselected tokens).

    A sparse block streams its bitmaps' kept values (the kept values of masked tokens included: they are fetched and
    gated), a dense block the selected tokens of each K tile and all 64 channels of each V tile.
    """
    B, D = head.n_blocks, head.head_dim
    sel = head.sel_bits()  # [B, 64]
    if head.sparse:
        k = np.bitwise_count(np.asarray(head.k_bitmap, dtype=np.uint64)).astype(np.int64)  # [B, D]
        v = np.bitwise_count(np.asarray(head.v_bitmap, dtype=np.uint64)).astype(np.int64)  # [B, 64, G]
    else:
        k = np.repeat(sel.sum(axis=1, dtype=np.int64)[:, None], D, axis=1)
        v = np.full((B, TILE, D // TILE), TILE, dtype=np.int64)
    return k, np.where(sel[:, :, None], v, 0)


def tile_cycles(n: np.ndarray, lanes: int) -> np.ndarray:
    """Cycles each tile with ``n`` streamed values occupies the lanes (>= 1: the header is consumed)."""
    return np.maximum(1, -(-np.asarray(n, dtype=np.int64) // lanes))


def cycles_from_counts(head_dim: int, lanes: int, nk: np.ndarray, nv: list[np.ndarray]) -> int:
    """Stall-free cycles of a head from per-tile value counts.

    nk: int [B, D] values per K tile; nv: per block, an int array [n_sel_tokens, D/64] of values per V tile
    of the selected tokens (the number of rows is the block's popcount(sel)).
    """
    check_head_dim(head_dim)
    check_lanes(lanes)
    nk = np.asarray(nk)
    B = nk.shape[0]
    total = B * block_overhead(lanes) + int(tile_cycles(nk, lanes).sum())
    total += sum(int(tile_cycles(x, lanes).sum()) for x in nv)
    return total + TAIL_FIXED + head_dim


def head_cycles(head: EngineHead, lanes: int) -> int:
    """Stall-free cycles of ``head`` on an engine with ``lanes`` lanes (head_dim is the head's)."""
    nk, nv = tile_value_counts(head)
    sel = head.sel_bits()
    return cycles_from_counts(head.head_dim, lanes, nk, [nv[b][sel[b]] for b in range(head.n_blocks)])


def head_macs(head: EngineHead) -> int:
    """Useful lane operations of a head: all streamed K and V values."""
    nk, nv = tile_value_counts(head)
    return int(nk.sum() + nv.sum())


def lane_utilisation(head: EngineHead, lanes: int) -> float:
    """Useful lane operations per lane-cycle of ``head`` (0..1)."""
    return head_macs(head) / (lanes * head_cycles(head, lanes))


def steady_state_utilisation(head_dim: int, lanes: int) -> float:
    """Utilisation of a full dense block (the steady state of a long dense head)."""
    busy = 2 * TILE * head_dim // lanes
    return busy / (block_overhead(lanes) + busy)
