"""Utilisation/Fmax sweeps over lanes (and head_dim): one build per point, a table and a matplotlib plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from base.outputs import claim_dir
from fpga._config import BuildConfig, check_design, check_jobs
from fpga._flow import build
from fpga._report import RESOURCES, BuildReport, DoesNotFit
from fpga._toolchain import Listener

__all__ = ["SweepPoint", "sweep", "sweep_rows", "plot_sweep"]


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a sweep: its build report, or why it does not fit the part."""

    config: BuildConfig
    report: BuildReport | None
    does_not_fit: str | None = None

    @property
    def fits(self) -> bool:
        return self.report is not None


def sweep(
    *,
    board: str,
    lanes: list[int],
    head_dims: list[int],
    freq_mhz: float,
    out_root: str | Path,
    design: str = "engine",
    listener: Listener | None = None,
    jobs: int = 1,
    router: str = "router2",
    seeds: tuple[int, ...] = (1,),
    executor=None,
) -> list[SweepPoint]:
    """Build every (head_dim, lanes) point into out_root/<design>-d<D>-l<L>, `jobs` builds at a time (nextpnr is
    single-threaded, so a many-core machine sweeps in the time of its largest point).

    With several `seeds`, each point is placed and routed once per seed (one after the other within the point)
    and keeps its best. A point that synthesis shows cannot fit is recorded (with the overflowing resources)
    instead of stopping the sweep; any other error stops it. Points come back in (head_dim, lanes) order whatever
    finished first.
    """
    check_jobs(jobs)
    configs = [
        BuildConfig(
            board=board, lanes=n, head_dim=head_dim, freq_mhz=freq_mhz, design=design, router=router, seeds=tuple(seeds)
        )
        for head_dim in head_dims
        for n in lanes
    ]
    for config in configs:  # every point is checked before any synthesis (--lanes 2,128: 128 refused first)
        check_design(config)
        claim_dir(Path(out_root) / f"{config.design}-d{config.head_dim}-l{config.lanes}", "hwsim fpga build")

    def one(config: BuildConfig) -> SweepPoint:
        out = Path(out_root) / f"{config.design}-d{config.head_dim}-l{config.lanes}"
        tagged = _Tagged(listener, f"l{config.lanes} d{config.head_dim}") if listener and jobs > 1 else listener
        try:
            return SweepPoint(config, build(config, out, listener=tagged).report)
        except DoesNotFit as exc:
            return SweepPoint(config, None, str(exc))

    if executor is not None:  # base.executor: each point a job (local workers or a Ray cluster on this file system)
        shared = listener if getattr(executor, "threads", False) else None  # a listener cannot leave this process
        points: list = [None] * len(configs)
        for i, point in executor.imap_unordered(_sweep_job, [(c, str(out_root), shared) for c in configs]):
            points[i] = point
        return points
    if jobs == 1 or len(configs) == 1:
        return [one(c) for c in configs]
    from concurrent.futures import ThreadPoolExecutor  # each build runs its tools as subprocesses

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, configs))


def _sweep_job(job: tuple) -> SweepPoint:
    """One sweep point as an executor job: its build, or why it does not fit."""
    config, out_root, listener = job
    out = Path(out_root) / f"{config.design}-d{config.head_dim}-l{config.lanes}"
    tagged = _Tagged(listener, f"l{config.lanes} d{config.head_dim}") if listener else None
    try:
        return SweepPoint(config, build(config, out, listener=tagged).report)
    except DoesNotFit as exc:
        return SweepPoint(config, None, str(exc))


class _Tagged:
    """A listener shared by concurrent builds: each build's steps get its own key and a label."""

    def __init__(self, inner: Listener, tag: str) -> None:
        self.inner, self.tag = inner, tag

    def start(self, step: str, text: str) -> None:
        self.inner.start(f"{self.tag}/{step}", f"[{self.tag}] {text}")

    def done(self, step: str, seconds: float) -> None:
        self.inner.done(f"{self.tag}/{step}", seconds)

    def note(self, text: str) -> None:
        self.inner.note(f"[{self.tag}] {text}")


def sweep_rows(points: list[SweepPoint]) -> list[dict]:
    """Plain rows: head_dim, lanes, used resources (and % of the part), Fmax, timing pass, or 'does not fit'."""
    rows = []
    for p in points:
        row: dict = {"head_dim": p.config.head_dim, "lanes": p.config.lanes, "fits": p.fits}
        if p.report is None:
            row["does_not_fit"] = p.does_not_fit
        else:
            util = p.report.utilization
            for r in RESOURCES:
                row[r.key] = util[r.key].used
                row[f"{r.key}_pct"] = round(100.0 * util[r.key].share, 2)
            row["fmax_mhz"] = p.report.fmax_mhz
            row["timing_pass"] = p.report.timing_pass
            row["seed"] = p.report.seed
            row["build_s"] = round(sum(p.report.times_s.values()), 1)
        rows.append(row)
    return rows


def plot_sweep(points: list[SweepPoint], png: str | Path, *, title: str) -> Path:
    """Two panels vs lanes (log2 axis): resources in % of the part, and Fmax with the target. Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2))
    FigureCanvasAgg(fig)
    ax_res, ax_f = fig.subplots(1, 2)
    rows = [r for r in sweep_rows(points) if r["fits"]]
    head_dims = sorted({r["head_dim"] for r in rows})
    styles = ["-o", "--s", ":^", "-.d"]
    for hi, d in enumerate(head_dims):
        sel = [r for r in rows if r["head_dim"] == d]
        x = [r["lanes"] for r in sel]
        for ri, res in enumerate(RESOURCES):
            ax_res.plot(
                x,
                [r[f"{res.key}_pct"] for r in sel],
                styles[hi % len(styles)],
                color=f"C{ri}",
                label=f"{res.bel} (D={d})",
            )
        ax_f.plot(x, [r["fmax_mhz"] for r in sel], styles[hi % len(styles)], color="C4", label=f"Fmax (D={d})")
    if points:
        target = points[0].config.freq_mhz
        ax_f.axhline(target, color="grey", linestyle="--", label=f"target {target:g} MHz")
    for ax in (ax_res, ax_f):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("MAC lanes")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_res.set_ylabel("% of the part used")
    ax_f.set_ylabel("Fmax (MHz)")
    fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    return png
