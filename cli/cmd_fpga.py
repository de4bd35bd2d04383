"""`hwsim fpga build` and `hwsim fpga sweep`: ECP5 bitstreams of the attention engine with the YoWASP toolchain."""

from __future__ import annotations

from base.errors import SpecError
from cli._common import int_list, positive_int

# fpga.DESIGNS, kept literal so the CLI does not import fpga/ at start-up (tests/cli/test_cmd_fpga.py checks it)
DESIGN_CHOICES = ("engine", "dot", "softmax", "normalizer")
ROUTER_CHOICES = ("router1", "router2")  # fpga.ROUTERS, literal for the same reason
DEFAULT_ROUTER = "router2"  # fpga.BuildConfig.router (why router2: the comment on fpga._config.ROUTERS)
ROUTER_HELP = "nextpnr router: router2 (default; finishes on the engine) or router1 (higher Fmax where it converges)"
SEED_HELP = (
    "nextpnr placer seed(s) (default 1); several: place and route once per seed and keep the best Fmax "
    "(on large engines the seed alone moves Fmax by several MHz)"
)

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "fpga",
        help="build ECP5 bitstreams of the attention engine (YoWASP Yosys + nextpnr)",
        description="Build the rtl/ attention engine into an ECP5 bitstream with the open YoWASP "
        "toolchain, or sweep its resources and Fmax over lanes.",
    )
    from cli import OneLineArgumentParser

    fsub = p.add_subparsers(dest="fpga_command", metavar="ACTION", parser_class=OneLineArgumentParser)
    fsub.required = True

    b = fsub.add_parser(
        "build", help="build one configuration: .bit + report.json (a HardwareSpec for `hwsim estimate --hardware`)"
    )
    b.add_argument(
        "--board",
        default="ulx3s-85f",
        help="ulx3s-85f (board flow: PLL, LEDs) or lfe5u-85f (bare chip) (default: ulx3s-85f)",
    )
    b.add_argument("--lanes", type=positive_int, default=8, help="MAC lanes of the engine (default 8)")
    b.add_argument("--head-dim", type=positive_int, default=64, help="head dimension, 64 or 128 (default 64)")
    b.add_argument("--freq", type=float, default=100.0, metavar="MHZ", help="target clock in MHz (default 100)")
    b.add_argument("--out", default="build", metavar="DIR", help="build directory (default: build)")
    b.add_argument(
        "--design",
        default="engine",
        choices=DESIGN_CHOICES,
        help="engine: rtl/ attention engine; dot: small int4xint8 dot-product array (flow check)",
    )
    b.add_argument("--router", default=DEFAULT_ROUTER, choices=ROUTER_CHOICES, help=ROUTER_HELP)
    b.add_argument("--seed", type=int_list, default=[1], metavar="N[,N...]", help=SEED_HELP)
    b.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help="place-and-route runs at a time with several seeds (one core each; default 1)",
    )
    b.add_argument("--json", action="store_true", help="print the report as one JSON document")
    _executor_args(b, "the seeds' place-and-route runs")
    b.set_defaults(func=run, action="build")

    s = fsub.add_parser("sweep", help="build a grid of lanes (x head_dim); print and plot resources and Fmax")
    s.add_argument("--board", default="lfe5u-85f", help="target (default: lfe5u-85f, the bare chip)")
    s.add_argument(
        "--lanes", type=int_list, default=[2, 4, 8, 16], metavar="N,N,...", help="lanes to build (default 2,4,8,16)"
    )
    s.add_argument("--head-dim", type=int_list, default=[64], metavar="D,D", help="head dims (default 64)")
    s.add_argument("--freq", type=float, default=100.0, metavar="MHZ", help="target clock in MHz (default 100)")
    s.add_argument(
        "--out",
        default="build/fpga-sweep",
        metavar="DIR",
        help="root of the per-point build directories (default: build/fpga-sweep)",
    )
    s.add_argument("--png", default=None, metavar="PATH", help="plot file (default: OUT/sweep.png)")
    s.add_argument("--design", default="engine", choices=DESIGN_CHOICES)
    s.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help="builds at a time (nextpnr uses one core each; default 1)",
    )
    s.add_argument("--router", default=DEFAULT_ROUTER, choices=ROUTER_CHOICES, help=ROUTER_HELP)
    s.add_argument("--seed", type=int_list, default=[1], metavar="N[,N...]", help=SEED_HELP)
    s.add_argument("--json", action="store_true", help="print the rows as one JSON document")
    _executor_args(s, "the points' builds")
    s.set_defaults(func=run, action="sweep")


