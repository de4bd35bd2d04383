"""Attention-engine figures for a 4K-context head: cycles per token, MAC-lane utilisation (whole head and steady
state), and Verilator simulation speed (cycles/s of the cocotb testbench, Python driver included).

Run: ``.venv/bin/python benchmarks/rtl_cycles.py [--head-dim 64] [--lanes 8] [--context 4096] [--no-verilator]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

VERILATOR_CASES = ("dense KV4", "bitmap KV4 70%")  # heads also run under Verilator; cyclesim_speed.py runs them too


def head_specs(head_dim: int, context: int) -> dict:
    """The benchmark heads (engine.workloads.HeadSpec by name), also used by benchmarks/cyclesim_speed.py.

    Needs the repo root on sys.path."""
    from engine.workloads import HeadSpec

    D, T = head_dim, context
    return {
        "dense KV4": HeadSpec(seed=0, head_dim=D, context=T),
        "dense KV4, Λ sink 4 + window 1024": HeadSpec(seed=1, head_dim=D, context=T, sink=4, window=1024),
        "bitmap KV4 50%": HeadSpec(seed=2, head_dim=D, context=T, k_sparsity=0.5, v_sparsity=0.5),
        "bitmap KV4 70%": HeadSpec(seed=3, head_dim=D, context=T, k_sparsity=0.7, v_sparsity=0.7),
    }


def _block_utilisation(head, lanes):
    """MAC-lane utilisation over the head's full blocks only (no per-head normalisation, no partial blocks)."""
    from engine.cycles import block_overhead, tile_cycles, tile_value_counts

    nk, nv = tile_value_counts(head)
    full = head.sel_bits().all(axis=1)
    kc = tile_cycles(nk, lanes)
    vc = np.where(head.sel_bits()[:, :, None], tile_cycles(nv, lanes), 0)
    cycles = block_overhead(lanes) + kc.sum(axis=1) + vc.sum(axis=(1, 2))
    macs = nk.sum(axis=1) + nv.sum(axis=(1, 2))
    return macs[full].sum() / (lanes * cycles[full].sum())


def _print_error(D: int, T: int) -> None:
    """Golden model (= RTL) error vs float64 attention on random KV4 heads, relative to max |V| (the bound
    documented in engine/datapath.py is 0.04)."""
    from engine.host import dequantize_kv, fixed_point_attention, lambda_mask, reference_attention

    rng = np.random.default_rng(0)
    worst = []
    for gain in (0.5, 1.0, 2.0):
        for window in (None, 512):
            kf, vf, qf = rng.normal(size=(T, D)) * gain, rng.normal(size=(T, D)), rng.normal(size=D)
            ks = np.stack([np.abs(kf[g : g + 128]).max(0) / 7 for g in range(0, T, 128)])
            k = np.clip(np.rint(kf / ks[np.arange(T) // 128]), -8, 7)
            vs = np.abs(vf).max(1, keepdims=True) / 7
            v = np.clip(np.rint(vf / vs), -8, 7)
            qs = np.abs(qf).max() / 127
            q = np.rint(qf / qs)
            r = fixed_point_attention(q, qs, k, ks, v, vs, sink=4, window=window, k_group_size=128)
            kr, vr = dequantize_kv(k, ks, v, vs, 128)
            ref = reference_attention(q * qs, kr, vr, sink=4, window=window)
            worst.append(np.abs(r.out - ref).max() / np.abs(vr[lambda_mask(T, 4, window)]).max())
    print(
        f"  fixed-point vs float64 attention, {len(worst)} random KV4 heads: max |err| = "
        f"{max(worst):.4f} x max|V| (mean {np.mean(worst):.4f}; documented bound 0.04)"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--lanes", type=int, default=8)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--no-verilator", action="store_true", help="formula figures only")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from engine.cycles import head_cycles, head_macs, steady_state_utilisation
    from engine.workloads import random_head

    L, D, T = a.lanes, a.head_dim, a.context
    heads = {k: random_head(s) for k, s in head_specs(D, T).items()}
    print(f"AttentionEngine head_dim={D} lanes={L}, context {T} tokens (stall-free, engine/cycles.py)")
    print(f"  dense steady-state lane utilisation (closed form): {100 * steady_state_utilisation(D, L):.1f} %")
    print(f"  {'workload':38s} {'cycles':>9s} {'cyc/token':>10s} {'util head':>10s} {'util steady':>12s}")
    for k, h in heads.items():
        c = head_cycles(h, L)
        ntok = int(h.sel_bits().sum())
        print(
            f"  {k:38s} {c:9d} {c / ntok:10.2f} {100 * head_macs(h) / (L * c):9.1f}% "
            f"{100 * _block_utilisation(h, L):11.1f}%"
        )
    _print_error(D, T)
    if a.no_verilator:
        return 0
    sys.path.insert(0, str(REPO / "tests" / "cocotb"))
    from harness import cxx_opt, engine_build, run_cocotb

    t0 = time.perf_counter()
    engine_build(D, L)
    print(
        f"Verilator build, C++ at {cxx_opt()} (HWSIM_VERILATOR_OPT; cached after the first run): "
        f"{time.perf_counter() - t0:.1f} s"
    )
    for k in VERILATOR_CASES:
        h = heads[k]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = run_cocotb(D, L, [{"heads": [h], "stall": 0.0, "seed": 0}], Path(tmp))
            total = time.perf_counter() - t0
        rec = res["scenarios"][0]["heads"][0]
        ok = "==" if rec["cycles"] == head_cycles(h, L) else "!="
        print(
            f"  Verilator {k:24s}: {rec['cycles']} cycles ({ok} formula), "
            f"{res['sim_cycles'] / res['wall_s']:,.0f} cycles/s in the testbench loop "
            f"({res['wall_s']:.1f} s; {total:.1f} s with simulator start-up)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
