"""Offload simulator vs real offloaded decoding: simulated (simpy and analytical) and measured decode throughput.

The measurements are benchmarks/data/offload_device.json: benchmarks/offload_runner.py ran FlexGen's layer loop
(torch, random weights, Llama-2-7B layer shapes, 8 layers, batch 32, context 1024) on the device machine at
several placements -- weights 0/56/100% on the CPU or 44% on disk, KV on the GPU or the CPU, attention on the GPU or
the CPU, pinned or pageable host buffers, 4-bit group-wise compression of weights and/or KV. The platform is
benchmarks/data/offload_device_platform.yaml, fitted from the same run's link and engine measurements by
benchmarks/offload_fit.py (the throughputs below are not used by the fit; the per-layer overhead comes from a
separate probe with negligible arithmetic).

`rows()` gives one dict per placement: name, simulated (simpy) and analytical tokens/s, measured tokens/s and the
percentage errors; `__main__` prints them as a table with the mean absolute errors, then the InstInfer / FlexGen
ratio for a 13B model on the A6000 platforms with the assumptions that drive it.

Usage: .venv/bin/python benchmarks/fidelity_offload.py [--no-anchor]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
sys.path.insert(0, str(ROOT))

from models.spec import get_model  # noqa: E402
from offload import Policy, Workload, analyze, get_platform, simulate  # noqa: E402
from quant.scheme import CompressionScheme  # noqa: E402

MEASURED = DATA / "offload_device.json"
PLATFORM = DATA / "offload_device_platform.yaml"
_CALIBRATION = ("overhead-probe",)  # runs that fitted a platform parameter: not validation


def _scheme(placement: dict) -> CompressionScheme:
    """FlexGen's 4-bit group-64 compression of what the run compressed."""
    w, kv = placement.get("compress_w", False), placement.get("compress_kv", False)
    return CompressionScheme(
        name="fp16" if not (w or kv) else "w4" * w + "kv4" * kv,
        weight_bits=4 if w else 16,
        weight_group_size=64,
        kv_bits=4 if kv else 16,
        kv_group_size=64,
    )


def case(doc: dict, run: dict) -> tuple[Workload, Policy]:
    """The workload and policy the simulator runs for one measured placement."""
    dims = doc["model"]
    base = get_model("llama-2-7b")
    assert (base.hidden_size, base.num_heads, base.ffn_hidden_size, base.vocab_size) == (
        dims["hidden"],
        dims["heads"],
        dims["ffn"],
        dims["vocab"],
    ), "runner shapes differ from llama-2-7b"
    model = dataclasses.replace(base, name=f"llama-2-7b-{dims['layers']}L", num_layers=dims["layers"])
    pl = run["placement"]
    # one warm-up token at context `prompt`, then tokens_timed decode steps: the same decode steps in the simulator
    wl = Workload.make(model, run["batch"], run["prompt"] + 1, run["tokens_timed"] + 1, _scheme(pl))
    w = run["w_bytes_by_tier"]
    total = sum(w.values())
    kv_gpu = bool(pl.get("kv_gpu"))
    pol = Policy(
        "flexgen",
        gpu_batch_size=run["batch"],
        num_gpu_batches=1,
        w_gpu=w["gpu"] / total,
        w_cpu=w["cpu"] / total,
        kv_gpu=1.0 if kv_gpu else 0.0,
        kv_cpu=0.0 if kv_gpu else 1.0,
        cpu_attention=bool(pl.get("cpu_attention")),
        pinned=pl.get("pinned_host", True),
        # the runner reads disk tensor by tensor, each read's copy to the GPU overlapping the next read
        route_chunks=max(1, sum(t == "disk" for t in run["tiers"].values())),
    )
    return wl, pol


