"""Cycle-level simulator of an AccLLM-style FPGA accelerator (``--fidelity cycle``).

`estimate_cycle(model, hw, scheme, workload, profile=None)` returns the same `Estimate` as the analytical model.
The machine: HBM channels with bursts, latency and efficiency (_memory.py), a linear engine streaming
double-buffered weight tiles (_linear.py, _pipeline.py) of THE operator list (hwsim/ops.py), the KV layout
(_kvlayout.py), the RTL attention engine modelled phase by phase (attention_engine.py, exact against rtl/ under
Verilator), a vector unit, and the per-layer schedule with its control overheads (_accel.py).
It is event-driven: it jumps over periodic regions (identical tiles, blocks, layers) in O(1), exactly.

Relation to the analytical (roofline) model, checked by tests/hwsim/test_cyclesim.py:
* never faster than `roofline_bound_s` (the step's bytes at peak x efficiency, or its MACs at the engine peak);
* within 12% of `estimate_analytical`'s decode step for 7B-8B models on the U280 (contexts 128-4K, all presets).
  Small models fall outside: SmolLM2-135M has 9 heads for 32 lockstep attention engines.
Where the RTL engine is concerned (`EngineModel`), the cycle counts are those of rtl/engine.py under Verilator,
with zero difference (tests/hwsim/test_cyclesim_engine.py against tests/data/rtl_cycles.json).
"""

from hwsim.cyclesim._accel import Accelerator, StepResult
from hwsim.cyclesim._estimate import estimate_cycle, roofline_bound_s
from hwsim.cyclesim._linear import LinearPlan, macs_per_cycle, plan_linear
from hwsim.cyclesim._memory import MemoryBus, MemoryModel
from hwsim.cyclesim.attention_engine import BlockWork, EngineModel, EngineRun, HeadWork, head_work

__all__ = [
    "estimate_cycle",
    "roofline_bound_s",
    "Accelerator",
    "StepResult",
    "macs_per_cycle",
    "LinearPlan",
    "plan_linear",
    "MemoryModel",
    "MemoryBus",
    "EngineModel",
    "EngineRun",
    "HeadWork",
    "BlockWork",
    "head_work",
]
