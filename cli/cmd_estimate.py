"""`hwsim estimate`, `hwsim models`, `hwsim hardware`, `hwsim schemes`: performance estimates and what is shipped."""

from __future__ import annotations

from pathlib import Path

from base.errors import SpecError
from cli._common import positive_int

__all__ = ["register", "run", "resolve_scheme"]

# the cycle-level model runs each sequence of the batch through the engines at every decode step it prices, so its
# time grows with batch x steps; this bound keeps a run within seconds (beyond it: the analytical model)
CYCLE_MAX_WORK = 2**20


def register(sub) -> None:
    p = sub.add_parser(
        "estimate",
        help="estimate latency, throughput, memory and energy of a model on hardware",
        description="Estimate TTFT, TPOT, tokens/s, memory footprint and energy of MODEL compressed "
        "by a scheme on HARDWARE.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="shipped model name (see `hwsim models`), a Hugging Face config.json, a model YAML, or a "
        "compressed-model artifact directory written by `hwsim compress`",
    )
    p.add_argument(
        "--hardware",
        default="u280-accllm",
        help="shipped hardware name (see `hwsim hardware`), a hardware YAML, or an FPGA build "
        "report.json (default: u280-accllm)",
    )
    p.add_argument(
        "--scheme",
        default=None,
        help="compression preset (see `hwsim schemes`) or a scheme YAML (default: fp16, or the artifact's own scheme)",
    )
    p.add_argument(
        "--kv4", action="store_true", help="4-bit KV cache (K per channel, V per token, 32 newest tokens dense)"
    )
    p.add_argument("--w2", action="store_true", help="2-bit group-wise weights (group 64)")
    p.add_argument("--a8", action="store_true", help="int8 per-token activations")
    p.add_argument(
        "--prune",
        default=None,
        metavar="N:M|FRACTION",
        help="weight pruning: N:M (N kept of every M, e.g. 2:4), or a fraction in (0, 1) for unstructured pruning",
    )
    p.add_argument(
        "--kv-sparsity",
        type=float,
        default=None,
        metavar="F",
        help="KV bitmap sparsity fraction in [0, 1) (Mustafar; 32 newest tokens dense)",
    )
    p.add_argument(
        "--lambda",
        dest="lambda_",
        default=None,
        metavar="SINK,WINDOW",
        help="Λ attention: SINK first tokens + WINDOW newest tokens",
    )
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--prompt", type=positive_int, default=1024, help="prompt tokens (default 1024)")
    p.add_argument("--gen", type=positive_int, default=1024, help="generated tokens (default 1024)")
    p.add_argument("--fidelity", default="analytical", choices=("analytical", "cycle"))
    p.add_argument("--json", action="store_true", help="print one JSON document with every figure and the inputs")
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="show where each decode token's time goes, by operator class and mechanism (memory, "
        "compute, load latency, instruction issue, sync, die link, host, ...); the JSON always "
        "carries it under 'breakdown'",
    )
    p.set_defaults(func=run)

    for name, what in (
        ("models", "shipped model specs"),
        ("hardware", "shipped hardware specs"),
        ("schemes", "compression presets"),
    ):
        q = sub.add_parser(name, help=f"list {what}")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=_run_list, listing=name)


def resolve_scheme(base, args):
    """Apply the CLI's scheme flags to `base` (a CompressionScheme)."""
    changes: dict = {}
    if args.w2:
        changes.update(weight_bits=2, weight_group_size=64)
    if args.a8:
        changes["act_bits"] = 8
    if args.kv4:
        changes.update(kv_bits=4, kv_dense_recent=max(base.kv_dense_recent, 32))
    if args.prune is not None:
        if ":" in args.prune:
            from quant.scheme import parse_nm

            try:
                parse_nm(args.prune)
            except SpecError:
                raise SpecError(
                    f"--prune {args.prune!r} is not supported; use N:M with 0 < N < M (e.g. 2:4) or a "
                    "fraction in (0, 1) for unstructured pruning"
                ) from None
            changes.update(weight_pruning=args.prune, weight_sparsity=0.0)
        else:
            try:
                frac = float(args.prune)
            except ValueError:
                raise SpecError(
                    f"--prune {args.prune!r} is not supported; use 2:4 or a fraction in (0, 1) for unstructured pruning"
                ) from None
            if not 0 < frac < 1:
                raise SpecError(f"--prune {frac} is out of range; an unstructured fraction must be in (0, 1)")
            changes.update(weight_pruning="unstructured", weight_sparsity=frac)
    if args.kv_sparsity is not None:
        if not 0 <= args.kv_sparsity < 1:
            raise SpecError(f"--kv-sparsity {args.kv_sparsity} is out of range; use a fraction in [0, 1)")
        changes.update(kv_sparsity=args.kv_sparsity, kv_dense_recent=max(base.kv_dense_recent, 32))
    if args.lambda_ is not None:
        parts = args.lambda_.split(",")
        try:
            sink, window = (int(x) for x in parts)
        except ValueError:
            raise SpecError(
                f"--lambda {args.lambda_!r} is malformed; use SINK,WINDOW with integers, e.g. --lambda 4,2048"
            ) from None
        if sink < 0 or window < 1 or max(sink, window) > 2**31 - 1:
            raise SpecError(f"--lambda {args.lambda_}: need 0 <= SINK and 1 <= WINDOW, both below 2^31")
        changes.update(attn_sink=sink, attn_window=window)
    if not changes:
        return base
    name = base.name + "+" + ",".join(k for k in ("w2", "a8", "kv4") if getattr(args, k)) if changes else base.name
    return base.replace(name=name.rstrip("+"), **changes)


