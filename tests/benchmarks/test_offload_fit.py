"""benchmarks/offload_fit.py: a device run's measurements become a platform `hwsim offload` loads."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from offload import get_platform

ROOT = Path(__file__).resolve().parents[2]


def _fit():
    spec = importlib.util.spec_from_file_location("offload_fit", ROOT / "benchmarks" / "offload_fit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _doc(with_disk=True):
    """A runner document with round numbers (the runner's keys, synthetic values)."""
    pts = []
    for b, h in ((8, 32), (32, 16), (32, 32)):
        for c in (512, 2048):
            kv = 2 * c * b * h * 128 * 2
            pts.append(
                {
                    "batch": b,
                    "heads": h,
                    "head_dim": 128,
                    "context": c,
                    "kv_bytes": kv,
                    "seconds": 2e-4 + 3e-7 * b * h + kv / 15e9,
                }
            )
    links = {
        "copies": {
            "bytes": 2**29,
            "h2d_pinned_s": 2**29 / 50e9,
            "d2h_pinned_s": 2**29 / 48e9,
            "h2d_pageable_s": 2**29 / 20e9,
            "d2h_pageable_s": 2**29 / 15e9,
            "duplex_pinned_s": 0.02,
            "h2d_pinned_4KiB_s": 4096 / 50e9 + 8e-6,
        },
        "gpu": {
            "gemm_8192_fp16_s": 2 * 8192**3 / 750e12,
            "gemm_flops": 2.0 * 8192**3,
            "d2d_copy_s": 4 * 2**30 / 3.0e12,
            "d2d_copy_bytes_moved": 4 * 2**30,
            "name": "NVIDIA H100 80GB HBM3",
            "memory_bytes": 85 * 10**9,
        },
        "host": {
            "copy_s": 2 * 2**30 / 40e9,
            "copy_bytes_moved": 2 * 2**30,
            "gemm_2048_fp32_s": 2 * 2048**3 / 1e12,
            "gemm_flops": 2.0 * 2048**3,
        },
        "cpu_attention": pts,
        "compression": {
            "fp16_bytes": 2**27,
            "packed_bytes": 2**27 * 34 // 128,
            "gpu_quantize_s": 1e-3,
            "gpu_dequantize_s": 5e-4,
            "cpu_quantize_s": 0.5,
            "cpu_dequantize_s": 0.2,
        },
    }
    if with_disk:
        links["disk"] = {
            "bytes": 2**30,
            "read_s": 2**30 / 3e9,
            "read_4threads_s": 2**30 / 4e9,
            "write_s": 2**30 / 2e9,
            "method": "O_DIRECT",
        }
    env = {
        "nvidia_smi": "NVIDIA H100 80GB HBM3, 5, 16, 5, 16, 1980, 2619, 580",
        "date_utc": "synthetic",
        "cpu_model": "test CPU",
        "mem_total_kb": 128 * 2**20,
    }
    runs = [{"name": "overhead-probe", "seconds_per_layer": 1.5e-4}]
    return {"environment": env, "links": links, "runs": runs}


def test_cpu_attention_fit_recovers_its_parameters():
    fit = _fit().fit_cpu_attention(_doc()["links"]["cpu_attention"])
    assert fit["call_s"] == pytest.approx(2e-4, rel=1e-6)
    assert fit["per_head_s"] == pytest.approx(3e-7, rel=1e-6)
    assert fit["bytes_per_s"] == pytest.approx(15e9, rel=1e-6)


@pytest.mark.parametrize("with_disk", [True, False])
def test_fitted_platform_loads_with_every_number_sourced(tmp_path, with_disk):
    plat, gpu, _ = _fit().build(_doc(with_disk))
    (tmp_path / "offload_device_platform.yaml").write_text(yaml.safe_dump(plat))
    (tmp_path / "offload_device_gpu.yaml").write_text(yaml.safe_dump(gpu))
    p = get_platform(tmp_path / "offload_device_platform.yaml")
    assert p.gpu_link.bytes_per_s == pytest.approx(50e9, rel=1e-3)
    assert p.gpu_link.pageable_bytes_per_s == pytest.approx(20e9, rel=1e-3)
    assert p.gpu_link.latency_s == pytest.approx(8e-6, rel=1e-3)
    assert p.gpu_spec.memory.effective_bandwidth_bytes_per_s == pytest.approx(3.0e12, rel=1e-3)
    assert p.host.cpu_attention.bytes_per_s == pytest.approx(15e9, rel=1e-6)
    assert p.gpu_kernel_overhead_s == pytest.approx(1.5e-4)
    assert ("assumption" in plat["sources"]["ssd"]) is not with_disk
    assert set(plat["sources"]) >= {"gpu_link.efficiency", "host.cpu_attention", "compression", "ssd"}
