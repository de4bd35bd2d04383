"""Lanes vs LUT/FF/DSP/BRAM/Fmax of the rtl/ attention engine on the bare LFE5U-85F (YoWASP Yosys + nextpnr-ecp5).

Builds each configuration with fpga.build (bare-chip flow, nextpnr seed 1, target --freq) and prints one row per
configuration, the largest configuration that fits, and whether it reaches the target. Also writes the plot.

    .venv/bin/python benchmarks/fpga_sweep.py [--lanes 2,4,8,16,32,64] [--head-dim 64] [--freq 100]
        [--out build/fpga-sweep] [--design engine|dot|softmax|normalizer] [--jobs N] [--router router1|router2]

Each engine build takes one core, and nextpnr-ecp5 under WebAssembly dominates (placement, then routing; see the
printed times): with the default router2, minutes for lanes 2 and up to about half an hour for lanes 32/64. Lanes 64
is the configuration the 100 MHz goal applies to (fpga/TIMING.md). --jobs runs several builds at once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from base.errors import HwsimError  # noqa: E402
from cli import OneLineArgumentParser  # noqa: E402
from cli._common import int_list, positive_int  # noqa: E402
from fpga import DESIGNS, RESOURCES, ROUTERS, BuildConfig, plot_sweep, sweep, sweep_rows  # noqa: E402


class _Print:
    def start(self, step: str, text: str) -> None:
        print(f"  .. {text}", file=sys.stderr, flush=True)

    def done(self, step: str, seconds: float) -> None:
        print(f"     {step} {seconds:.1f} s", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        print(f"  note: {text}", file=sys.stderr, flush=True)


def main() -> int:
    ap = OneLineArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lanes", type=int_list, default=[2, 4, 8, 16, 32, 64], metavar="N,N,...")
    ap.add_argument("--head-dim", type=int_list, default=[64], metavar="D,D,...")
    ap.add_argument("--freq", type=float, default=100.0)
    ap.add_argument("--out", default="build/fpga-sweep")
    ap.add_argument("--design", default="engine", choices=tuple(DESIGNS))
    ap.add_argument("--jobs", type=positive_int, default=1, help="builds at a time (nextpnr uses one core each)")
    ap.add_argument(
        "--router",
        default=BuildConfig.router,
        choices=ROUTERS,
        help="nextpnr router (default router2, which finishes on the engine; router1: see fpga._flow)",
    )
    ap.add_argument(
        "--seed",
        type=int_list,
        default=[1],
        metavar="N[,N...]",
        help="nextpnr seed(s), comma-separated; several: each point keeps its best",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        points = sweep(
            board="lfe5u-85f",
            lanes=args.lanes,
            head_dims=args.head_dim,
            freq_mhz=args.freq,
            out_root=args.out,
            design=args.design,
            listener=_Print(),
            jobs=args.jobs,
            router=args.router,
            seeds=tuple(args.seed),
        )
    except HwsimError as e:  # bad input (e.g. an impossible frequency) or a missing toolchain: one line, status 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = sweep_rows(points)
    print(
        f"{args.design} on LFE5U-85F-6BG381C (bare chip), target {args.freq:g} MHz, nextpnr seed(s) "
        f"{','.join(map(str, args.seed))} (best kept), {args.router}"
    )
    head = (
        f"{'D':>4} {'lanes':>5} "
        + " ".join(f"{r.bel:>18}" for r in RESOURCES)
        + f" {'Fmax MHz':>9} {'seed':>4} {'timing':>6} {'build s':>8}"
    )
    print(head)
    for r in rows:
        if not r["fits"]:
            print(f"{r['head_dim']:>4} {r['lanes']:>5}  does not fit: {r['does_not_fit']}")
            continue
        cells = " ".join(f"{r[x.key]:>9,} ({r[f'{x.key}_pct']:5.1f}%)" for x in RESOURCES)
        print(
            f"{r['head_dim']:>4} {r['lanes']:>5} {cells} {r['fmax_mhz']:>9.1f} {r['seed']:>4} "
            f"{'PASS' if r['timing_pass'] else 'FAIL':>6} {r['build_s']:>8.0f}"
        )
    fitting = [p for p in points if p.fits]
    if fitting:
        best = max(fitting, key=lambda p: (p.config.lanes, p.config.head_dim))
        rep = best.report
        print(
            f"largest configuration that fits: lanes={best.config.lanes} head_dim={best.config.head_dim}: "
            f"Fmax {rep.fmax_mhz:.1f} MHz ({'meets' if rep.timing_pass else 'misses'} {args.freq:g} MHz)"
        )
        cp = rep.critical_path
        if cp:
            print(
                f"  its critical path: {cp.delay_ns:.2f} ns ({cp.logic_ns:.2f} logic + "
                f"{cp.routing_ns:.2f} routing), {cp.from_cell} -> {cp.to_cell}"
            )
            print(f"  through: {', '.join(cp.sources) or '(no HDL sources recorded)'}")
    png = plot_sweep(
        points, Path(args.out) / "sweep.png", title=f"{args.design} on LFE5U-85F: resources and Fmax vs lanes"
    )
    print(f"plot: {png}; total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
