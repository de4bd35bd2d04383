"""A real local Ray cluster (2 CPUs): the front of a small space through Ray equals brute force in this process."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from explore_sweep import sweep_file

from base.executor import LocalExecutor, RayExecutor
from explore import load_space, run_space

OBJ = ("decode_tokens_per_s", "lut")


def _space(tmp_path: Path, **search):
    sweep_file(tmp_path)
    data = {
        "name": "ray",
        "hardware": "u280-accllm",
        "models": ["llama-2-7b"],
        "schemes": ["w4a16", "accllm"],
        "hardware_axes": {
            "fpga.attention_lanes": [2, 4, 8, 16],
            "fpga.attention_engines": [1, 4, 16, 32],
            "memory.bandwidth_bytes_per_s": [230e9, 460e9],
        },
        "objectives": list(OBJ),
        "resource_model": "sweep.json",
        "workload": {"batch": [1], "prompt_len": [1024], "gen_len": [32]},
        "search": {"chunk": 8, **search},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(data))
    return load_space(tmp_path / "space.yaml")


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 2**20)
    yield ray
    ray.shutdown()


def test_ray_front_equals_brute_force_and_resumes(tmp_path, ray_cluster):
    sp = _space(tmp_path)
    brute = run_space(sp, LocalExecutor(), None)
    ex = RayExecutor()  # joins the running instance
    assert ex.workers == 2
    streamed = []
    res = run_space(sp, ex, tmp_path / "out", progress=lambda d, t: streamed.append(d))
    assert [r["id"] for r in res.pareto] == [r["id"] for r in brute.pareto] and len(res.pareto) >= 2
    assert res.n_points == brute.n_points == 64 and res.executor == "ray"
    assert len(streamed) > 2 and streamed == sorted(streamed)  # results came back job by job
    pts = tmp_path / "out" / "points.jsonl"
    pts.write_text("".join(pts.read_text().splitlines(keepends=True)[:20]))
    again = run_space(sp, ex, tmp_path / "out")
    assert again.n_resumed == 20 and again.n_evaluated == 44
    assert [r["id"] for r in again.pareto] == [r["id"] for r in brute.pareto]
    ex.close()
    assert ray_cluster.is_initialized()  # an executor that joined does not shut the cluster down


def test_nsga2_generations_run_on_ray(tmp_path, ray_cluster):
    sp = _space(tmp_path, method="nsga2", trials=30, population=10, seed=3)
    local = run_space(sp, LocalExecutor(), None)
    res = run_space(sp, RayExecutor(), None)
    assert [r["id"] for r in res.records] == [r["id"] for r in local.records]  # same seed, same points
    assert [r["id"] for r in res.pareto] == [r["id"] for r in local.pareto]