def _load_inputs(args):
    from hwsim.hardware import get_hardware
    from models.spec import get_model
    from quant.scheme import get_scheme

    artifact = None
    model_path = Path(args.model)
    if model_path.is_dir() and (model_path / "manifest.json").is_file():
        from quant.artifact import read_estimate_inputs

        artifact = read_estimate_inputs(model_path)
        model, base = artifact.model, artifact.scheme
    else:
        model = get_model(args.model)
        base = get_scheme("fp16")
    hw = get_hardware(args.hardware)
    args.defaults_note = None
    if artifact is None and args.scheme is None and hw.design_scheme and not (args.w2 or args.a8):
        design = get_scheme(hw.design_scheme)  # the hardware's design point sets the default precision
        base = base.replace(
            name=f"w{design.weight_bits}a{design.act_bits}",
            weight_bits=design.weight_bits,
            weight_group_size=design.weight_group_size,
            act_bits=design.act_bits,
        )
        args.defaults_note = (
            f"{hw.name} is built for {design.name}: weights default to {design.weight_bits}-bit "
            f"(group {design.weight_group_size}) and activations to {design.act_bits}-bit; pass "
            "--scheme fp16 (or another) to choose"
        )
    if args.scheme is not None:
        base = get_scheme(args.scheme)
    return model, hw, resolve_scheme(base, args), artifact


def run(args) -> int:
    from base.specio import to_plain
    from hwsim.estimate import estimate
    from hwsim.workload import Workload

    model, hw, scheme, artifact = _load_inputs(args)
    if args.prompt + args.gen > model.max_position_embeddings:
        raise SpecError(
            f"--prompt {args.prompt:,} + --gen {args.gen:,} = {args.prompt + args.gen:,} tokens exceeds "
            f"{model.name}'s context of {model.max_position_embeddings:,} tokens; lower --prompt or --gen"
        )
    if args.fidelity == "cycle":
        from hwsim.estimate import EXACT_DECODE_STEPS

        work = args.batch * min(args.gen, EXACT_DECODE_STEPS)  # sequences x decode steps priced
        if work > CYCLE_MAX_WORK:
            raise SpecError(
                f"--batch {args.batch:,} x {min(args.gen, EXACT_DECODE_STEPS):,} decode steps is too "
                f"much for --fidelity cycle, which simulates every sequence at every step (limit "
                f"{CYCLE_MAX_WORK:,}); lower --batch or --gen, or use --fidelity analytical"
            )
    workload = Workload(batch=args.batch, prompt_len=args.prompt, gen_len=args.gen)
    profile = None
    notes = [args.defaults_note] if args.defaults_note else []
    if artifact is not None:
        if scheme == artifact.scheme:
            profile = artifact.profile()
        else:
            notes.append(
                "the flags change the artifact's compression scheme; its measured byte counts and KV "
                "sparsity do not apply, nominal figures are used"
            )
    est = estimate(model, hw, scheme, workload, fidelity=args.fidelity, profile=profile)
    if notes:  # after the estimate: a refusal stays one line
        import sys

        sys.stderr.write("".join(f"hwsim: note: {n}\n" for n in notes))
    if args.json:
        from cli._common import print_json

        inputs = {
            "model": to_plain(model),
            "hardware": to_plain(hw),
            "scheme": to_plain(scheme),
            "workload": to_plain(workload),
            "fidelity": args.fidelity,
        }
        if artifact is not None:
            inputs["artifact"] = str(args.model)
        print_json(est.to_dict(inputs))
        return 0
    _print_table(est, model, hw, scheme)
    if getattr(args, "breakdown", False):
        _print_breakdown(est)
    return 0


