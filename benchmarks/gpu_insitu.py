"""Where a composed GPU step time and a measured one part: the clock under load, and GEMMs between other kernels.

`hwsim estimate` on a profiled GPU adds up operator times measured in isolation (hwsim.gpuprofile.measure).
When that sum misses an end-to-end measurement, this benchmark measures on the device the mechanisms that could be
the cause, for chosen validation cases:

* **clock**: the SM clock, board power and clock-event reasons (NVML, every millisecond) while the whole step replays
  as a CUDA graph (the validation's protocol), and while one 8192^3 GEMM runs back to back for seconds (the power
  limit's effect on a sustained compute-bound kernel);
* **isolated, here**: the case's operator calls re-timed by the profiler's protocol in the same process right after,
  so that the step against the sum of its operators is not confounded by one GPU against another;
* **hot** (``--hot``): the same operators timed again right after 0.3 s of back-to-back GEMMs, i.e. at the
  power-limited clock a long compute-bound pass settles to, which brackets the pass between its idle-boost (burst)
  and its power-limited operator times;
* **boundaries**: whether a GEMM costs the same between other kernels as back to back with itself (the profiler's
  protocol) -- programmatic dependent launch lets back-to-back GEMMs start under each other's tails.

Writes one JSON document with provenance; ``--report FILE`` (any machine) prints per case the graph time, the
sum of its operators measured here and in the shipped profile, and the clock; then the boundary table.

Device: ``python3 benchmarks/gpu_insitu.py --out $OUT/insitu.json --shapes .gpujob/shapes.json``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# (phase, model, batch, context-or-prompt): the cases the shipped profile misses most, and ones it gets right
CASES = (
    ("prefill", "llama-2-7b", 1, 512),
    ("prefill", "llama-2-7b", 8, 512),
    ("prefill", "llama-2-7b", 32, 512),
    ("prefill", "llama-2-7b", 1, 8192),
    ("prefill", "opt-6.7b", 1, 8192),
    ("prefill", "opt-6.7b", 32, 512),
    ("decode", "llama-2-7b", 1, 2048),
    ("decode", "llama-2-7b", 32, 2048),
    ("decode", "smollm2-135m", 1, 512),
    ("prefill", "smollm2-135m", 1, 512),
)


def _sustained_gemm(sampler, seconds: float) -> dict[str, Any]:
    """An 8192^3 fp16 GEMM back to back for `seconds`: the clock over time (power/thermal limits)."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    a @ b
    torch.cuda.synchronize()
    windows = []
    with sampler:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            for _ in range(20):
                a @ b
            e1.record()
            e1.synchronize()
            windows.append((time.perf_counter() - t0, 20 * 2 * 8192**3 / (e0.elapsed_time(e1) * 1e-3)))
    trace = sampler.samples
    out = {"seconds": seconds, "flops_per_s": [[round(t, 3), f] for t, f in windows]}
    for lo, hi in ((0.0, 0.2), (0.2, 1.0), (1.0, seconds)):
        sel = [s for s in trace if lo <= s[0] < hi]
        if sel:
            out[f"sm_mhz_{lo:g}_{hi:g}s"] = statistics.mean(s[1] for s in sel)
            out[f"power_w_{lo:g}_{hi:g}s"] = statistics.mean(s[2] for s in sel)
    return out


UNLIMITED = {"kv_bytes_max": 1 << 40, "prefill_tokens_max": 1 << 40}  # one case: its own point, whatever its size


def _isolated(ops, phase: str, model_name: str, B: int, n: int) -> dict[str, float]:
    """The case's operator calls timed in isolation by the profiler's protocol, here and now: op -> seconds."""
    from hwsim.gpuprofile.compose import decode_calls, prefill_calls
    from hwsim.gpuprofile.grid import OPERATORS
    from hwsim.gpuprofile.measure import _measure_table
    from models.spec import get_model

    m = get_model(model_name)
    calls = (decode_calls if phase == "decode" else prefill_calls)(m, B, n)
    out: dict[str, float] = {}
    seen: dict[tuple, float | None] = {}
    for c in calls:
        sig = (c.op, c.key, c.point)
        if sig not in seen:  # the profiler's own table measurement over one-point axes
            a, b = c.point[0], c.point[-1]
            ax = {"tokens": [a], "batch": [a], "prefill_batch": [a], "context": [b], "seq": [b]}
            t, _, _ = _measure_table(ops, c.op, OPERATORS[c.op][1], c.key_dict, ax, UNLIMITED)
            seen[sig] = t[0][0] if isinstance(t[0], list) else t[0]
        out[c.op] = out.get(c.op, 0.0) + (seen[sig] or 0.0) * c.count
    return out


BOUNDARY_SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096), (576, 1536))
BOUNDARY_TOKENS = (1, 8, 64, 512, 4096)


