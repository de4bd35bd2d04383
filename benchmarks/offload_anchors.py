"""InstInfer vs FlexGen on the A6000 host, at InstInfer's published OPT-13B setting (1024 in / 1024 out).

Anchor (shared/ANCHORS.md): InstInfer reports up to 11.1x FlexGen's throughput for a 13B model on an A6000
(arXiv 2409.04992). This script prints what our model gives and the assumptions that drive the ratio:

* FlexGen runs on `a6000-ssd` with the placement its policy search picks (offload.search: FlexGen's LP over the
  placement fractions, solved by HiGHS for every split of the batch into GPU batches), simulated in simpy.
  Three FlexGen baselines:
  the full search (CPU delegation allowed), the search with attention on the GPU only, and an SSD-based FlexGen
  whose KV cache may not use host DRAM (the deployment InstInfer's abstract compares to: "SSD-based solutions").
* InstInfer runs on `a6000-csd` (4 SmartSSD-class drives, engine reading the flash channels at 6.4 GB/s each),
  SparF-style sparse attention with top-k = 1/8 of the tokens and r = 16 of 128 channels.
* Sensitivities over batch size: dense in-storage attention, the engine behind the SmartSSD's Gen3 x4 switch, drives.

Usage: .venv/bin/python benchmarks/offload_anchors.py [--quick]   (--quick: gen 128 instead of 1024)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from offload import Workload, analyze, default_policy, get_platform, search_flexgen, simulate  # noqa: E402

BASELINES = {  # name -> search_flexgen keyword arguments
    "FlexGen (full search)": {},
    "FlexGen (GPU attention only)": {"cpu_attention": (False,)},
    "FlexGen (SSD-based: no KV in DRAM)": {"max_kv_cpu": 0.0},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="generate 128 tokens instead of 1024")
    args = ap.parse_args()
    gen = 128 if args.quick else 1024
    ssd, csd = get_platform("a6000-ssd"), get_platform("a6000-csd")

    print(f"== OPT-13B, prompt 1024, gen {gen}, batch 64, fp16 (InstInfer's OPT setting), simpy ==")
    wl = Workload.make("opt-13b", batch=64, prompt_len=1024, gen_len=gen)
    ii_pol = default_policy("instinfer", csd, wl)
    t = time.perf_counter()
    ii = simulate(csd, wl, ii_pol)
    t_ii = time.perf_counter() - t
    runs = []
    for name, kw in BASELINES.items():
        t = time.perf_counter()
        found = search_flexgen(ssd, wl, **kw)
        t_search = time.perf_counter() - t
        t = time.perf_counter()
        res = simulate(ssd, wl, found.policy)
        runs.append((name, found, t_search, res, time.perf_counter() - t))
    print(f"InstInfer policy: {ii_pol.label()}")
    for name, found, t_search, _, _ in runs:
        print(
            f"{name} LP choice ({found.candidates} LPs solved, {found.rejected} infeasible, {t_search:.1f} s): "
            f"{found.policy.label()}; LP predicts {wl.tokens_generated / found.lp_total_s:.2f} tok/s"
        )
    print()
    for name, r, secs in [("InstInfer (a6000-csd)", ii, t_ii)] + [(n, r, s) for n, _, _, r, s in runs]:
        top = sorted(r.utilisation.items(), key=lambda kv: -kv[1])[:3]
        print(
            f"  {name:36s} {r.throughput_tok_s:7.2f} tok/s, decode step {r.per_token_latency_s * 1e3:6.0f} ms, "
            f"total {r.total_s:6.0f} s | busiest: "
            + ", ".join(f"{k} {v:.0%}" for k, v in top)
            + f" | simulated in {secs:.1f} s ({r.events} events)"
        )
    print()
    for name, _, _, r, _ in runs:
        print(
            f"  ratio InstInfer / {name:36s} = {ii.throughput_tok_s / r.throughput_tok_s:6.2f}x   (anchor: up to 11.1x)"
        )
    print(
        f"  per decode step InstInfer reads {ii.bytes_moved['csd_flash_read'] / gen / 1e9:.1f} GB from flash "
        f"inside the drives and moves {(ii.bytes_moved['pcie_h2d'] + ii.bytes_moved['pcie_d2h']) / gen / 1e9:.2f} "
        "GB over the GPU's PCIe link; "
        + "; ".join(f"{n} moves {r.bytes_moved['pcie_h2d'] / gen / 1e9:.1f} GB host->GPU" for n, _, _, r, _ in runs)
    )

    print("\n== over batch size (analytical model on the same plans; FlexGen re-searched per point) ==")
    switch = dataclasses.replace(csd, csd=dataclasses.replace(csd.csd, engine_at_flash=False))
    print(
        "  batch | FlexGen full / SSD-based tok/s | InstInfer sparse: tok/s, x full, x SSD-based | dense x full | "
        "via SmartSSD switch x full | 2 / 8 drives x full"
    )
    best = []
    for batch in (16, 32, 64, 128):
        w = Workload.make("opt-13b", batch=batch, prompt_len=1024, gen_len=gen)
        full = analyze(ssd, w, search_flexgen(ssd, w).policy).throughput_tok_s
        ssdb = analyze(ssd, w, search_flexgen(ssd, w, max_kv_cpu=0.0).policy).throughput_tok_s
        p = default_policy("instinfer", csd, w)
        sparse = analyze(csd, w, p).throughput_tok_s
        dense = analyze(csd, w, p.replace(topk_fraction=1.0, topr_channels=0)).throughput_tok_s
        sw = analyze(switch, w, p).throughput_tok_s
        drives = [
            analyze(dataclasses.replace(csd, csd=dataclasses.replace(csd.csd, count=n)), w, p).throughput_tok_s
            for n in (2, 8)
        ]
        best.append((sparse / full, sparse / ssdb, batch))
        print(
            f"  {batch:5d} | {full:8.2f} / {ssdb:8.2f}             | {sparse:7.2f}, {sparse / full:5.2f}x, "
            f"{sparse / ssdb:5.2f}x          | {dense / full:5.2f}x       | {sw / full:5.2f}x"
            f"                     | {drives[0] / full:5.2f}x / {drives[1] / full:5.2f}x"
        )
    b_full, b_ssd = max(best), max(best, key=lambda x: x[1])
    print(
        f"  best ratio over the sweep: {b_full[0]:.2f}x vs full-search FlexGen (batch {b_full[2]}), "
        f"{b_ssd[1]:.2f}x vs SSD-based FlexGen (batch {b_ssd[2]})"
    )

    print("\n== assumptions that drive the ratio ==")
    c, h = csd.csd, csd.host
    print(
        f"  * {c.count} CSDs, flash read {c.nand_read_bytes_per_s / 1e9:.1f} GB/s each "
        f"({c.nand_channels} channels x {c.nand_channel_read_bytes_per_s / 1e9:.1f} GB/s), engine at the flash "
        f"channels: {c.count * c.engine_read_bytes_per_s / 1e9:.1f} GB/s aggregate vs PCIe Gen4 x16 "
        f"{csd.gpu_link.bytes_per_s / 1e9:.1f} GB/s (assumptions, offload/platforms/a6000-csd.yaml)"
    )
    print(
        f"  * SparF: top-k {ii_pol.topk_fraction:g} of tokens, selected 16 at a time (one 4 KB page), r = "
        f"{ii_pol.topr_channels} channels from a channel-major copy of K; k, r and page-aligned selection are our "
        "choices (not in reachable sources); dense in-storage attention reads 5.3x more flash"
    )
    print(
        f"  * FlexGen CPU delegation: CPU attention at {h.cpu_attention_efficiency:.0%} of "
        f"{h.dram_bandwidth_bytes_per_s / 1e9:.0f} GB/s DDR4 (assumed 6 channels) -- the strongest lever for "
        "FlexGen; the SSD-based baseline keeps KV out of DRAM and streams it from one 980 PRO (7.0 GB/s)"
    )
    print(
        f"  * both: A6000 fp16 GEMMs at 81% of 154.8 TFLOP/s, GDDR6 at 90% of 768 GB/s, PCIe at 80% of 31.5 GB/s, "
        f"{h.usable_bytes / 2**30:.0f} GiB of 96 GiB host DRAM usable"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
