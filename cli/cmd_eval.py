"""`hwsim eval`: perplexity of a compressed-model artifact on evaluation text (WikiText-2, or any UTF-8 file)."""

from __future__ import annotations

from cli._common import positive_int

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="perplexity of a compressed-model artifact",
        description="Perplexity of the artifact in DIR on TEXT (512-token non-overlapping windows, BOS "
        "first), computed through the packed formats and the reference kernels (default) "
        "or by fake quantization.",
    )
    p.add_argument("--artifact", required=True, help="artifact directory written by `hwsim compress`")
    p.add_argument(
        "--text",
        default="wikitext2",
        help="evaluation text: wikitext2 (WikiText-2 test, default) or wikitext2-valid from the shared "
        "data folder, or a path to any UTF-8 text file (at least one window of --seq-len tokens)",
    )
    p.add_argument("--max-tokens", type=positive_int, default=None, help="use only the first N text tokens")
    p.add_argument("--seq-len", type=positive_int, default=512, help="tokens per window (default 512)")
    p.add_argument(
        "--path",
        default="packed",
        choices=("packed", "fake"),
        help="packed: reference kernels on the packed formats (slow, exact); fake: fake quantization "
        "in torch (fast); default packed",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from models.data import eval_windows, read_text
    from quant.artifact import load_artifact
    from quant.evaluate import artifact_tokenizer, model_from_artifact, perplexity

    art = load_artifact(args.artifact)  # verified: checksums, manifest consistency (quant.artifact.verify_artifact)
    if args.seq_len > art.model_spec.max_position_embeddings:
        from base.errors import SpecError

        raise SpecError(
            f"--seq-len {args.seq_len:,} exceeds {art.model_spec.name}'s context of "
            f"{art.model_spec.max_position_embeddings:,} tokens; lower --seq-len"
        )
    tok = artifact_tokenizer(art)
    wins = eval_windows(
        tok, read_text(args.text), seq_len=args.seq_len, max_tokens=args.max_tokens, where=f"--text {args.text}"
    )
    model = model_from_artifact(art, path=args.path)
    with (
        torch.no_grad(),
        Progress(
            TextColumn("[bold]eval[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("windows"),
            TimeRemainingColumn(),
            transient=True,
            disable=args.json,
        ) as bar,
    ):
        task = bar.add_task("eval", total=len(wins))
        res = perplexity(model, wins, progress=lambda i: bar.update(task, completed=i))
    out = {
        "artifact": str(args.artifact),
        "model": art.model_spec.name,
        "layers": art.model_spec.num_layers,
        "scheme": art.scheme.name,
        "text": args.text,
        "path": args.path,
        "seq_len": args.seq_len,
        "perplexity": res.ppl,
        "tokens": res.n_tokens,
        "windows": res.n_windows,
    }
    if args.json:
        from cli._common import print_json

        print_json(out)
        return 0
    from cli._common import console, esc

    console().print(
        f"{esc(art.model_spec.name)} {esc(f'[{art.scheme.name}]')} on {args.text}: perplexity "
        f"{res.ppl:.3f} ({res.n_tokens} tokens, {res.n_windows} windows, {args.path} path)"
    )
    return 0