def boundaries(timer) -> list[dict[str, Any]]:
    """Does a GEMM cost the same between other kernels as back to back with itself (the profiler's protocol)?

    Per (in, out, tokens): t_gg (GEMM after GEMM, independent, rotating weights: the profile's number), t_aa (an
    elementwise add over the GEMM's output, after itself), t_ga (each GEMM followed by an add of its output, as in a
    forward pass) and t_chain (GEMM whose input is the previous GEMM's output, square shapes only). The boundary
    cost is t_ga - t_gg - t_aa: what a kernel pays for its neighbours being different kernels."""
    import torch

    from hwsim.gpuprofile import kernels as K
    from hwsim.gpuprofile.measure import _copies, _rand

    dev, f16 = timer.device, torch.float16
    rows = []
    for i, o in BOUNDARY_SHAPES:
        n = _copies(i * o * 2, 48)
        ws = [_rand((o, i), dev, f16) for _ in range(n)]
        for T in BOUNDARY_TOKENS:
            x = _rand((T, i), dev, f16)
            y0 = K.linear(x, ws[0], None)
            t_gg = timer.time(lambda c, x=x, ws=ws: K.linear(x, ws[c], None), n)
            t_aa = timer.time(lambda c, y0=y0: K.add(y0, y0), 1)

            def ga(c, x=x, ws=ws):
                y = K.linear(x, ws[c], None)
                return K.add(y, y)

            t_ga = timer.time(ga, n)
            row = {"in": i, "out": o, "tokens": T, "t_gg": t_gg, "t_aa": t_aa, "t_ga": t_ga}
            if i == o:
                state = {"x": x}

                def chain(c, state=state, ws=ws):
                    state["x"] = K.linear(state["x"], ws[c], None)
                    return state["x"]

                row["t_chain"] = timer.time(chain, n)
            rows.append(row)
            print(
                f"boundary {i:>5}x{o:<5} T={T:<5} gg {t_gg * 1e6:8.2f} us  aa {t_aa * 1e6:7.2f}  ga {t_ga * 1e6:8.2f}"
                f"  -> boundary {(t_ga - t_gg - t_aa) * 1e6:+6.2f} us"
                + (f"  chain {row['t_chain'] * 1e6:8.2f}" if "t_chain" in row else ""),
                flush=True,
            )
    return rows


HOT_CASES = (
    ("prefill", "llama-2-7b", 1, 512),
    ("prefill", "llama-2-7b", 8, 512),
    ("prefill", "llama-2-7b", 1, 8192),
    ("decode", "llama-2-7b", 8, 512),
)
HEAT_S = 0.3


def _hot_timer(dev):
    """A Timer whose every measurement starts right after HEAT_S of back-to-back 8192^3 GEMMs, so that the GPU is at
    the power-limited clock a long compute-bound pass settles to, not at the idle boost clock."""
    import torch

    from hwsim.gpuprofile.measure import Timer

    a = torch.randn(8192, 8192, device=dev, dtype=torch.float16)

    class HotTimer(Timer):
        def time(self, fn, copies=1, inner=None):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < HEAT_S:
                for _ in range(4):
                    a @ a
                torch.cuda.synchronize(dev)
            return super().time(fn, copies, inner)

    return HotTimer(dev)


def measure(shapes_path: str, out: Path, cases=CASES, hot_cases=(), boundaries_too: bool = True) -> dict[str, Any]:
    import torch

    from hwsim.gpuprofile.clock import ClockSampler
    from hwsim.gpuprofile.measure import Timer, _Ops, provenance
    from hwsim.gpuprofile.validate import RefModel, _time_graph, case_step

    dev = torch.device("cuda")
    shapes = json.loads(Path(shapes_path).read_text())
    sampler = ClockSampler()  # on the device: NVML must be there
    doc: dict[str, Any] = {
        "format": "hwsim-gpu-insitu",
        "version": 1,
        "provenance": provenance(dev, torch.float16, [sys.executable, *sys.argv]),
        "cases": [],
    }
    timer = Timer(dev, reps=3)
    if boundaries_too:
        doc["boundaries"] = boundaries(Timer(dev))
    out.write_text(json.dumps(doc, indent=1))
    doc["sustained_gemm"] = _sustained_gemm(sampler, 4.0)
    models: dict[str, Any] = {}
    for phase, name, B, n in cases:
        torch.manual_seed(0)
        if name not in models:
            models.clear()
            torch.cuda.empty_cache()
            models[name] = RefModel(shapes[name], dev)
        step = case_step(models[name], phase, B, n, dev)
        with sampler:
            t_graph = _time_graph(timer, step)
        clock = sampler.summary()
        step = None  # frees its KV cache
        torch.cuda.empty_cache()
        iso = _isolated(_Ops(Timer(dev), torch.float16), phase, name, B, n)
        hot = (
            _isolated(_Ops(_hot_timer(dev), torch.float16), phase, name, B, n)
            if (phase, name, B, n) in hot_cases
            else None
        )
        row = {
            "phase": phase,
            "model": name,
            "batch": B,
            "n": n,
            "graph_s": t_graph,
            "clock_during_graph": clock,
            "isolated_here": iso,
            **({"isolated_hot": hot} if hot else {}),
        }
        doc["cases"].append(row)
        print(
            f"{phase:<8}{name:<14}B={B:<3}n={n:<5} graph {t_graph * 1e3:8.3f} ms"
            f"  isolated {sum(iso.values()) * 1e3:8.3f} ms"
            f"  SM {clock.get('sm_mhz_mean', 0):.0f} MHz ({clock.get('sm_mhz_min', 0)}..{clock.get('sm_mhz_max', 0)})"
            f"  {clock.get('power_w_mean', 0):.0f} W",
            flush=True,
        )
        out.write_text(json.dumps(doc, indent=1))
    out.write_text(json.dumps(doc, indent=1))
    return doc


