"""`hwsim compress`: compress a model with real weights (the shipped SmolLM2, or a user's Hugging Face checkpoint
directory) by a scheme and write the artifact (the checkpoint's tokenizer.json travels inside it)."""

from __future__ import annotations

from cli._common import positive_int

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "compress",
        help="compress a model (real weights) and write a compressed-model artifact",
        description="Compress MODEL by SCHEME (pruning, W2/W4, A8, KV4, KV bitmap sparsity, Λ "
        "attention), calibrating on Wikipedia lead sections, and write the packed tensors "
        "+ manifest to OUT (atomically).",
    )
    p.add_argument(
        "--model",
        required=True,
        help="smollm2-135m (weights shipped offline) or a local Hugging Face checkpoint directory of the "
        "Llama/Mistral family (config.json, *.safetensors [+ model.safetensors.index.json], "
        "tokenizer.json; fp16/bf16/fp32)",
    )
    p.add_argument("--scheme", required=True, help="compression preset (see `hwsim schemes`) or a scheme YAML")
    p.add_argument("--out", required=True, help="artifact directory to create")
    p.add_argument(
        "--method",
        default="gptq",
        choices=("gptq", "qat", "rtn"),
        help="weight method: gptq (error-compensating, SparseGPT-style pruning), qat (GPTQ + "
        "distillation fine-tune; GPU advised) or rtn (Wanda pruning "
        "+ round to nearest); default gptq",
    )
    p.add_argument("--calib-windows", type=positive_int, default=128, help="calibration windows (default 128)")
    p.add_argument("--calib-len", type=positive_int, default=512, help="tokens per calibration window (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration article order and of QAT (default 0)")
    p.add_argument(
        "--train-windows",
        type=positive_int,
        default=1024,
        help="--method qat: Wikipedia-lead training windows of --calib-len tokens (default 1024)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="--method qat: end-to-end distillation steps (default: quant.methods.QATConfig's)",
    )
    p.add_argument(
        "--block-steps",
        type=int,
        default=None,
        help="--method qat: block-wise reconstruction steps per block (default: QATConfig's)",
    )
    p.add_argument(
        "--layers",
        type=positive_int,
        default=None,
        help="keep only the first N transformer layers (quick experiments and tests)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing artifact at OUT")
    p.add_argument("--json", action="store_true", help="print one JSON document describing the artifact")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses
    from pathlib import Path

    from base.errors import SpecError
    from models.hf import TOKENIZER_FILE, is_checkpoint_dir, load_checkpoint, open_checkpoint
    from models.smollm import load_weights
    from models.spec import get_model
    from quant.artifact import read_estimate_inputs, write_artifact
    from quant.methods.kvcache import kv_statistics
    from quant.quantize import Calibration, configs_for_scheme, quantize
    from quant.scheme import get_scheme

    user = is_checkpoint_dir(args.model)  # a user's checkpoint: everything in it is checked before any work
    spec = open_checkpoint(args.model).spec if user else get_model(args.model)
    scheme = get_scheme(args.scheme)
    from base.outputs import check_output_dir

    out = Path(args.out)
    if out.exists() and not args.force:
        raise SpecError(f"{out} already exists; choose another --out or pass --force")
    if out.exists() and not (out / "manifest.json").is_file():
        raise SpecError(f"--out {out} exists and is not an artifact; --force replaces only an artifact")
    check_output_dir(
        out.parent if out.exists() else out, flag="--out", need_bytes=2 * scheme.weight_bytes(spec).total
    )  # before any work: the compress takes minutes
    if not 2 <= args.calib_len <= spec.max_position_embeddings:
        raise SpecError(
            f"--calib-len {args.calib_len} is out of range; use 2..{spec.max_position_embeddings} "
            f"({spec.name}'s context)"
        )
    if args.layers is not None:
        if args.layers > spec.num_layers:
            raise SpecError(f"--layers {args.layers} exceeds the model's {spec.num_layers} layers")
        spec = dataclasses.replace(spec, num_layers=args.layers)
    cfgs = configs_for_scheme(scheme, weight_method=args.method)  # refuses what a method cannot produce, up front
    if args.method == "qat":
        from quant.methods import QATConfig

        if not any(isinstance(c, QATConfig) for c in cfgs):
            raise SpecError(
                f"scheme {scheme.name!r} compresses no weights: --method qat has nothing to train; "
                "use a scheme with weight_bits < 16 or pruning"
            )
        over = {k: v for k, v in (("steps", args.steps), ("block_steps", args.block_steps)) if v is not None}
        cfgs = [
            dataclasses.replace(c, seed=args.seed, gptq_windows=args.calib_windows, **over)
            if isinstance(c, QATConfig)
            else c
            for c in cfgs
        ]
    if user:
        model, tok, _ = load_checkpoint(args.model, n_layers=args.layers)
        tok_prov = {
            "file": TOKENIZER_FILE,
            "source": str(Path(args.model) / TOKENIZER_FILE),
            "bos_id": tok.bos_id,
            "eos_id": tok.eos_id,
        }
    else:
        model, tok = load_weights(args.model, n_layers=args.layers)
        tok_prov = f"{args.model} GGUF vocab + merges"
    n_cal = max(args.calib_windows, args.train_windows) if args.method == "qat" else args.calib_windows
    calib = Calibration.wiki_leads(tok, n=n_cal, seq_len=args.calib_len, seed=args.seed)
    reports = []
    for cfg in cfgs:
        reports.extend(quantize(model, cfg, calibration=calib))
    kv = kv_statistics(model, list(calib.windows), scheme)
    prov = dict(calib.provenance, tokenizer=tok_prov, weight_method=args.method)
    files = {TOKENIZER_FILE: (Path(args.model) / TOKENIZER_FILE).read_bytes()} if user else None
    write_artifact(
        out, model, spec, scheme, kv_stats=kv, calibration=prov, reports=reports, overwrite=args.force, files=files
    )
    info = read_estimate_inputs(out)
    if args.json:
        from cli._common import print_json

        print_json(
            {
                "artifact": str(out),
                "model": spec.name,
                "scheme": scheme.name,
                "layers": spec.num_layers,
                "weight_bytes": info.total_weight_bytes,
                "linear_bytes": sum(info.layer_weight_bytes),
                "kv_mean_bytes_per_token_per_head": kv["mean_bytes_per_token_per_head"],
                "kv_mean_density": kv["mean_density"],
                "methods": reports,
            }
        )
        return 0
    from cli._common import console, esc, fmt_bytes

    c = console()
    c.print(
        f"wrote {esc(out)}: {esc(spec.name)} ({spec.num_layers} layers), scheme {esc(scheme.name)} "
        f"{esc(f'[{scheme.label}]')}, "
        f"weights {fmt_bytes(info.total_weight_bytes)} (linears {fmt_bytes(sum(info.layer_weight_bytes))}), "
        f"KV {kv['mean_bytes_per_token_per_head']:.1f} B/token/head, calibration "
        f"{calib.provenance['n_windows']}x{calib.provenance['seq_len']} tokens"
    )
    return 0
