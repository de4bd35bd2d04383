"""What each part of QAT does to a 2-bit SmolLM2-135M, measured on CPU in minutes: the evidence behind
quant/methods/qat.py's choices (fixed-code scale gradients, latent codes trained only where asked).

From one GPTQ W2 g64 initialisation (16 windows), each variant trains a copy for a few steps and reports the KL of
the next-token distributions to the uncompressed model on 8 held-out training windows (Wikipedia leads; never
evaluation text), the number of codes that changed, and the seconds it took:

* block-wise reconstruction of scales and zero points, without and with the RMSNorm weights;
* the same with latent codes trained at two learning rates (grid steps per Adam step);
* end-to-end distillation of the scales (and norms) with LSQ's gradient (codes re-derived from a latent weight
  that follows the scale; the gradient vanishes at bin centres, where an initialisation from quantized weights
  puts them) and with the fixed-code gradient hwsim uses, and the latter with the norms frozen;
* block-wise then end-to-end at the default rates, norms trained or frozen.

Short phases (``--block-steps`` per block, ``--steps`` end to end, batch 2 x 256 tokens) keep it to ~20 CPU
minutes; the device's pipeline (benchmarks/qat_device.py) runs the full phases. Writes
benchmarks/data/qat_probe_cpu.json (with provenance) and prints the table.

    python benchmarks/qat_probe.py [--out benchmarks/data/qat_probe_cpu.json]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WINDOWS, SEQ, HELD, BATCH = 56, 256, 8, 2


def main(argv=None) -> int:
    import torch

    from models.smollm import load_smollm2
    from quant.methods.qat import (
        QATConfig,
        QATLinear,
        _kd,
        _RoundSTE,
        block_reconstruct,
        distill,
        init_student,
        prepare_student,
    )
    from quant.quantize import Calibration

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "data" / "qat_probe_cpu.json"))
    ap.add_argument("--block-steps", type=int, default=30)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args(argv)

    class LSQLinear(QATLinear):
        """LSQ's scale gradient: the code is re-derived from a latent weight u * s0 at the current scale."""

        def qweight(self):
            qmax = 2**self.bits - 1
            s = self._expand(self.scales())
            z = self._expand(torch.clamp(_RoundSTE.apply(self.z), 0, qmax))
            q = torch.clamp(_RoundSTE.apply(self.w * self._expand(self.s0) / s) + z, 0, qmax)
            w = (q - z) * s
            return w if self.keep is None else w * self.keep

    torch.manual_seed(0)
    t_all = time.time()
    model, tok = load_smollm2()
    cal = Calibration.wiki_leads(tok, n=WINDOWS, seq_len=SEQ)
    ids = torch.tensor(cal.windows)
    held, train = ids[-HELD:], ids[:-HELD]
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    t0 = time.time()
    init_student(model, QATConfig(bits=2, group_size=64, gptq_windows=16, block_steps=0), cal)
    t_init = time.time() - t0
    prepare_student(model)

    def held_kl(m) -> float:
        with torch.no_grad():
            return sum(float(_kd(m, teacher, held[i : i + BATCH], 1.0)) for i in range(0, HELD, BATCH)) / (
                HELD // BATCH
            )

    def codes(m) -> list:
        return [torch.round(q.w) for b in m.blocks for q in b.linears().values()]

    c0 = codes(model)
    rows = [{"variant": "GPTQ init", "held_kl": round(held_kl(model), 4), "codes_changed": 0, "seconds": round(t_init)}]
    print(f"{rows[0]['variant']:55s} held KL {rows[0]['held_kl']:.4f}", flush=True)

    def run(name: str, block: dict | None, e2e: dict | None, lsq: bool = False) -> None:
        m = copy.deepcopy(model)
        if lsq:
            for b in m.blocks:
                for q in b.linears().values():
                    q.__class__ = LSQLinear
        gen = torch.Generator().manual_seed(0)
        t0 = time.time()
        base = dict(bits=2, group_size=64, batch=BATCH, val_windows=0, block_windows=32, diverge_factor=1e9)
        if block is not None:
            block_reconstruct(m, teacher, train[:32], QATConfig(**base, block_steps=args.block_steps, **block), gen)
        if e2e is not None:
            distill(m, teacher, train, QATConfig(**base, steps=args.steps, **e2e), gen)
        changed = sum(int((a != b).sum()) for a, b in zip(codes(m), c0))
        row = {
            "variant": name,
            "block": block,
            "end_to_end": e2e,
            "held_kl": round(held_kl(m), 4),
            "codes_changed": changed,
            "seconds": round(time.time() - t0),
        }
        rows.append(row)
        print(f"{name:55s} held KL {row['held_kl']:.4f}  codes changed {changed:>10d}  {row['seconds']} s", flush=True)

    run("block: scales, zeros", {"train_weights": False, "train_norms": False}, None)
    run("block: scales, zeros, norms", {"train_weights": False}, None)
    run("block: + latent codes at 3e-2 grid steps / step", {"train_weights": True, "block_lr": 3e-2}, None)
    run("block: + latent codes at 6e-2 grid steps / step", {"train_weights": True, "block_lr": 6e-2}, None)
    run("end-to-end: scales, LSQ gradient", None, {"train_weights": False, "lr_scale": 1e-3}, lsq=True)
    run("end-to-end: scales, fixed-code gradient", None, {"train_weights": False, "lr_scale": 1e-3})
    run("end-to-end: scales, fixed-code gradient, norms frozen", None, {"lr_scale": 1e-3, "train_norms": False})
    run("block then end-to-end, norms trained", {"train_norms": True}, {"train_norms": True})
    run("block then end-to-end, norms frozen", {"train_norms": False}, {"train_norms": False})

    n_params = sum(c.numel() for c in c0)
    doc = {
        "what": "QAT mechanisms on SmolLM2-135M W2 g64 from a GPTQ init: KL to the uncompressed model on held-out "
        "training windows after short phases",
        "protocol": {
            "windows": WINDOWS,
            "window_tokens": SEQ,
            "held_out_windows": HELD,
            "gptq_windows": 16,
            "block_steps_per_block": args.block_steps,
            "end_to_end_steps": args.steps,
            "batch": BATCH,
            "quantized_weights": n_params,
        },
        "training_text": dict(cal.provenance),
        "rows": rows,
        "provenance": {
            "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
            "command": "python benchmarks/qat_probe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "seconds": round(time.time() - t_all),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
