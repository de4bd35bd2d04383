"""`hwsim offload`: simulate offloaded decoding (FlexGen / LeoAM-like / InstInfer) on a GPU + SSD/CSD platform."""

from __future__ import annotations

from base.errors import SpecError
from cli._common import int_list, positive_int

__all__ = ["register", "run"]

_POLICIES = ("flexgen", "leoam", "instinfer")


def register(sub) -> None:
    p = sub.add_parser(
        "offload",
        help="simulate offloaded decoding on a GPU + SSD / computational-storage host",
        description="Simulate batched long-context generation when the KV cache (and possibly the "
        "weights) does not fit in GPU memory: FlexGen placement over GPU/CPU/disk, a "
        "LeoAM-like tiered KV, or InstInfer's in-storage attention.",
    )
    p.add_argument("--model", required=True, help="shipped model name (see `hwsim models`) or a config.json/YAML")
    p.add_argument(
        "--platform",
        default="a6000-csd",
        help="shipped platform (see `hwsim platforms`) or a platform YAML (default a6000-csd)",
    )
    p.add_argument(
        "--policy",
        default=None,
        choices=_POLICIES,
        help="offloading policy (default: flexgen when --placement is given, else instinfer)",
    )
    p.add_argument("--scheme", default="fp16", help="compression preset or scheme YAML (default fp16)")
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--prompt", type=positive_int, default=1024, help="prompt tokens (default 1024)")
    p.add_argument("--gen", type=positive_int, default=1024, help="generated tokens (default 1024)")
    p.add_argument(
        "--placement",
        default=None,
        metavar="WG,WC,KG,KC,HG,HC",
        help="FlexGen-style percentages of weights, KV cache and activations on GPU and CPU (the rest "
        "on disk), e.g. 100,0,15,85,100,0; implies --policy flexgen (default: FlexGen's LP "
        "search / LeoAM greedy tiers / InstInfer layout)",
    )
    p.add_argument(
        "--policy-yaml",
        default=None,
        metavar="YAML",
        help="a complete Policy as YAML (its fields: kind, gpu_batch_size, num_gpu_batches, w_gpu, ...); "
        "overrides --policy and the placement flags",
    )
    p.add_argument(
        "--gpu-batches",
        type=positive_int,
        default=None,
        help="number of GPU batches the batch is split into (must divide --batch)",
    )
    p.add_argument("--topk", type=float, default=None, help="InstInfer: fraction of tokens attended (1 = dense)")
    p.add_argument("--topr", type=positive_int, default=None, help="InstInfer: query channels for approximation")
    p.add_argument("--no-overlap", action="store_true", help="do not overlap load / compute / store")
    p.add_argument(
        "--cpu-attention",
        default="auto",
        choices=("auto", "on", "off"),
        help="FlexGen: decode attention over the offloaded KV share on the CPU (on), on the GPU (off), or "
        "whichever the LP search prices cheaper (auto; with --placement auto means off)",
    )
    p.add_argument(
        "--pageable",
        action="store_true",
        help="host buffers are pageable, not pinned (copies at the platform's gpu_link.pageable_efficiency)",
    )
    p.add_argument("--fidelity", default="simpy", choices=("simpy", "analytical"))
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="also plot throughput of every policy the platform supports over --sweep (analytical model)",
    )
    p.add_argument(
        "--sweep",
        default="batch",
        choices=("batch", "context"),
        help="x axis of --plot: batch size, or prompt = generated length (default batch)",
    )
    p.add_argument(
        "--sweep-values",
        type=int_list,
        default=None,
        metavar="N,N,...",
        help="points of the sweep (default 8,16,32,64 for batch; 256,512,1024,2048 for context)",
    )
    p.set_defaults(func=run)


def _kind(args) -> str:
    kind = args.policy or ("flexgen" if args.placement is not None else "instinfer")
    if args.placement is not None and kind == "instinfer":
        raise SpecError(
            "--placement sets GPU/CPU/disk fractions, but InstInfer keeps the KV cache in the drives; "
            "drop --placement or use --policy flexgen"
        )
    if args.cpu_attention != "auto" and kind != "flexgen":
        raise SpecError(f"--cpu-attention is FlexGen's CPU delegation; use it with --policy flexgen, not {kind}")
    if args.pageable and kind == "instinfer":
        raise SpecError("--pageable applies to host buffers of flexgen/leoam; InstInfer moves data peer to peer")
    return kind


