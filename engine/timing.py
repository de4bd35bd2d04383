"""Pipeline depths of the attention engine: the one source of truth for the RTL (rtl/engine.py and its units), the
closed-form cycle count (engine/cycles.py) and the cycle-level simulator (hwsim/cyclesim/attention_engine.py).

The engine targets 100 MHz on an LFE5U-85F-6 (fpga/TIMING.md), so every unit is pipelined so that no
register-to-register path has more than about 3 LUT levels plus one carry chain or one DSP multiply. The numbers below
are contracts: each unit's tests check its own, and engine/cycles.py is checked against Verilator.

Convention: "command at cycle t" = the command input is high during cycle t (sampled at the rising edge that ends
cycle t); "visible from cycle t + N" = a reader that samples during cycle t + N sees the result.
"""

from __future__ import annotations

from types import MappingProxyType

from engine.widths import RECIP_BITS

__all__ = [
    "SCAN_LATENCY",
    "UPDATE_LATENCY",
    "EXP_LATENCY",
    "L_LATENCY",
    "NORM_PIPE",
    "BLK_CYCLES",
    "BEAT_LATENCY",
    "EWAIT_CYCLES",
    "FIXED_PHASES",
    "TAIL_PHASES",
    "SOFTMAX_LANES_MAX",
    "softmax_lanes",
]

# ---- SoftmaxUnit (rtl/softmax.py) ------------------------------------------------------------------------------
#: the softmax unit has min(lanes, SOFTMAX_LANES_MAX) scan/exp lanes: SCAN and EXP take 64 / that many cycles each.
#: Each exp lane is a DSP multiply, two 36-bit shifters, a 39-bit subtract and a table; more lanes spread along the
#: DSP rows across the whole die, and their wiring sets the critical paths. Capping them costs
#: 2 * (64 / 16 - 64 / L) cycles per block (4 at L = 32, 6 at L = 64) and nothing at L <= 16.
SOFTMAX_LANES_MAX = 16


def softmax_lanes(lanes: int) -> int:
    """Scan/exp lanes of the softmax unit of an engine with ``lanes`` MAC lanes."""
    return min(lanes, SOFTMAX_LANES_MAX)


#: a ``scan`` at cycle t is folded into the block max seen by an ``update`` issued at cycle t + SCAN_LATENCY or later
SCAN_LATENCY = 5
#: an ``update`` at cycle t drives ``rescale`` with ``rescale_stb`` high during cycle t + UPDATE_LATENCY (one cycle;
#: l >>= rescale takes effect at that edge); an ``exp`` issued at cycle t + UPDATE_LATENCY + 1 or later sees the new M
UPDATE_LATENCY = 6
#: an ``exp`` at cycle t writes its L p values: p_all[chunk] is visible from cycle t + EXP_LATENCY on
EXP_LATENCY = 9
#: ... and l includes their sum from cycle t + L_LATENCY on
L_LATENCY = 11

# ---- Normalizer (rtl/normalizer.py) -----------------------------------------------------------------------------
#: ``start`` at cycle t: RECIP_BITS division cycles (t+1 .. t+RECIP_BITS), then output beat c (stall-free) is valid
#: during cycle t + 1 + RECIP_BITS + NORM_PIPE + c
NORM_PIPE = 4

# ---- engine controller (rtl/engine.py) ---------------------------------------------------------------------------
#: cycles of the EWAIT phase. The engine's last EXP cycle t issues the softmax unit's last ``exp`` at t + 1 (its
#: commands are registered); the block's first V beat is issued at t + EWAIT_CYCLES + 1 and reads p_all in its S2
#: stage, cycle t + EWAIT_CYCLES + 2: needs >= EXP_LATENCY - 1. The V phase can be that one beat (one selected token,
#: one tile beat): the normaliser is then started at t + EWAIT_CYCLES + 2 and reads l from t + EWAIT_CYCLES + 3 on:
#: needs >= L_LATENCY - 2, the bound that sets it (9).
EWAIT_CYCLES = max(EXP_LATENCY - 1, L_LATENCY - 2)
#: cycles of the BLK phase (header accept, then the block's popcount(sel) in a 2-stage adder tree)
BLK_CYCLES = 3
#: a K/V beat issued at cycle t has updated its accumulator entries, visible from cycle t + BEAT_LATENCY on
#: (S1 register, 4 decoder stages, 4 scatter-network stages on the int4 values, the multiply at the 64 positions, the
#: accumulators' gating register and their add)
BEAT_LATENCY = 12

#: the controller's fixed-length phases per block and their cycles (the others scale with the tiles or the softmax
#: chunks); engine/cycles.py sums them into BLOCK_FIXED, the cycle-level simulator steps through them
FIXED_PHASES = MappingProxyType(
    {"BLK": BLK_CYCLES, "KDRAIN": BEAT_LATENCY - 1, "UPD": SCAN_LATENCY, "UWAIT": UPDATE_LATENCY, "EWAIT": EWAIT_CYCLES}
)
#: the head's fixed tail after its last block's last V beat: one cycle to start the normaliser, its RECIP_BITS division
#: cycles (one quotient bit each) and its NORM_PIPE output stages; the head_dim output beats follow
TAIL_PHASES = MappingProxyType({"NSTART": 1, "DIV": RECIP_BITS, "NPIPE": NORM_PIPE})