def report(path: str, profile_path: str | None) -> None:
    """Per case: the graph, the sum of its operators (measured here; shipped profile) and the clock."""
    from hwsim.gpuprofile.compose import decode_calls, prefill_calls
    from hwsim.gpuprofile.profile import load_profile
    from hwsim.hardware import get_hardware
    from models.spec import get_model

    doc = json.loads(Path(path).read_text())
    hw = get_hardware("h100-sxm")
    prof = load_profile(profile_path or hw.profile)
    g = doc.get("sustained_gemm", {})
    if g:
        f = [v for _, v in g["flops_per_s"]]
        print(
            f"sustained 8192^3 GEMM: first window {f[0] / 1e12:.0f} TFLOP/s, mean after 0.2 s "
            f"{statistics.mean(v for t, v in g['flops_per_s'] if t > 0.2) / 1e12:.0f} TFLOP/s; SM clock "
            + ", ".join(f"{k[7:]} {v:.0f} MHz" for k, v in g.items() if k.startswith("sm_mhz"))
        )
    print(
        f"\n{'case':<34} {'graph':>9} {'ops here':>9} {'err':>7} {'ops hot':>8} {'ops prof':>9} {'err':>7}"
        f" {'SM MHz':>7} {'W':>5}"
    )
    for c in doc["cases"]:
        m = get_model(c["model"])
        calls = (decode_calls if c["phase"] == "decode" else prefill_calls)(m, c["batch"], c["n"])
        composed = prof.graph_launch_s + sum(
            (prof.lookup(x.op, x.key_dict, x.point, hw)[0] or 0.0) * x.count for x in calls
        )
        here = sum(c["isolated_here"].values())
        hot = sum(c.get("isolated_hot", {}).values())
        hot_err = f"{hot / c['graph_s'] - 1:+.1%}" if hot else ""
        clk = c["clock_during_graph"]
        print(
            f"{c['phase'] + ' ' + c['model'] + ' B=' + str(c['batch']) + ' n=' + str(c['n']):<34} "
            f"{c['graph_s'] * 1e3:8.2f}ms {here * 1e3:8.2f}ms {here / c['graph_s'] - 1:+7.1%} "
            f"{hot_err:>8} "
            f"{composed * 1e3:8.2f}ms {composed / c['graph_s'] - 1:+7.1%} {clk.get('sm_mhz_mean', 0):7.0f} "
            f"{clk.get('power_w_mean', 0):5.0f}"
        )
    if doc.get("boundaries"):
        print(f"\n{'GEMM':<12} {'T':>5} {'back to back':>13} {'between adds':>13} {'boundary':>9}")
        for b in doc["boundaries"]:
            between = b["t_ga"] - b["t_aa"]
            print(
                f"{b['in']}x{b['out']:<7} {b['tokens']:>5} {b['t_gg'] * 1e6:11.2f}us {between * 1e6:11.2f}us "
                f"{between / b['t_gg'] - 1:+8.1%}"
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="JSON to write (device)")
    p.add_argument("--shapes", default=".gpujob/shapes.json", help="model shapes JSON from gpuprofile export")
    p.add_argument("--report", help="a JSON written by --out, to print")
    p.add_argument("--profile", help="profile JSON for the isolated times (default: h100-sxm's shipped profile)")
    p.add_argument("--no-cases", action="store_true", help="boundaries and the sustained GEMM only")
    p.add_argument("--hot", action="store_true", help="only HOT_CASES, each operator also timed after a GEMM heat-up")
    a = p.parse_args()
    if a.report:
        report(a.report, a.profile)
        return 0
    if not a.out:
        p.error("--out or --report")
    if a.hot:
        measure(a.shapes, Path(a.out), HOT_CASES, HOT_CASES, boundaries_too=False)
    else:
        measure(a.shapes, Path(a.out), () if a.no_cases else CASES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
