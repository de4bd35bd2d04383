"""Regenerate tests/data/rtl_cycles.json: cycle counts of the attention engine measured under Verilator.

Run: ``.venv/bin/python tests/cocotb/regen_rtl_cycles.py``. Each entry holds the engine configuration
(head_dim, lanes), the workload (``spec``: the engine.workloads.HeadSpec that regenerates the head bit for bit),
everything the cycle formula needs without regenerating it (per-block ``sel`` masks, ``k_counts[b][d]`` values
streamed per K tile, ``v_counts[b][i][g]`` per V tile of the i-th selected token), engine/cycles.py's stall-free
prediction and the cycles measured under Verilator (stall-free drivers). The hwsim cycle-level simulator reads
this file; tests/cocotb/test_engine_cocotb.py re-measures a few entries.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from harness import run_cocotb  # noqa: E402

from engine.cycles import head_cycles, tile_value_counts  # noqa: E402
from engine.workloads import HeadSpec, random_head  # noqa: E402

OUT = HERE.parent / "data" / "rtl_cycles.json"
CONFIGS = {(64, 8): 12, (128, 8): 10, (64, 2): 3, (64, 32): 3}


def _specs(rng, head_dim, n):
    specs = []
    for _i in range(n):
        ctx = int(np.exp(rng.uniform(0, np.log(1500))))
        sparse = rng.random() < 0.5
        window = None if rng.random() < 0.4 else int(rng.integers(1, ctx + 1))
        s = float(np.round(rng.uniform(0, 1), 2)) if sparse else None
        specs.append(
            HeadSpec(
                seed=int(rng.integers(2**31)),
                head_dim=head_dim,
                context=ctx,
                sink=int(rng.integers(0, 9)),
                window=window,
                k_sparsity=s,
                v_sparsity=(float(np.round(rng.uniform(0, 1), 2)) if sparse else None),
                k_group_size=int(rng.choice([64, 128, 256])),
            )
        )
    return specs


def entry(spec, lanes, measured):
    h = random_head(spec)
    nk, nv = tile_value_counts(h)
    sel = h.sel_bits()
    return {
        "head_dim": spec.head_dim,
        "lanes": lanes,
        "spec": spec.to_dict(),
        "n_blocks": h.n_blocks,
        "sparse": h.sparse,
        "sel": [f"{int(x):016x}" for x in h.sel],
        "k_counts": nk.tolist(),
        "v_counts": [nv[b][sel[b]].tolist() for b in range(h.n_blocks)],
        "cycles_formula": head_cycles(h, lanes),
        "cycles_measured": measured,
    }


def main() -> int:
    rng = np.random.default_rng(20261123)
    entries = []
    for (d, lanes), n in CONFIGS.items():
        specs = _specs(rng, d, n)
        heads = [random_head(s) for s in specs]
        with tempfile.TemporaryDirectory() as tmp:
            res = run_cocotb(d, lanes, [{"heads": heads, "stall": 0.0, "seed": 0}], Path(tmp))
        for s, rec in zip(specs, res["scenarios"][0]["heads"]):
            entries.append(entry(s, lanes, rec["cycles"]))
        print(f"head_dim={d} lanes={lanes}: {n} heads, {res['sim_cycles']} cycles in {res['wall_s']:.1f} s")
    doc = {
        "description": "Stall-free cycles of rtl.engine.AttentionEngine per head, measured under Verilator "
        "(cocotb); regenerate with tests/cocotb/regen_rtl_cycles.py. Cycle counting and the "
        "formula: engine/cycles.py.",
        "entries": entries,
    }
    OUT.write_text(json.dumps(doc, indent=None, separators=(",", ":")) + "\n")
    bad = [e for e in entries if e["cycles_formula"] != e["cycles_measured"]]
    print(f"wrote {len(entries)} entries to {OUT}; {len(bad)} differ from engine/cycles.py")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