def _print_breakdown(est) -> None:
    from rich.table import Table

    from cli._common import console, fmt_time

    con = console()
    t = Table(title="decode time per token by operator class and mechanism (mean over the steps)", header_style="bold")
    for col in ("operator", "mechanism", "time / token", "share"):
        t.add_column(col, justify="right" if col in ("time / token", "share") else "left")
    total = sum(b.seconds for b in est.decode_breakdown) or 1.0
    for b in est.decode_breakdown:
        t.add_row(b.cls, b.mechanism, fmt_time(b.seconds), f"{b.seconds / total:.1%}")
    con.print(t)
    if est.bandwidth_utilisation is not None:
        con.print(
            f"predicted off-chip bandwidth utilisation in decode: {est.bandwidth_utilisation:.1%} of "
            f"{est.peak_bandwidth_bytes_per_s / 1e9:.0f} GB/s ({est.decode_bytes_per_step / 1e9:.3g} GB per "
            "step)"
        )


def _print_table(est, model, hw, scheme) -> None:
    from rich.table import Table

    from cli._common import console, esc, fmt_bytes, fmt_energy, fmt_time

    con = console()
    t = Table(
        title=f"{esc(model.name)} on {hw.name} — {scheme.name} ({scheme.label}), {est.fidelity}",
        show_header=True,
        header_style="bold",
    )
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("workload", f"batch {est.batch}, prompt {est.prompt_len}, gen {est.gen_len}")
    t.add_row("TTFT (prefill)", fmt_time(est.ttft_s))
    t.add_row("TPOT (mean decode step)", fmt_time(est.tpot_s))
    t.add_row("decode step, first / last", f"{fmt_time(est.decode_step_s[0])} / {fmt_time(est.decode_step_s[-1])}")
    t.add_row("decode throughput", f"{est.decode_tokens_per_s:.1f} tok/s")
    t.add_row("end-to-end throughput", f"{est.e2e_tokens_per_s:.1f} tok/s")
    t.add_row("weights", fmt_bytes(est.weight_bytes))
    t.add_row("KV cache at final length", fmt_bytes(est.kv_bytes_final))
    t.add_row("activations (peak)", fmt_bytes(est.activation_bytes_peak))
    fit = "[green]yes[/green]" if est.fits else "[red]NO[/red]"
    t.add_row("fits in memory", f"{fit} ({fmt_bytes(est.memory_bytes)} of {fmt_bytes(est.capacity_bytes)})")
    if est.energy_per_token_j is not None:
        t.add_row(
            "energy", f"{fmt_energy(est.energy_per_token_j)}/token ({est.tokens_per_j:.3g} tok/J at {est.power_w:g} W)"
        )
    con.print(t)
    ops = Table(title="decode time by operator class (all steps)", header_style="bold")
    for col in ("operator", "time", "share", "bound"):
        ops.add_column(col, justify="right" if col in ("time", "share") else "left")
    total = sum(o.time_s for o in est.decode_ops) or 1.0
    for o in sorted(est.decode_ops, key=lambda o: -o.time_s):
        ops.add_row(o.name, fmt_time(o.time_s), f"{o.time_s / total:.1%}", o.bound)
    con.print(ops)
    for note in est.notes:
        con.print(f"[red]note: {esc(note)}[/red]" if note.startswith("DOES NOT FIT") else f"note: {esc(note)}")


def _run_list(args) -> int:
    from cli._common import print_json

    if args.listing == "models":
        from models.spec import get_model, list_models

        rows = [(n, get_model(n)) for n in list_models()]
        data = [
            {
                "name": n,
                "family": m.family,
                "params": m.param_count,
                "layers": m.num_layers,
                "heads": m.num_heads,
                "kv_heads": m.num_kv_heads,
                "source": m.source,
            }
            for n, m in rows
        ]
    elif args.listing == "hardware":
        from hwsim.hardware import get_hardware, list_hardware

        data = [
            {
                "name": n,
                "kind": h.kind,
                "description": h.description,
                "memory_bandwidth_bytes_per_s": h.memory.bandwidth_bytes_per_s,
                "memory_capacity_bytes": h.memory.capacity_bytes,
            }
            for n, h in ((n, get_hardware(n)) for n in list_hardware())
        ]
    else:
        from quant.scheme import get_scheme, list_schemes

        data = [{"name": n, "label": get_scheme(n).label, "source": get_scheme(n).source} for n in list_schemes()]
    if args.json:
        print_json(data)
        return 0
    from rich.table import Table

    from cli._common import console

    t = Table(title=args.listing, header_style="bold")
    for key in data[0]:
        t.add_column(key, overflow="fold")
    for row in data:
        t.add_row(
            *(
                f"{v:,}"
                if isinstance(v, int) and not isinstance(v, bool)
                else f"{v:.4g}"
                if isinstance(v, float)
                else str(v)
                for v in row.values()
            )
        )
    console().print(t)
    return 0
