"""Run a space: exhaustive or NSGA-II search through an executor, every record streamed to --out, resumable.

Output directory (all JSON, no pickle):

* ``space.json``: the space as read and its fingerprint; a run into a directory holding another space is refused;
* ``points.jsonl``: one record per evaluated point, appended as each job comes back. A killed run resumes from it:
  points already there are not evaluated again (a torn last line is dropped);
* ``pareto.json`` (the front and the counts) and ``pareto.png`` (the plot), written at the end.

Search: ``exhaustive`` evaluates every point; ``nsga2`` runs optuna's NSGA-II sampler, ask-and-tell, one
generation of ``population`` trials at a time through the same executor, for ``trials`` trials (a trial that proposes
a point already evaluated is told its recorded figures: only new points cost an evaluation).
Optuna over pymoo: the axes are categorical (models, schemes, workloads) and integer (indices of a hardware axis's
values), which optuna's distributions take as they are, and its ask-and-tell interface lets every generation go
through the executor without wrapping it in an optimiser's own parallel backend; it is one pure-Python wheel.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.errors import SpecError
from base.specio import to_plain
from explore.evaluate import evaluate_job
from explore.pareto import pareto_front

__all__ = ["ExploreResult", "run_space", "choose_method", "POINTS_FILE"]

POINTS_FILE = "points.jsonl"
SPACE_FILE = "space.json"
PARETO_FILE = "pareto.json"
PLOT_FILE = "pareto.png"
STALE_GENERATIONS = 5  # NSGA-II stops when this many generations in a row propose only points it has seen


@dataclass
class ExploreResult:
    """What a run found: every record it holds (resumed + new), the front, and what was done."""

    space: Any
    method: str
    records: list[dict]
    pareto: list[dict]
    n_evaluated: int  # evaluated by this run (not taken from --out)
    n_resumed: int  # taken from --out
    seconds: float
    executor: str
    workers: int
    files: dict[str, str] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        return len(self.records)

    @property
    def n_feasible(self) -> int:
        return sum(1 for r in self.records if r.get("feasible"))

    @property
    def n_errors(self) -> int:
        return sum(1 for r in self.records if r.get("error"))

    def summary(self) -> dict[str, Any]:
        return {
            "space": self.space.spec.name,
            "method": self.method,
            "n_points": self.n_points,
            "space_points": self.space.n_points,
            "n_feasible": self.n_feasible,
            "n_errors": self.n_errors,
            "n_evaluated": self.n_evaluated,
            "n_resumed": self.n_resumed,
            "seconds": round(self.seconds, 3),
            "executor": self.executor,
            "workers": self.workers,
            "objectives": list(self.space.spec.objectives),
            "pareto": self.pareto,
            "files": self.files,
            "resource_model": None
            if self.space.resource_model is None
            else {"source": self.space.resource_model.source, "fit_error": self.space.resource_model.error_rows()},
        }


def choose_method(space: Any) -> str:
    s = space.spec.search
    if s.method != "auto":
        return s.method
    return "exhaustive" if space.n_points <= s.max_exhaustive else "nsga2"


class _Store:
    """points.jsonl in --out (or nothing without --out): the records so far, appended job by job."""

    def __init__(self, out: Path | None, space: Any, fp: str) -> None:
        self.out = out
        self.records: dict[int, dict] = {}
        self._fh = None
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        meta = out / SPACE_FILE
        if meta.exists():
            try:
                old = json.loads(meta.read_text(encoding="utf-8"))
                old_fp = old["fingerprint"]
            except (OSError, ValueError, KeyError, TypeError):
                raise SpecError(f"{meta} is not a space record of `hwsim explore`; choose another --out") from None
            if old_fp != fp:
                raise SpecError(
                    f"--out {out} holds a run of a different space ({old.get('name')!r}, fingerprint "
                    f"{old_fp}); choose another --out or remove it"
                )
        else:
            meta.write_text(
                json.dumps(
                    {
                        "name": space.spec.name,
                        "fingerprint": fp,
                        "source": space.source,
                        "space_points": space.n_points,
                        "spec": to_plain(space.spec),
                    },
                    indent=1,
                    default=str,
                )
                + "\n",
                encoding="utf-8",
            )
        path = out / POINTS_FILE
        good = 0
        if path.exists():
            with open(path, "rb") as fh:
                for line in fh:
                    if not line.endswith(b"\n"):
                        break  # torn by a kill: dropped, evaluated again
                    try:
                        rec = json.loads(line)
                        self.records[int(rec["id"])] = rec
                    except (ValueError, KeyError, TypeError):
                        break
                    good += len(line)
            if good != path.stat().st_size:
                with open(path, "r+b") as fh:
                    fh.truncate(good)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def add(self, recs: list[dict]) -> None:
        for r in recs:
            self.records[r["id"]] = r
        if self._fh is not None:
            self._fh.write("".join(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n" for r in recs))
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def run_space(
    space: Any,
    executor: Any,
    out: str | Path | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    method: str | None = None,
) -> ExploreResult:
    """Search `space` with `executor` (base.executor), recording into `out`; see the module docstring.
    `progress(done, total)` is called as jobs come back."""
    t0 = time.perf_counter()
    fp = space.fingerprint()
    method = method or choose_method(space)
    out_path = Path(out) if out is not None else None
    store = _Store(out_path, space, fp)
    resumed = len(store.records)
    evaluated = 0
    try:
        if method == "exhaustive":
            evaluated = _exhaustive(space, executor, store, fp, progress)
        else:
            evaluated = _nsga2(space, executor, store, fp, progress)
    finally:
        store.close()
    records = [store.records[k] for k in sorted(store.records)]
    if records and all(r.get("error") for r in records):
        raise SpecError(f"every point failed; the first: {records[0]['error']}")
    objectives = tuple(space.spec.objectives)
    front = pareto_front(records, objectives)
    result = ExploreResult(
        space=space,
        method=method,
        records=records,
        pareto=front,
        n_evaluated=evaluated,
        n_resumed=resumed,
        seconds=time.perf_counter() - t0,
        executor=executor.name,
        workers=executor.workers,
    )
    if out_path is not None:
        from explore.plot import plot_front

        result.files = {
            "points": str(out_path / POINTS_FILE),
            "pareto": str(out_path / PARETO_FILE),
            "plot": str(out_path / PLOT_FILE),
        }
        plot_front(records, front, objectives, out_path / PLOT_FILE, title=space.spec.name)
        tmp = out_path / f".{PARETO_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(result.summary(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, out_path / PARETO_FILE)
    return result


def _exhaustive(space: Any, executor: Any, store: _Store, fp: str, progress) -> int:
    total = space.n_points
    todo = [pid for pid in range(total) if pid not in store.records]
    done = total - len(todo)
    if progress:
        progress(done, total)
    size = max(1, min(space.spec.search.chunk, -(-len(todo) // max(1, 4 * executor.workers))))
    jobs = [(fp, space, chunk) for chunk in _chunks(todo, size)]
    evaluated = 0
    for _, recs in executor.imap_unordered(evaluate_job, jobs):
        store.add(recs)
        evaluated += len(recs)
        done += len(recs)
        if progress:
            progress(done, total)
    return evaluated


def _nsga2(space: Any, executor: Any, store: _Store, fp: str, progress) -> int:
    import warnings

    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    from explore.space import OBJECTIVES

    s = space.spec.search
    objectives = tuple(space.spec.objectives)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists: dict[str, Any] = {}
    if len(space.variants) > 1:
        dists["variant"] = CategoricalDistribution(list(range(len(space.variants))))
    if len(space.workloads) > 1:
        dists["workload"] = CategoricalDistribution(list(range(len(space.workloads))))
    if len(space.fidelities) > 1:
        dists["fidelity"] = CategoricalDistribution(list(range(len(space.fidelities))))
    for path, values in space.hw_axes:
        if len(values) > 1:
            dists[path] = IntDistribution(0, len(values) - 1)

    def pid_of(params: dict) -> int:
        h = 0
        for path, values in space.hw_axes:
            h = h * len(values) + int(params.get(path, 0))
        return space.encode(
            int(params.get("variant", 0)), int(params.get("workload", 0)), int(params.get("fidelity", 0)), h
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.NSGAIISampler(population_size=s.population, seed=s.seed)
        study = optuna.create_study(
            directions=["maximize" if OBJECTIVES[o][0] == "max" else "minimize" for o in objectives], sampler=sampler
        )
    evaluated = 0
    asked = 0
    seen: set[int] = set()
    stale = 0  # generations in a row that proposed no point not seen before
    if progress:
        progress(0, s.trials)
    while asked < s.trials and len(seen) < space.n_points and stale < STALE_GENERATIONS:
        trials = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for _ in range(min(s.population, s.trials - asked)):
                trials.append(study.ask(dists))
        asked += len(trials)
        pids = [pid_of(t.params) for t in trials]
        stale = 0 if any(p not in seen for p in pids) else stale + 1
        new = sorted({p for p in pids if p not in store.records})
        if new:
            size = max(1, -(-len(new) // executor.workers))
            jobs = [(fp, space, c) for c in _chunks(new, size)]
            for _, recs in executor.imap_unordered(evaluate_job, jobs):
                store.add(recs)
                evaluated += len(recs)
        for t, pid in zip(trials, pids):
            rec = store.records[pid]
            seen.add(pid)
            vals = [rec.get(o) for o in objectives]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if rec.get("error") and any(v is None for v in vals):
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
                    continue
                t.set_constraint("feasible", 0.0 if rec.get("feasible") else 1.0)
                study.tell(t, [float(v) for v in vals])
        if progress:
            progress(asked, s.trials)
    return evaluated
