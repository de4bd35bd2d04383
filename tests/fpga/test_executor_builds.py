"""`build(..., executor=)` and `sweep(..., executor=)`: place and route distributed through base.executor give the
same results as the local path (the small dot-product design; builds bitstreams, hence marked fpga)."""

from __future__ import annotations

import pytest

from base.executor import LocalExecutor, RayExecutor
from fpga import BuildConfig, build, sweep, sweep_rows

# fpga.sweep instantiates each point's design once to check its parameters before any build; that instance is never
# elaborated, and amaranth warns about it when it is collected
pytestmark = [pytest.mark.fpga, pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")]


def test_seeds_and_sweep_points_as_executor_jobs(tmp_path):
    cfg = BuildConfig(board="lfe5u-85f", lanes=2, head_dim=64, design="dot", seeds=(1, 2))
    plain = build(cfg, tmp_path / "plain")
    with LocalExecutor(2, threads=True) as ex:
        threaded = build(cfg, tmp_path / "threads", executor=ex)
    ray_ex = RayExecutor(workers=2)
    try:
        on_ray = build(cfg, tmp_path / "ray", executor=ray_ex)
        points = sweep(
            board="lfe5u-85f",
            lanes=[2, 4],
            head_dims=[64],
            freq_mhz=100.0,
            out_root=tmp_path / "sw",
            design="dot",
            executor=ray_ex,
        )
    finally:
        ray_ex.close()
    for r in (threaded, on_ray):  # same seeds, same placements, same bitstream
        assert r.report.seeds == plain.report.seeds and r.report.seed == plain.report.seed
        assert r.report.bitstream_sha256 == plain.report.bitstream_sha256
    rows = sweep_rows(points)
    assert [(r["head_dim"], r["lanes"]) for r in rows] == [(64, 2), (64, 4)] and all(r["fits"] for r in rows)
    assert rows[0]["fmax_mhz"] == pytest.approx(min(s.fmax_mhz for s in plain.report.seeds if s.seed == 1))