def _policy(args, platform, workload):
    """(policy, the FlexGen LP search result or None)."""
    from offload import Policy, default_policy, read_policy, search_flexgen

    if args.policy_yaml is not None:
        return read_policy(args.policy_yaml), None
    kind = _kind(args)
    found = None
    if args.placement is not None:  # the placement is given: no search needed
        n = args.gpu_batches or 1
        pol = Policy(
            kind, gpu_batch_size=max(1, args.batch // n), num_gpu_batches=n, cpu_attention=args.cpu_attention == "on"
        )
    elif kind == "flexgen":
        choices = {"auto": (False, True), "on": (True,), "off": (False,)}[args.cpu_attention]
        found = search_flexgen(platform, workload, cpu_attention=choices, pinned=not args.pageable)
        pol = found.policy
    else:
        pol = default_policy(kind, platform, workload)
    changes: dict = {}
    if args.pageable:
        changes["pinned"] = False
    if args.placement is not None:
        parts = args.placement.split(",")
        try:
            vals = [float(x) / 100 for x in parts]
        except ValueError:
            vals = []
        if len(vals) != 6:
            raise SpecError(
                f"--placement {args.placement!r} is malformed; give six percentages "
                "WG,WC,KG,KC,HG,HC, e.g. 100,0,15,85,100,0"
            )
        if any(not 0 <= v <= 1 for v in vals):
            raise SpecError(f"--placement {args.placement!r}: every percentage must be in 0..100")
        changes.update(zip(("w_gpu", "w_cpu", "kv_gpu", "kv_cpu", "act_gpu", "act_cpu"), vals))
    if args.gpu_batches is not None:
        if args.batch % args.gpu_batches:
            raise SpecError(f"--gpu-batches {args.gpu_batches} does not divide --batch {args.batch}; pick a divisor")
        changes.update(gpu_batch_size=args.batch // args.gpu_batches, num_gpu_batches=args.gpu_batches)
    if args.topk is not None or args.topr is not None:
        if args.policy != "instinfer":
            raise SpecError("--topk/--topr are InstInfer settings; use them with --policy instinfer")
        if args.topk is not None:
            if not 0 < args.topk <= 1:
                raise SpecError(f"--topk {args.topk} is out of range; give a fraction in (0, 1]")
            changes["topk_fraction"] = args.topk
            if args.topk == 1:
                changes["topr_channels"] = 0
        if args.topr is not None:
            changes["topr_channels"] = args.topr
    if args.no_overlap:
        changes["overlap"] = False
    if changes and found is not None and (args.gpu_batches is not None or args.no_overlap):
        found = None  # the policy run is no longer the LP's choice
    return (Policy(**{**{f: getattr(pol, f) for f in pol.__dataclass_fields__}, **changes}) if changes else pol), found


def run(args) -> int:
    from offload import Workload, analyze, check_fits, get_platform, simulate

    if args.plot:  # before any work: a directory, a missing suffix or a read-only place is one line, exit 2
        from base.outputs import check_output_file

        check_output_file(args.plot, flag="--plot", suffixes=(".png", ".pdf", ".svg"))
    platform = get_platform(args.platform)
    workload = Workload.make(args.model, args.batch, args.prompt, args.gen, args.scheme)
    context = workload.model.max_position_embeddings
    longest = max(
        [args.prompt + args.gen] + [2 * x for x in args.sweep_values or [] if args.plot and args.sweep == "context"]
    )
    if longest > context:
        what = "prompt + generated" if longest == args.prompt + args.gen else "2 x the largest --sweep-values"
        raise SpecError(
            f"{longest:,} tokens ({what}) exceeds {workload.model.name}'s context of {context:,} "
            "tokens; lower --prompt/--gen or the sweep values"
        )
    policy, found = _policy(args, platform, workload)
    check_fits(platform, workload, policy)
    if args.fidelity == "analytical":
        result = analyze(platform, workload, policy)
    else:
        result = _simulate_with_progress(simulate, platform, workload, policy, show=not args.json)
    if args.plot:
        _plot(args, platform, workload)
    if args.json:
        from base.specio import to_plain
        from cli._common import print_json

        data = result.to_dict()
        data["stores"] = {k: to_plain(v) for k, v in result.stores.items()}
        data["inputs"] = {
            "platform": to_plain(platform),
            "policy": to_plain(policy),
            "scheme": to_plain(workload.scheme),
            "model": workload.model.name,
        }
        if args.plot:
            data["plot"] = args.plot
        if found is not None:
            data["search"] = {
                "lp_total_s": found.lp_total_s,
                "estimated_total_s": found.estimated_total_s,
                "lp_throughput_tok_s": workload.tokens_generated / found.lp_total_s,
                "candidates": found.candidates,
                "rejected": found.rejected,
            }
        print_json(data)
        return 0
    if found is not None:
        print(
            f"FlexGen LP (HiGHS, {found.candidates} LPs solved, {found.rejected} infeasible) chose "
            f"{policy.label()}: LP predicts {workload.tokens_generated / found.lp_total_s:.2f} tok/s, "
            f"{result.fidelity} gives {result.throughput_tok_s:.2f} tok/s"
        )
    _print(result, platform, workload, policy)
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def _simulate_with_progress(simulate, platform, workload, policy, show: bool):
    import sys

    if not show or not sys.stderr.isatty() or workload.gen_len < 64:
        return simulate(platform, workload, policy)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} tokens"),
        TimeElapsedColumn(),
        transient=True,
        console=Console(file=sys.stderr),
    ) as bar:
        task = bar.add_task("sim", total=workload.gen_len)
        return simulate(platform, workload, policy, progress=lambda done, total: bar.update(task, completed=done))