class _RichListener:
    """Build progress on stderr: one line per tool with a spinner and elapsed time; notes in yellow."""

    def __init__(self, console) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=False
        )
        self.tasks: dict[str, tuple[int, str]] = {}
        self.started = False

    def __enter__(self):
        return self

    def _ensure_started(self) -> None:  # lazily, so input errors caught before any tool runs print nothing else
        if not self.started:
            self.started = True
            self.progress.start()

    def __exit__(self, exc_type, *exc) -> None:
        if not self.started:
            return
        if exc_type is not None:  # the error is reported as one line: erase the progress display
            self.progress.live.transient = True
        self.progress.stop()

    def start(self, step: str, text: str) -> None:
        self._ensure_started()
        self.tasks[step] = (self.progress.add_task(text, total=1), text)

    def done(self, step: str, seconds: float) -> None:
        task, text = self.tasks.pop(step)
        self.progress.update(task, completed=1, description=f"{text} [green]done[/green] ({seconds:.1f} s)")

    def note(self, text: str) -> None:
        self._ensure_started()
        self.progress.console.print(f"[yellow]note:[/yellow] {text}")


def run(args) -> int:
    from rich.console import Console

    if not 1.0 <= args.freq <= 400.0:
        raise SpecError(f"--freq {args.freq:g} MHz is out of range; use 1..400 MHz")
    from pathlib import Path

    from base.outputs import check_output_dir, check_output_file

    check_output_dir(args.out, flag="--out")  # before any synthesis (build directories are claimed in fpga/)
    if args.action == "sweep":
        check_output_file(args.png or Path(args.out) / "sweep.png", flag="--png", suffixes=(".png", ".pdf", ".svg"))
    err = Console(stderr=True)
    if args.action == "build":
        return _build(args, err)
    return _sweep(args, err)


def _executor_args(p, what: str) -> None:
    p.add_argument(
        "--executor",
        default="local",
        choices=("local", "ray"),
        help=f"where {what} run: local (--jobs at a time, default) or ray (Ray tasks; a cluster must "
        "share this file system)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join the Ray cluster at ADDR (host:port); default: start a local instance",
    )


def _executor(args):
    """None (the local --jobs path) or a base.executor RayExecutor; input errors before any build."""
    if args.executor == "local":
        if args.ray_address is not None:
            raise SpecError("--ray-address needs --executor ray")
        return None
    from base.executor import make_executor

    return make_executor("ray", address=args.ray_address, workers=args.jobs if args.jobs > 1 else None)


def _build(args, err) -> int:
    from fpga import BuildConfig, build

    config = BuildConfig(
        board=args.board,
        lanes=args.lanes,
        head_dim=args.head_dim,
        freq_mhz=args.freq,
        design=args.design,
        router=args.router,
        seeds=tuple(args.seed),
    )
    executor = _executor(args)
    try:
        with _RichListener(err) as listener:  # progress on stderr, so --json leaves stdout to the JSON document
            result = build(config, args.out, listener=listener, jobs=args.jobs, executor=executor)
    finally:
        if executor is not None:
            executor.close()
    if args.json:
        from cli._common import print_json

        print_json(result.report.to_json())
        return 0
    _print_report(result)
    return 0


