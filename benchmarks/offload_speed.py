"""Simulation speed: a 13B model, batch 64, 1024 prompt and 1024 generated tokens, every policy (goal < 30 s each).

Prints the wall time of the simpy simulation and of the analytical model, the number of simulation events, and the
FlexGen LP search time. Usage: .venv/bin/python benchmarks/offload_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from offload import Workload, analyze, default_policy, get_platform, search_flexgen, simulate  # noqa: E402

GOAL_S = 30.0


def main() -> int:
    wl = Workload.make("opt-13b", batch=64, prompt_len=1024, gen_len=1024)
    print(f"{wl.model.name}, batch {wl.batch}, prompt {wl.prompt_len}, gen {wl.gen_len} (goal: simpy < {GOAL_S:.0f} s)")
    t = time.perf_counter()
    found = search_flexgen(get_platform("a6000-ssd"), wl)
    print(f"  FlexGen LP search: {time.perf_counter() - t:.2f} s ({found.candidates} LPs) -> {found.policy.label()}")
    for plat_name, kind in (("a6000-ssd", "flexgen"), ("a6000-ssd", "leoam"), ("a6000-csd", "instinfer")):
        plat = get_platform(plat_name)
        pol = found.policy if kind == "flexgen" else default_policy(kind, plat, wl)
        t = time.perf_counter()
        res = simulate(plat, wl, pol)
        t_sim = time.perf_counter() - t
        t = time.perf_counter()
        ana = analyze(plat, wl, pol)
        t_ana = time.perf_counter() - t
        verdict = "ok" if t_sim < GOAL_S else "SLOW"
        print(
            f"  {kind:9s} on {plat_name}: simpy {t_sim:6.2f} s ({res.events} events, {res.throughput_tok_s:.1f} "
            f"tok/s) [{verdict}], analytical {t_ana:5.2f} s ({ana.throughput_tok_s:.1f} tok/s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
