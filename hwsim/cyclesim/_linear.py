"""Linear operators on the FPGA's matrix engine: how one `hwsim.ops.Op` streams through it as weight tiles.

* Engine rate: the decode (matrix-vector) or prefill (matrix-matrix) engine's MACs per cycle for the operator's
  precision (`HardwareSpec.matrix_rate`, THE fallback rule), times ``compute.matrix_efficiency`` -- the same
  achievable fraction the analytical model applies. Weight sparsity the engines skip costs ``density /
  fpga.sparse_efficiency`` of the dense MACs (`HardwareSpec.sparse_speedup`).
* Weights stream in tiles of whole output rows, each at most ``fpga.weight_buffer_bytes`` (double buffered by the
  caller's `TileStream`); prefill runs GEMM over token tiles that fit ``fpga.activation_buffer_bytes`` (weights
  re-streamed once per token tile).
* A tile's engine time is at least the controller's issue time of its instructions
  (``fpga.instructions_per_tile x fpga.instruction_cycles``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwsim.hardware import HardwareSpec
from hwsim.ops import Op

__all__ = ["LinearPlan", "plan_linear", "macs_per_cycle"]


def macs_per_cycle(hw: HardwareSpec, weight_bits: int, act_bits: int, phase: str = "decode") -> int:
    """MACs per cycle of the linear engine (all dies) for (weight_bits, act_bits): derived from the engine's shape
    or DSPs and packing, the cheapest listed precision covering both widths."""
    rate, _ = hw.matrix_rate(weight_bits, act_bits, phase)
    return max(1, int(round(rate / (2.0 * hw.freq_hz))))


@dataclass(frozen=True)
class LinearPlan:
    """How one linear operator streams through the engine: runs of identical tiles (count, bytes, cycles)."""

    name: str
    cls: str
    runs: tuple[tuple[int, int, int], ...]
    macs: int
    weight_bytes: int

    @property
    def first_tile_bytes(self) -> int:
        return self.runs[0][1]

    @property
    def n_tiles(self) -> int:
        return sum(r[0] for r in self.runs)

    @property
    def compute_cycles(self) -> int:
        return sum(c * cyc for c, _, cyc in self.runs)


def plan_linear(op: Op, hw: HardwareSpec) -> LinearPlan:
    """The tile runs of linear op `op` (weights `op.weight_bytes`, `op.n` output rows, `op.k` inputs, `op.tokens`
    activation rows) on `hw`'s engine for the op's phase."""
    f = hw.fpga
    tokens, rows, k = op.tokens, op.n, op.k
    total = op.weight_bytes
    row_bytes = total / rows
    r = max(1, min(rows, int(f.weight_buffer_bytes // row_bytes)))
    mpc = macs_per_cycle(hw, op.weight_bits, op.act_bits, op.phase) * hw.compute.matrix_efficiency
    work = hw.sparse_speedup(op.sparsity, op.density)  # fraction of the dense MACs' engine time
    issue = f.instructions_per_tile * f.instruction_cycles
    act_bytes = 1 if op.act_bits <= 8 else 2
    per_token = (op.k + op.n) * act_bytes
    tt = max(1, min(tokens, f.activation_buffer_bytes // per_token))
    passes, last_tt = divmod(tokens, tt)
    runs: list[tuple[int, int, int]] = []

    def tile(nrows: int, ntok: int) -> tuple[int, int]:
        cycles = math.ceil(nrows * k * ntok * work / mpc - 1e-9)
        return math.ceil(nrows * row_bytes), max(1, cycles, math.ceil(issue))

    full, rem = divmod(rows, r)
    for ntok, reps in ((tt, passes), (last_tt, 1 if last_tt else 0)):
        for _ in range(reps):
            if full:
                b, c = tile(r, ntok)
                runs.append((full, b, c))
            if rem:
                b, c = tile(rem, ntok)
                runs.append((1, b, c))
    merged: list[tuple[int, int, int]] = []
    for run in runs:  # identical consecutive runs (full passes) merge into one
        if merged and merged[-1][1:] == run[1:]:
            merged[-1] = (merged[-1][0] + run[0], run[1], run[2])
        else:
            merged.append(run)
    return LinearPlan(
        op.name, op.cls, tuple(merged), int(round(op.flops / 2)), int(round(total)) * (passes + (1 if last_tt else 0))
    )