def _print_report(result) -> None:
    from rich.table import Table

    from cli._common import console

    rep = result.report
    con = console()
    cfg = result.config
    t = Table(title=f"{cfg.label}: {rep.board.part} ({rep.board.flow} flow)", header_style="bold")
    for col, just in (("resource", "left"), ("used", "right"), ("available", "right"), ("share", "right")):
        t.add_column(col, justify=just)
    for key, u in rep.utilization.items():
        t.add_row(
            u.bel if key not in ("lut", "ff", "dsp", "bram") else f"{key.upper()} ({u.bel})",
            f"{u.used:,}",
            f"{u.available:,}",
            f"{u.share:.1%}",
        )
    con.print(t)
    c = Table(title=f"clocks (nextpnr-ecp5 {cfg.router}, post-route)", header_style="bold")
    for col in ("clock net", "Fmax", "target", "result"):
        c.add_column(col, justify="left" if col == "clock net" else "right")
    for net, clk in rep.clocks.items():
        ok = "[green]PASS[/green]" if clk.passed else "[red]FAIL[/red]"
        c.add_row(net, f"{clk.achieved_mhz:.1f} MHz", f"{clk.target_mhz:g} MHz", ok)
    con.print(c)
    if len(rep.seeds) > 1:
        tried = ", ".join(f"{s.seed}: {s.fmax_mhz:.1f}" for s in rep.seeds)
        con.print(f"seeds (Fmax MHz): {tried}; kept seed {rep.seed}")
    cp = rep.critical_path
    if cp:
        con.print(
            f"critical path: {cp.delay_ns:.2f} ns ({cp.logic_ns:.2f} logic + {cp.routing_ns:.2f} "
            f"routing) from {cp.from_cell} to {cp.to_cell}"
        )
        if cp.sources:
            con.print("  through " + ", ".join(cp.sources))
    times = ", ".join(f"{k} {v:.1f} s" for k, v in rep.times_s.items())
    con.print(
        f"bitstream: {result.bitstream} ({rep.bitstream_bytes:,} bytes, sha256 "
        f"{rep.bitstream_sha256[:16]}...); times: {times}"
    )
    con.print(f"report: {result.report_path}  ->  hwsim estimate --hardware {result.report_path} --model ...")


def _sweep(args, err) -> int:
    from pathlib import Path

    from fpga import RESOURCES, plot_sweep, sweep, sweep_rows

    executor = _executor(args)
    try:
        with _RichListener(err) as listener:
            points = sweep(
                board=args.board,
                lanes=args.lanes,
                head_dims=args.head_dim,
                freq_mhz=args.freq,
                out_root=args.out,
                design=args.design,
                listener=listener,
                jobs=args.jobs,
                router=args.router,
                seeds=tuple(args.seed),
                executor=executor,
            )
    finally:
        if executor is not None:
            executor.close()
    png = plot_sweep(
        points,
        args.png or Path(args.out) / "sweep.png",
        title=f"{args.design} on {args.board}: resources and Fmax vs lanes (target {args.freq:g} MHz)",
    )
    rows = sweep_rows(points)
    if args.json:
        from cli._common import print_json

        print_json({"rows": rows, "png": str(png)})
        return 0
    from rich.table import Table

    from cli._common import console

    t = Table(title=f"{args.design} on {args.board} @ target {args.freq:g} MHz", header_style="bold")
    for col in ("head_dim", "lanes", *(r.bel for r in RESOURCES), "Fmax MHz", "seed", "timing", "build s"):
        t.add_column(col, justify="right")
    for r in rows:
        if not r["fits"]:
            t.add_row(str(r["head_dim"]), str(r["lanes"]), "[red]does not fit[/red]", "", "", "", "", "", "", "")
            continue
        t.add_row(
            str(r["head_dim"]),
            str(r["lanes"]),
            *(f"{r[res.key]:,} ({r[f'{res.key}_pct']:.1f}%)" for res in RESOURCES),
            f"{r['fmax_mhz']:.1f}",
            str(r["seed"]),
            "[green]PASS[/green]" if r["timing_pass"] else "[red]FAIL[/red]",
            f"{r['build_s']:.0f}",
        )
    con = console()
    con.print(t)
    for r in rows:
        if not r["fits"]:
            con.print(f"head_dim {r['head_dim']}, lanes {r['lanes']}: {r['does_not_fit']}")
    con.print(f"plot: {png}")
    return 0
