"""Where independent jobs run: in this process, in local worker processes or threads, or on a Ray cluster.

One small interface serves every layer that fans work out (design-space exploration, place-and-route seeds, FPGA
sweeps): ``executor.imap_unordered(fn, items)`` runs ``fn(item)`` for every item and yields ``(index, result)``
as each job finishes, so callers can record results as they stream back and resume later from what they recorded.

* `LocalExecutor(workers=1)` runs jobs one after another in this process; ``workers > 1`` uses a pool of processes
  (CPU-bound Python) or threads (``threads=True``: jobs that wait on subprocesses, such as nextpnr).
* `RayExecutor(address=None, workers=N)` starts a local Ray instance with N CPUs, or joins the cluster at
  ``address`` (``host:port`` of a head started with ``ray start --head``, or ``ray://host:port`` for Ray Client).
  Every job is a Ray task with one CPU; ``fn`` must be a module-level function importable on every node (the
  project installed there), and jobs must not rely on this process's memory.

Ray (PyPI ``ray``, the ``explore`` extra) is imported only when a RayExecutor is created. An unreachable address is
reported as a one-line `SpecError` within seconds, before any work starts (Ray itself would retry for minutes).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from base.errors import SpecError

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor", "EXECUTORS", "check_ray_address"]

EXECUTORS = ("local", "ray")
CONNECT_TIMEOUT_S = 3.0  # TCP probe of a Ray address before joining it
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # a local instance's object store: results here are small JSON-like rows


class Executor(Protocol):
    """Runs independent jobs; results come back as they finish."""

    name: str
    workers: int

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, fn(items[index]))`` for every item, in completion order."""
        ...

    def close(self) -> None: ...


def _check_workers(workers: object) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpecError(f"workers must be a positive integer, got {workers!r}")
    return workers


class LocalExecutor:
    """Jobs on this machine: inline (one worker), or a process pool / thread pool of `workers`."""

    name = "local"

    def __init__(self, workers: int = 1, *, threads: bool = False) -> None:
        self.workers = _check_workers(workers)
        self.threads = threads
        self._pool = None

    def _get_pool(self):
        if self._pool is None:
            if self.threads:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=self.workers)
            else:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                # spawn: a fresh interpreter per worker (no fork of a process that runs a progress thread)
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
                )
        return self._pool

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        items = list(items)
        if self.workers == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                yield i, fn(item)
            return
        from concurrent.futures import FIRST_COMPLETED, wait

        pool = self._get_pool()
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_ray_address(address: str) -> None:
    """SpecError unless a TCP connection to the Ray address's host:port opens within CONNECT_TIMEOUT_S."""
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError(
            f"Ray address {address!r} is not host:port (or ray://host:port); e.g. --ray-address "
            "10.0.0.5:6379, the address `ray start --head` prints"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise SpecError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start its head with "
            "`ray start --head`, check the address, or drop --ray-address for a local instance"
        ) from None


class RayExecutor:
    """Jobs as Ray tasks (one CPU each) on a local instance started here, or on the cluster at `address`."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        if workers is not None:
            _check_workers(workers)
        if address is not None:
            check_ray_address(address)
        try:
            import ray
        except ImportError:
            raise SpecError("--executor ray needs Ray; install it with `pip install 'hwsim[explore]'`") from None
        self._ray = ray
        self._owned = False
        self.address = address
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
            if address is None:
                kwargs.update(num_cpus=workers or os.cpu_count() or 1, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
            else:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, SystemExit) as exc:  # Ray exits when the GCS never answers
                raise SpecError(f"cannot start or join Ray ({exc}); check --ray-address") from None
            self._owned = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = min(workers, cpus) if workers else cpus
        self._remote: dict[Callable, Any] = {}

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        ray = self._ray
        if fn not in self._remote:
            self._remote[fn] = ray.remote(num_cpus=1, max_retries=2)(fn)
        remote = self._remote[fn]
        refs = {remote.remote(item): i for i, item in enumerate(items)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # re-raise the job's own error (e.g. SpecError)
                        cause = getattr(exc, "cause", None)
                        raise (cause if isinstance(cause, BaseException) else exc) from None
                    yield refs[ref], result
        finally:
            for ref in pending:
                ray.cancel(ref)

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_executor(
    kind: str = "local", *, address: str | None = None, workers: int | None = None, threads: bool = False
) -> LocalExecutor | RayExecutor:
    """An executor by name: ``local`` (``workers`` processes, or threads) or ``ray`` (local instance or `address`)."""
    if kind not in EXECUTORS:
        raise SpecError(f"unknown executor {kind!r}; use one of {', '.join(EXECUTORS)}")
    if kind == "local":
        if address is not None:
            raise SpecError("--ray-address needs --executor ray")
        return LocalExecutor(workers or 1, threads=threads)
    return RayExecutor(address=address, workers=workers)
