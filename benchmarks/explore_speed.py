"""Speed of `hwsim explore` and NSGA-II against brute force; prints the goals of issue 42.

    .venv/bin/python benchmarks/explore_speed.py [--quick] [--save benchmarks/data/explore_speed.json]

1. analytical points per minute in this process (goal: >= 100,000 on a 2-core machine), on the shipped U280 space
   with a finer clock axis;
2. the same space on 2 local worker processes, and on a local Ray instance with 1 and with 2 workers (speed-up;
   start-up of the workers not counted);
3. cycle-level points (fidelity cycle) on Ray with 1 and 2 workers;
4. NSGA-II (optuna) against brute force on the shipped U280 space: share of the true front found, IGD, points
   evaluated.

The machine's load average is printed with the figures: this is a shared 2-core machine, and another process on it
slows every figure. --save writes the figures with their provenance as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from base.executor import LocalExecutor, RayExecutor  # noqa: E402
from explore import compare_fronts, load_space, run_space  # noqa: E402
from explore.space import RangeSpec, resolve_space  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "explore" / "u280-accllm.yaml"
GOAL_POINTS_PER_MIN = 100_000


def _space(**change):
    base = load_space(EXAMPLE)
    spec = base.spec
    for k, v in change.items():
        spec = replace(spec, **{k: v})
    return resolve_space(spec, base_dir=EXAMPLE.parent, source=f"{EXAMPLE} (modified)")


def _rate(space, executor) -> tuple[float, float]:
    res = run_space(space, executor, None, method="exhaustive")
    return res.n_evaluated / res.seconds * 60, res.seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller spaces (a smoke run)")
    ap.add_argument("--save", default=None, metavar="JSON", help="write the figures and their provenance here")
    args = ap.parse_args()
    out: dict = {"load_average_start": os.getloadavg()}
    step = 50e6 if args.quick else 5e6
    axes = dict(load_space(EXAMPLE).spec.hardware_axes)
    axes["freq_hz"] = RangeSpec(start=150e6, stop=300e6, step=step)
    big = _space(hardware_axes=axes)
    print(f"space: {EXAMPLE.name} with freq_hz every {step / 1e6:g} MHz: {big.n_points:,} analytical points")

    cpu0 = time.process_time()
    rate, secs = _rate(big, LocalExecutor())
    cpu = time.process_time() - cpu0
    out["analytical_in_process"] = {
        "points": big.n_points,
        "seconds": secs,
        "points_per_min": rate,
        "cpu_seconds": cpu,
        "points_per_cpu_min": big.n_points / cpu * 60,
    }
    print(
        f"analytical, this process:  {rate:12,.0f} points/min ({big.n_points:,} in {secs:.1f} s)  "
        f"goal >= {GOAL_POINTS_PER_MIN:,}: {'MET' if rate >= GOAL_POINTS_PER_MIN else 'NOT MET'}"
    )
    print(
        f"  (per minute of this process's CPU time: {big.n_points / cpu * 60:,.0f} points; the wall-clock figure "
        "counts the time other processes on this machine took the cores)"
    )

    with LocalExecutor(2) as ex:
        _rate(_space(hardware_axes={**axes, "freq_hz": (150e6,)}), ex)  # start the worker processes
        rate2, secs2 = _rate(big, ex)
    out["analytical_local_2_processes"] = {"points": big.n_points, "seconds": secs2, "points_per_min": rate2}
    print(
        f"analytical, 2 local processes: {rate2:8,.0f} points/min ({secs2:.1f} s)  goal >= "
        f"{GOAL_POINTS_PER_MIN:,}: {'MET' if rate2 >= GOAL_POINTS_PER_MIN else 'NOT MET'}"
    )

    ray_rates = {}
    for workers in (1, 2):
        ex = RayExecutor(workers=workers)
        try:
            _rate(_space(hardware_axes={**axes, "freq_hz": (150e6,)}), ex)  # warm the workers (imports)
            ray_rates[workers] = _rate(big, ex)
        finally:
            ex.close()
        print(
            f"analytical, Ray {workers} worker(s): {ray_rates[workers][0]:12,.0f} points/min "
            f"({ray_rates[workers][1]:.1f} s)"
        )
    speedup = ray_rates[1][1] / ray_rates[2][1]
    out["analytical_ray"] = {str(k): {"points_per_min": v[0], "seconds": v[1]} for k, v in ray_rates.items()}
    out["analytical_ray_speedup_2_vs_1"] = speedup
    print(f"analytical, Ray speed-up 2 workers vs 1: {speedup:.2f}x")

    n_freq = 2 if args.quick else 4
    cyc = _space(
        hardware_axes={
            "fpga.attention_lanes": (16, 32, 64),
            "fpga.attention_engines": (8, 16, 32),
            "freq_hz": RangeSpec(start=150e6, stop=300e6, num=n_freq),
        },
        schemes=("w2a8kv4", "accllm"),
        fidelity=("cycle",),
        workload=replace(big.spec.workload, prompt_len=(256,), gen_len=(16,)),
    )
    cyc_rates = {}
    for workers in (1, 2):
        ex = RayExecutor(workers=workers)
        try:
            cyc_rates[workers] = _rate(cyc, ex)
        finally:
            ex.close()
        print(
            f"cycle-level, Ray {workers} worker(s): {cyc_rates[workers][0]:10,.1f} points/min "
            f"({cyc.n_points} points in {cyc_rates[workers][1]:.1f} s)"
        )
    out["cycle_ray"] = {
        str(k): {"points": cyc.n_points, "points_per_min": v[0], "seconds": v[1]} for k, v in cyc_rates.items()
    }
    out["cycle_ray_speedup_2_vs_1"] = cyc_rates[1][1] / cyc_rates[2][1]
    print(f"cycle-level, Ray speed-up 2 workers vs 1: {out['cycle_ray_speedup_2_vs_1']:.2f}x")

    small = load_space(EXAMPLE)
    objectives = tuple(small.spec.objectives)
    brute = run_space(small, LocalExecutor(), None, method="exhaustive")
    rows = []
    for trials in (150,) if args.quick else (150, 300, 600, 1200):
        for seed in (0, 1, 2):
            sp = _space(search=replace(small.spec.search, method="nsga2", trials=trials, population=30, seed=seed))
            res = run_space(sp, LocalExecutor(), None)
            cmp = compare_fronts(res.pareto, brute.pareto, objectives)
            rows.append(
                {
                    "trials": trials,
                    "seed": seed,
                    "evaluated": res.n_points,
                    "front": len(res.pareto),
                    **cmp,
                    "seconds": res.seconds,
                }
            )
    out["nsga2_vs_brute_force"] = {
        "space_points": small.n_points,
        "true_front": len(brute.pareto),
        "brute_force_seconds": brute.seconds,
        "objectives": list(objectives),
        "runs": rows,
    }
    print(
        f"NSGA-II vs brute force on {EXAMPLE.name} ({small.n_points:,} points, objectives "
        f"{', '.join(objectives)}; true front {len(brute.pareto)} points, brute force {brute.seconds:.1f} s):"
    )
    print(f"{'trials':>7} {'seed':>4} {'evaluated':>9} {'front':>6} {'recall':>7} {'precision':>9} {'IGD':>8} {'s':>6}")
    for r in rows:
        print(
            f"{r['trials']:>7} {r['seed']:>4} {r['evaluated']:>9} {r['front']:>6} {r['recall']:>7.1%} "
            f"{r['precision']:>9.1%} "
            f"{r['igd']:>8.4f} {r['seconds']:>6.1f}"
        )
    out["load_average_end"] = os.getloadavg()
    print(
        f"load average (1, 5, 15 min) at start {tuple(round(x, 1) for x in out['load_average_start'])}, "
        f"at end {tuple(round(x, 1) for x in out['load_average_end'])} on {os.cpu_count()} cores"
    )
    if args.save:
        import optuna
        import ray

        out["provenance"] = {
            "command": "python benchmarks/explore_speed.py" + (" --quick" if args.quick else ""),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared",
            "python": platform.python_version(),
            "ray": ray.__version__,
            "optuna": optuna.__version__,
        }
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(out, indent=1) + "\n")
        print(f"saved: {args.save}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
