"""`hwsim explore`: the Pareto front of a co-design space (compression x hardware x workload), locally or on Ray."""

from __future__ import annotations

from cli._common import positive_int

__all__ = ["register", "run"]

MAX_TABLE_ROWS = 40


def register(sub) -> None:
    p = sub.add_parser(
        "explore",
        help="search a co-design space; Pareto front of speed, energy, quality, resources",
        description="Evaluate a design space (models x schemes x hardware fields x workloads x "
        "fidelity, from SPACE.yaml) exhaustively or with NSGA-II, in this process, in "
        "local worker processes or on a Ray cluster. Every point goes to OUT/points.jsonl "
        "as it is evaluated (a killed run resumes from there); the front to "
        "OUT/pareto.json and OUT/pareto.png.",
    )
    p.add_argument("space", metavar="SPACE.yaml", help="the space file (see examples/explore/)")
    p.add_argument(
        "--executor",
        default="local",
        choices=("local", "ray"),
        help="local: this machine (--workers processes); ray: a Ray instance (default local)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join the Ray cluster at ADDR (host:port of `ray start --head`); default: start a local one",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes (local, default 1) or Ray CPUs of a local instance (default all cores)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output directory (default build/explore/<space name>); an existing one is resumed",
    )
    p.add_argument("--method", default=None, choices=("exhaustive", "nsga2"), help="override the space's search method")
    p.add_argument("--json", action="store_true", help="print one JSON document (pareto, n_points, ...)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from base.errors import SpecError
    from base.executor import check_ray_address, make_executor
    from explore import load_space, run_space

    if args.ray_address is not None and args.executor != "ray":
        raise SpecError("--ray-address needs --executor ray")
    space = load_space(args.space)  # every input error is raised here, before any work
    if args.executor == "ray" and args.ray_address is not None:
        check_ray_address(args.ray_address)
    out = Path(args.out) if args.out else Path("build") / "explore" / space.spec.name
    from base.outputs import check_output_dir

    check_output_dir(out, flag="--out")  # a file in the way or a read-only place: one line, before any work
    err = Console(stderr=True)
    executor = make_executor(args.executor, address=args.ray_address, workers=args.workers)
    try:
        with Progress(
            TextColumn("[bold]explore[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("points"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not sys.stderr.isatty(),
        ) as bar:
            task = bar.add_task("explore", total=None)
            result = run_space(
                space,
                executor,
                out,
                method=args.method,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        executor.close()
    if args.json:
        from cli._common import print_json

        print_json(result.summary())
        return 0
    _print(result)
    return 0


def _fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if key == "memory.bandwidth_bytes_per_s":
        return f"{v / 1e9:.4g} GB/s"
    if key == "freq_hz":
        return f"{v / 1e6:.4g} MHz"
    if key == "ttft_s":
        from cli._common import fmt_time

        return fmt_time(v)
    if key in ("memory_bytes", "bram"):
        from cli._common import fmt_bytes

        return fmt_bytes(v)
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def _print(result) -> None:
    from rich.table import Table

    from cli._common import console

    space = result.space
    objectives = list(space.spec.objectives)
    axes = [p for p, vals in space.hw_axes if len(vals) > 1]
    cols = []
    if len({v.model.name for v in space.variants}) > 1:
        cols.append("model")
    if len(space.variants) > 1:
        cols.append("scheme")
    cols += axes
    for k in ("batch", "prompt_len", "gen_len"):
        if len({getattr(w, k) for w in space.workloads}) > 1:
            cols.append(k)
    if len(space.fidelities) > 1:
        cols.append("fidelity")
    t = Table(
        title=f"{space.spec.name}: Pareto front ({len(result.pareto)} of {result.n_feasible:,} feasible, "
        f"{result.n_points:,} evaluated, {result.method})",
        header_style="bold",
    )
    short = [c.rsplit(".", 1)[-1] for c in cols]
    for c, name in zip(cols, short):  # hardware axes by their last name where that is unambiguous
        t.add_column(
            name if short.count(name) == 1 else c, justify="left" if c in ("model", "scheme", "fidelity") else "right"
        )
    from explore import OBJECTIVES

    for o in objectives:
        t.add_column(f"{o} ({OBJECTIVES[o][0]})", justify="right", overflow="fold")
    for r in result.pareto[:MAX_TABLE_ROWS]:
        t.add_row(*(_fmt(c, r.get(c)) for c in cols), *(_fmt(o, r.get(o)) for o in objectives))
    con = console()
    con.print(t)
    if len(result.pareto) > MAX_TABLE_ROWS:
        con.print(f"... {len(result.pareto) - MAX_TABLE_ROWS} more front points in {result.files.get('pareto')}")
    if space.resource_model is not None:
        rows = space.resource_model.error_rows()
        errs = ", ".join(
            f"{r['figure']} {r['max_rel_err']:.1%}"
            + ("" if r["loo_max_rel_err"] is None else f" (leave-one-out {r['loo_max_rel_err']:.1%})")
            for r in rows
        )
        con.print(
            f"FPGA resource model {space.resource_model.source} ({rows[0]['points']} builds): largest relative fit "
            f"error {errs}"
            + (
                ""
                if all(r["loo_max_rel_err"] is not None for r in rows)
                else "; as many terms as builds for some figures, so their error on new designs is not known"
            )
        )
    extra = sum(1 for r in result.pareto if r.get("resources_extrapolated"))
    if extra and space.resource_model is not None:
        m = space.resource_model
        con.print(
            f"[yellow]{extra} front point(s) use FPGA resources extrapolated beyond the sweep[/yellow] "
            f"(lanes {m.lanes_range[0]}..{m.lanes_range[1]}, head_dim {m.head_dim_range[0]}.."
            f"{m.head_dim_range[1]}; {m.source})"
        )
    if result.n_errors:
        first = next(r for r in result.records if r.get("error"))
        con.print(f"[yellow]{result.n_errors:,} points could not be evaluated[/yellow], e.g. {first['error']}")
    rate = result.n_evaluated / result.seconds * 60 if result.seconds > 0 else 0.0
    con.print(
        f"{result.n_evaluated:,} points evaluated ({result.n_resumed:,} resumed from --out) in "
        f"{result.seconds:.1f} s ({rate:,.0f} per minute) on {result.executor} with {result.workers} "
        f"worker(s)"
    )
    for k in ("points", "pareto", "plot"):
        if k in result.files:
            con.print(f"{k}: {result.files[k]}")