def _print(result, platform, workload, policy) -> None:
    from rich.table import Table

    from cli._common import console, fmt_bytes, fmt_time

    con = console()
    t = Table(
        title=f"{workload.model.name} on {platform.name} — {policy.kind} ({result.fidelity})", header_style="bold"
    )
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("policy", policy.label())
    t.add_row(
        "workload",
        f"batch {workload.batch}, prompt {workload.prompt_len}, gen {workload.gen_len}, scheme {workload.scheme.name}",
    )
    t.add_row("throughput (generated tokens / total time)", f"{result.throughput_tok_s:.2f} tok/s")
    t.add_row("decode throughput", f"{result.decode_throughput_tok_s:.2f} tok/s")
    t.add_row("per-token latency (decode)", fmt_time(result.per_token_latency_s))
    t.add_row("prefill / total time", f"{fmt_time(result.prefill_s)} / {fmt_time(result.total_s)}")
    t.add_row("requests completed", f"{result.requests_completed} of {result.requests_submitted}")
    con.print(t)
    r = Table(title="resources", header_style="bold")
    for col in ("resource", "units", "busy", "utilisation", "bytes moved"):
        r.add_column(col, justify="left" if col == "resource" else "right")
    for name, busy in result.busy_s.items():
        moved = result.bytes_moved.get(name)
        r.add_row(
            name,
            str(result.members[name]),
            fmt_time(busy),
            f"{busy / result.total_s:.1%}",
            fmt_bytes(moved) if moved is not None else "-",
        )
    con.print(r)
    s = Table(title="stores", header_style="bold")
    for col in ("store", "resident at end", "peak", "capacity", "written", "read"):
        s.add_column(col, justify="left" if col == "store" else "right")
    for st in result.stores.values():
        if st.capacity_bytes or st.written_bytes:
            s.add_row(
                st.name,
                fmt_bytes(st.resident_bytes),
                fmt_bytes(st.peak_bytes),
                fmt_bytes(st.capacity_bytes),
                fmt_bytes(st.written_bytes),
                fmt_bytes(st.read_bytes),
            )
    con.print(s)


def _plot(args, platform, workload) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from offload import Workload, analyze, default_policy

    if args.sweep == "batch":
        xs = args.sweep_values or [8, 16, 32, 64]
        loads = [Workload.make(workload.model, x, workload.prompt_len, workload.gen_len, workload.scheme) for x in xs]
        xlabel = "batch size"
    else:
        xs = args.sweep_values or [256, 512, 1024, 2048]
        loads = [Workload.make(workload.model, workload.batch, x, x, workload.scheme) for x in xs]
        xlabel = "prompt = generated tokens"
    kinds = [k for k in _POLICIES if k != "instinfer" or platform.csd is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in kinds:
        ys = []
        for wl in loads:
            try:
                ys.append(analyze(platform, wl, default_policy(kind, platform, wl)).throughput_tok_s)
            except SpecError:
                ys.append(float("nan"))  # does not fit: a gap in the curve
        ax.plot(xs, ys, marker="o", label=kind)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("throughput (tokens/s)")
    ax.set_title(f"{workload.model.name} on {platform.name} (analytical model)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    import io
    from pathlib import Path

    from base.outputs import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, dpi=120, format=Path(args.plot).suffix.lstrip(".").lower())
    atomic_write_bytes(args.plot, buf.getvalue(), flag="--plot")  # parents created; one-line error if it fails
    plt.close(fig)
