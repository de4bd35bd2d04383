"""The attention engine's contract, in pure Python (numpy, no Amaranth, no torch): what rtl/ builds, what the
cycle-level simulator (hwsim/cyclesim) models and what fpga/ builds bitstreams of.

* engine/params.py: the tile, the lane and head_dim ranges and their checks;
* engine/widths.py: bit widths and fixed-point formats of the datapath;
* engine/timing.py: pipeline depths of the units and the controller's fixed phases;
* engine/datapath.py: the bit-exact golden model (:func:`run_engine` on an :class:`EngineHead`);
* engine/host.py: the host side (Λ selection, scale folding: :func:`prepare_head`) and the float reference;
* engine/cycles.py: the closed-form stall-free cycle count and the per-tile value counts;
* engine/workloads.py: seeded random heads for tests and benchmarks.
"""

from engine.cycles import (
    BLOCK_FIXED,
    TAIL_FIXED,
    block_overhead,
    cycles_from_counts,
    head_cycles,
    head_macs,
    lane_utilisation,
    steady_state_utilisation,
    tile_cycles,
    tile_value_counts,
)
from engine.datapath import EngineHead, EngineTrace, SoftmaxState, run_engine
from engine.host import FixedPointResult, fixed_point_attention, lambda_mask, prepare_head, reference_attention
from engine.params import HEAD_DIMS, LANES, MAX_CONTEXT, TILE, check_head_dim, check_lanes
from engine.timing import FIXED_PHASES, TAIL_PHASES, softmax_lanes
from engine.widths import RECIP_BITS
from engine.workloads import HeadSpec, random_head

__all__ = [
    "TILE",
    "LANES",
    "HEAD_DIMS",
    "MAX_CONTEXT",
    "check_lanes",
    "check_head_dim",
    "RECIP_BITS",
    "FIXED_PHASES",
    "TAIL_PHASES",
    "softmax_lanes",
    "EngineHead",
    "EngineTrace",
    "SoftmaxState",
    "run_engine",
    "prepare_head",
    "lambda_mask",
    "fixed_point_attention",
    "FixedPointResult",
    "reference_attention",
    "BLOCK_FIXED",
    "TAIL_FIXED",
    "block_overhead",
    "tile_cycles",
    "tile_value_counts",
    "cycles_from_counts",
    "head_cycles",
    "head_macs",
    "lane_utilisation",
    "steady_state_utilisation",
    "HeadSpec",
    "random_head",
]