def rows() -> list[dict]:
    """Simulated vs measured decode throughput for every measured placement; [] until the device run's
    measurements (MEASURED) and the platform fitted from them (PLATFORM) are committed."""
    if not (MEASURED.exists() and PLATFORM.exists()):
        return []
    doc = json.loads(MEASURED.read_text())
    platform = get_platform(PLATFORM)
    out = []
    for run in doc["runs"]:
        if run["name"].startswith(_CALIBRATION) or "error" in run:
            continue
        wl, pol = case(doc, run)
        measured = run["batch"] / run["seconds_per_token"]
        sim = wl.batch / simulate(platform, wl, pol).per_token_latency_s
        ana = wl.batch / analyze(platform, wl, pol).per_token_latency_s
        out.append(
            {
                "name": run["name"],
                "policy": pol.label(),
                "scheme": wl.scheme.name,
                "simulated_tok_s": sim,
                "analytical_tok_s": ana,
                "measured_tok_s": measured,
                "simulated_error_pct": 100 * (sim - measured) / measured,
                "analytical_error_pct": 100 * (ana - measured) / measured,
                "device": doc["environment"].get("nvidia_smi", "").split(",")[0],
            }
        )
    return out


def _anchor() -> None:
    """The InstInfer / FlexGen ratio at InstInfer's OPT-13B setting (analytical, gen 1024) and its assumptions."""
    ssd, csd = get_platform("a6000-ssd"), get_platform("a6000-csd")
    from offload import default_policy, search_flexgen

    wl = Workload.make("opt-13b", batch=64, prompt_len=1024, gen_len=1024)
    ii = analyze(csd, wl, default_policy("instinfer", csd, wl)).throughput_tok_s
    print("\nInstInfer / FlexGen, OPT-13B, batch 64, 1024 in / 1024 out, A6000 (analytical; anchor: up to 11.1x)")
    for name, kw in (
        ("full LP search", {}),
        ("GPU attention only", {"cpu_attention": (False,)}),
        ("SSD-based (no KV in DRAM)", {"max_kv_cpu": 0.0}),
    ):
        found = search_flexgen(ssd, wl, **kw)
        fg = analyze(ssd, wl, found.policy).throughput_tok_s
        print(f"  vs FlexGen {name:26s} {ii / fg:6.2f}x  ({found.policy.label()})")
    c = csd.csd
    print(
        f"  assumptions: {c.count} CSDs, flash {c.nand_read_bytes_per_s / 1e9:.1f} GB/s each read by the engine at "
        "the flash channels; SparF top-k 1/8, r = head_dim/8; FlexGen CPU attention at "
        f"{csd.host.cpu_attention_efficiency:.0%} of DDR4 bandwidth (a6000-*.yaml sources; "
        "benchmarks/offload_anchors.py prints the sensitivities)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-anchor", action="store_true", help="skip the InstInfer / FlexGen ratio")
    args = ap.parse_args()
    rs = rows()
    if not rs:
        print(
            f"offload fidelity: no measurements yet ({MEASURED.relative_to(ROOT)} and "
            f"{PLATFORM.relative_to(ROOT)} are missing). On a GPU machine: python3 benchmarks/offload_runner.py "
            "--out DIR; copy DIR/offload_device.json there; then .venv/bin/python benchmarks/offload_fit.py"
        )
    else:
        print(f"offload fidelity: decode throughput (tokens/s), measured on {rs[0]['device']}")
    if rs:
        print(
            f"  {'placement':20s} {'scheme':7s} {'measured':>9s} {'simpy':>9s} {'err':>7s} {'analytical':>10s} "
            f"{'err':>7s}"
        )
    for r in rs:
        print(
            f"  {r['name']:20s} {r['scheme']:7s} {r['measured_tok_s']:9.1f} {r['simulated_tok_s']:9.1f} "
            f"{r['simulated_error_pct']:+6.1f}% {r['analytical_tok_s']:10.1f} {r['analytical_error_pct']:+6.1f}%"
        )
    if rs:
        mae_s = sum(abs(r["simulated_error_pct"]) for r in rs) / len(rs)
        mae_a = sum(abs(r["analytical_error_pct"]) for r in rs) / len(rs)
        comp = [r for r in rs if r["scheme"] != "fp16"]
        mae_c = sum(abs(r["simulated_error_pct"]) for r in comp) / len(comp) if comp else float("nan")
        print(
            f"  MAE over {len(rs)} placements: simpy {mae_s:.1f}%, analytical {mae_a:.1f}% "
            f"(compressed ones: simpy {mae_c:.1f}%); goal <= 10%"
        )
    if not args.no_anchor:
        _anchor()
    return 0


if __name__ == "__main__":
    sys.exit(main())
