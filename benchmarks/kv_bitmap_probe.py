"""Which KV-bitmap variant keeps SmolLM2-135M closest to the uncompressed model at 70% mean sparsity, on CPU.

Every variant prunes the same mean fraction of K/V elements in the Mustafar bitmap format (32 dense recent tokens,
64-token chunks), so the cache bytes are equal; only which elements are kept differs:

* magnitude per token (Mustafar, arXiv 2505.22913);
* output-aware scores (quant.methods.kvcache) + 4 dense sink tokens;
* the same with K and V pruned to different sparsities of the same mean (K 65% / V 75%, K 60% / V 80%): an
  experiment of this script only (the library's codec prunes K and V alike);
* output-aware + 4 sinks + per-layer kept counts from the sensitivity allocation (a dynamic programme over each
  layer's measured KL; `--calib-windows` training windows, kept counts k0 + 4j, |j| <= 3).

Perplexity ratios to the uncompressed model on the first `--windows` windows (BOS + 512 tokens) of WikiText-2 test
and of the reserved King James text, from the pack that benchmarks/qat_device.py builds (`qat_device.py pack DIR`).
Calibration text: Wikipedia leads, never evaluation text. The sensitivity allocation costs ~30 CPU minutes here
(210 forward passes); the whole probe ~40. Writes JSON with provenance and prints the table.

    python benchmarks/kv_bitmap_probe.py PACK_DIR [--out benchmarks/data/kv_bitmap_probe_cpu.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SPARSITY, RECENT = 0.7, 32


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pack", type=Path, help="directory written by `qat_device.py pack` (a/ and b/)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "data" / "kv_bitmap_probe_cpu.json"))
    ap.add_argument("--windows", type=int, default=24, help="evaluation windows per text")
    ap.add_argument("--calib-windows", type=int, default=4, help="windows the calibrated variants measure on")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not (args.pack / "a" / "meta.json").is_file() or not (args.pack / "b" / "tokens.safetensors").is_file():
        print(
            f"error: {args.pack} is not a pack; build one with `python benchmarks/qat_device.py pack DIR`",
            file=sys.stderr,
        )
        return 2

    import qat_device as qd
    import torch
    from safetensors.torch import load_file

    from quant.methods import KVBitmapConfig
    from quant.methods.kvcache import KVCodec, prune_per_token
    from quant.quantize import Calibration, quantize

    torch.set_num_threads(args.threads)

    @dataclasses.dataclass(frozen=True)
    class SplitCodec(KVCodec):
        """KVCodec with K and V pruned to their own sparsities (per-token, output-aware weights if present)."""

        k_sparsity: float = SPARSITY
        v_sparsity: float = SPARSITY

        def prune(self, k, v, layer=0):
            kw = vw = None
            if self.k_weight is not None:
                kw = torch.tensor(self.k_weight[layer], dtype=k.dtype).view(-1, 1, k.shape[-1])
            if self.v_weight is not None:
                vw = torch.tensor(self.v_weight[layer], dtype=v.dtype).view(-1, 1, v.shape[-1])
            kp, vp = prune_per_token(k, self.k_sparsity, kw), prune_per_token(v, self.v_sparsity, vw)
            if self.sink:
                kp = torch.cat([k[..., : self.sink, :], kp[..., self.sink :, :]], dim=-2)
                vp = torch.cat([v[..., : self.sink, :], vp[..., self.sink :, :]], dim=-2)
            return kp, vp

    base, meta = qd.load_model(args.pack)
    toks = load_file(str(args.pack / "b" / "tokens.safetensors"))
    bos = meta["bos_id"]
    texts = {
        "wikitext2": qd._windows(toks["wikitext2_test"], bos)[: args.windows],
        "kjv": qd._windows(toks["kjv"], bos)[: args.windows],
    }
    cal = Calibration(tuple(tuple(r) for r in toks["train"].tolist()), meta["texts"]["train"])
    t0 = time.time()
    ref = {k: qd.perplexity(base, w) for k, w in texts.items()}
    rows = [{"variant": "uncompressed", "ppl": ref, "ratio": {k: 1.0 for k in ref}, "seconds": time.time() - t0}]
    doc = {
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/kv_bitmap_probe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "protocol": f"first {args.windows} windows of BOS + 512 tokens per text; ratios to the uncompressed model; "
        f"{SPARSITY:.0%} mean sparsity, {RECENT} dense recent tokens",
        "texts": meta["texts"],
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every row: a long run keeps what it measured
        out.write_text(json.dumps(doc, indent=1) + "\n")

    save()
    oa = {"selection": "output_aware", "sink": 4}
    variants = [
        ("magnitude per token (Mustafar)", {}, None),
        ("output-aware + 4 sinks", oa, None),
        ("output-aware + 4 sinks, K 65% / V 75%", oa, (0.65, 0.75)),
        ("output-aware + 4 sinks, K 60% / V 80%", oa, (0.6, 0.8)),
        ("output-aware + 4 sinks + per-layer allocation", {**oa, "allocation": "sensitivity"}, None),
    ]
    for label, kw, split in variants:
        t0 = time.time()
        m = copy.deepcopy(base)
        cfg = KVBitmapConfig(SPARSITY, dense_recent=RECENT, calib_windows=args.calib_windows, **kw)
        rep = quantize(m, cfg, calibration=cal)[0]
        if split:
            c = m.blocks[0].attn.kv_codec
            fields = {f.name: getattr(c, f.name) for f in dataclasses.fields(KVCodec)}
            m.set_kv_codec(SplitCodec(**fields, k_sparsity=split[0], v_sparsity=split[1]))
        t_cal = time.time() - t0
        ppl = {k: qd.perplexity(m, w) for k, w in texts.items()}
        row = {
            "variant": label,
            "config": {k: v for k, v in rep.items() if k != "allocation_detail"},
            "k_v_sparsity": list(split) if split else [SPARSITY, SPARSITY],
            "ppl": ppl,
            "ratio": {k: ppl[k] / ref[k] for k in ppl},
            "calibrate_s": round(t_cal, 1),
            "seconds": round(time.time() - t0, 1),
        }
        if "allocation_detail" in rep:
            row["kept_per_layer"] = rep["allocation_detail"]["kept_per_layer"]
        rows.append(row)
        save()
        print(
            f"{label:48s} wikitext2 {row['ratio']['wikitext2']:.4f}  kjv {row['ratio']['kjv']:.4f}  "
            f"{row['seconds']:.0f} s",
            flush=True,
        )
        del m
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
