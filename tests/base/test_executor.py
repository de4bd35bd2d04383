"""base/executor.py: local (inline, processes, threads) and Ray executors stream every result once."""

from __future__ import annotations

import socket

import pytest

from base.errors import SpecError
from base.executor import LocalExecutor, check_ray_address, make_executor


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise SpecError("three is not allowed")
    return x


@pytest.mark.parametrize(
    "ex", [LocalExecutor(), LocalExecutor(2), LocalExecutor(3, threads=True)], ids=["inline", "processes", "threads"]
)
def test_every_result_comes_back_once_with_its_index(ex):
    with ex:
        got = list(ex.imap_unordered(square, range(9)))
    assert sorted(got) == [(i, i * i) for i in range(9)]
    assert list(LocalExecutor().imap_unordered(square, [])) == []


def test_a_job_error_reaches_the_caller():
    with LocalExecutor(2) as ex, pytest.raises(SpecError, match="three is not allowed"):
        list(ex.imap_unordered(fail_on_three, range(6)))


def test_bad_arguments():
    with pytest.raises(SpecError, match="workers must be a positive integer"):
        LocalExecutor(0)
    with pytest.raises(SpecError, match="unknown executor 'dask'"):
        make_executor("dask")
    with pytest.raises(SpecError, match="--ray-address needs --executor ray"):
        make_executor("local", address="1.2.3.4:6379")
    assert make_executor("local", workers=2).workers == 2


def test_ray_addresses_are_checked_within_seconds():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SpecError, match="cannot reach the Ray cluster"):
        check_ray_address(f"127.0.0.1:{port}")
    for bad in ("localhost", "host:notaport", ":6379", "h:0"):
        with pytest.raises(SpecError, match="is not host:port"):
            check_ray_address(bad)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        check_ray_address(f"ray://127.0.0.1:{srv.getsockname()[1]}")  # something listens: reachable


def test_ray_executor_runs_jobs_as_ray_tasks():
    import ray

    from base.executor import RayExecutor

    ex = RayExecutor(workers=2)
    try:
        assert ray.is_initialized() and ex.workers == 2
        assert sorted(ex.imap_unordered(square, range(7))) == [(i, i * i) for i in range(7)]
        with pytest.raises(SpecError, match="three is not allowed"):
            list(ex.imap_unordered(fail_on_three, range(5)))
    finally:
        ex.close()
    assert not ray.is_initialized()  # the instance it started is shut down
