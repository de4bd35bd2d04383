"""Speed of the cycle-level simulator.

1. One Llama-2-7B decode token at 4K context on u280-accllm under `accllm` (fresh simulator, no caches), with the
   event-driven jumps and stepped tile by tile / layer by layer (goal: < 5 s).
2. The attention workload: one 4K-context head on the RTL engine model (dense KV4 and bitmap-sparse KV4), simulated
   engine cycles per wall second, beside Verilator running the same RTL (goal: >= 1000x). The Verilator figure is
   taken from the RTL issue's benchmarks/rtl_cycles.py (--json) when it exists, or from --verilator-cycles-per-s.

Usage: python benchmarks/cyclesim_speed.py [--verilator-cycles-per-s N] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

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
    return {"context": context, "cycles": r.cycles, "step_ms": r.cycles / hw.freq_hz * 1e3,
            "wall_s_event_driven": t_fast, "wall_s_stepped": t_slow}


def attention_head(context: int, lanes: int, sparse: bool) -> dict:
    from quant import fixedpoint as fx

    rng = np.random.default_rng(0)
    D = 128
    q = rng.integers(-128, 128, D)
    k = rng.integers(-8, 8, (context, D))
    v = rng.integers(-8, 8, (context, D))
    ks = rng.uniform(0.01, 0.1, (context // 64, D))
    vs = rng.uniform(0.01, 0.1, (context, D // 64))
    if sparse:
        keepk, keepv = rng.random((context, D)) < 0.5, rng.random((context, D)) < 0.5
        k, v = np.where(keepk, k, 0), np.where(keepv, v, 0)
        nb = context // 64
        to_tiles = lambda a: a.reshape(nb, 64, D).transpose(0, 2, 1).reshape(-1, 64)  # noqa: E731
        kt = fx.pack_bitmap_tiles(to_tiles(k), to_tiles(keepk))
        vt = fx.pack_bitmap_tiles(v.reshape(-1, 64), keepv.reshape(-1, 64))
        head = fx.prepare_head(q, 0.05, None, ks, None, vs, k_tiles=(kt[0].reshape(nb, D), kt[1]),
                               v_tiles=(vt[0].reshape(context, D // 64), vt[1]), context=context, k_group_size=64)
    else:
        head = fx.prepare_head(q, 0.05, k, ks, v, vs, k_group_size=64)
    eng = EngineModel(D, lanes)
    t_work, work = _best(lambda: head_work(head))
    t_sim, run = _best(lambda: EngineModel(D, lanes).run(work))  # fresh engine: no per-block cache
    return {"context": context, "lanes": lanes, "sparse": sparse, "cycles": run.cycles, "wall_s_sim": t_sim,
            "wall_s_with_beat_extraction": t_sim + t_work, "sim_cycles_per_s": run.cycles / t_sim,
            "sim_cycles_per_s_with_extraction": run.cycles / (t_sim + t_work),
            "_check": eng.run_stepped(work) == run.cycles}


def verilator_speed(arg: float | None) -> tuple[float | None, str]:
    if arg is not None:
        return arg, "--verilator-cycles-per-s"
    script = ROOT / "benchmarks" / "rtl_cycles.py"
    if not script.is_file():
        return None, "benchmarks/rtl_cycles.py not present"
    try:
        out = subprocess.run([sys.executable, str(script), "--json"], capture_output=True, text=True, timeout=900,
                             cwd=ROOT)
        data = json.loads(out.stdout)
    except (subprocess.SubprocessError, json.JSONDecodeError, OSError) as exc:
        return None, f"benchmarks/rtl_cycles.py --json failed ({exc.__class__.__name__})"

    def find(d):
        if isinstance(d, dict):
            for k, v in d.items():
                if "verilator" in k.lower() and "cycles_per_s" in k.lower() and isinstance(v, (int, float)):
                    return float(v)
            for v in d.values():
                got = find(v)
                if got is not None:
                    return got
        if isinstance(d, list):
            for v in d:
                got = find(v)
                if got is not None:
                    return got
        return None

    v = find(data)
    return (v, "benchmarks/rtl_cycles.py --json") if v is not None else (None, "no verilator cycles/s key found")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verilator-cycles-per-s", type=float, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    dec = decode_token()
    heads = [attention_head(4096, lanes, sparse) for lanes in (8, 64) for sparse in (False, True)]
    vspeed, vsrc = verilator_speed(args.verilator_cycles_per_s)
    result = {"decode_token": dec, "attention_heads": heads, "verilator_cycles_per_s": vspeed,
              "verilator_source": vsrc}
    if vspeed:
        for h in heads:
            h["speedup_vs_verilator"] = h["sim_cycles_per_s"] / vspeed
            h["speedup_vs_verilator_with_extraction"] = h["sim_cycles_per_s_with_extraction"] / vspeed
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"Llama-2-7B decode token at {dec['context']} context on u280-accllm (accllm): {dec['cycles']:,} cycles "
          f"= {dec['step_ms']:.3f} ms simulated")
    print(f"  wall: {dec['wall_s_event_driven'] * 1e3:.1f} ms event-driven (jumps), "
          f"{dec['wall_s_stepped'] * 1e3:.1f} ms tile by tile / layer by layer  (goal < 5 s)")
    print(f"attention engine, one 4K-context head (D=128); Verilator: "
          f"{f'{vspeed:,.0f} cycles/s' if vspeed else 'n/a'} ({vsrc})")
    for h in heads:
        sp = (f", {h['speedup_vs_verilator']:,.0f}x Verilator ({h['speedup_vs_verilator_with_extraction']:,.0f}x "
              "with beat extraction)") if vspeed else ""
        print(f"  lanes {h['lanes']:2d} {'bitmap 50%' if h['sparse'] else 'dense KV4 '}: {h['cycles']:,} cycles in "
              f"{h['wall_s_sim'] * 1e6:,.0f} us = {h['sim_cycles_per_s']:,.0f} cycles/s "
              f"({h['sim_cycles_per_s_with_extraction']:,.0f} with per-tile count extraction){sp}"
              f"; stepped check {'ok' if h['_check'] else 'MISMATCH'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
