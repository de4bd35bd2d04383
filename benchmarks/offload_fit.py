"""Turn the device machine's measurements (benchmarks/data/offload_device.json, written by offload_runner.py) into
a platform YAML for `hwsim offload` (benchmarks/data/offload_device_platform.yaml) and, when hwsim has no spec of
the device's GPU, a GPU spec beside it (benchmarks/data/offload_device_gpu.yaml).

Every field is a measured figure or a data-sheet figure, and its `sources` entry says which and how it was derived:

* PCIe: efficiency = measured pinned host->GPU rate / raw rate of the link nvidia-smi reports; pageable likewise;
  latency = time of a 4 KiB copy less its bytes at the measured rate.
* GPU: memory efficiency = measured device-to-device copy rate / data-sheet peak; matrix efficiency = measured
  8192^3 fp16 GEMM rate / data-sheet peak; per-layer overhead = seconds per layer of a decode layer whose arithmetic
  is negligible (hidden 256, batch 1, everything on the GPU).
* Host: DRAM bandwidth = measured copy; CPU FLOP/s = measured fp32 GEMM; CPU attention = least-squares fit of
  ``call_s + per_head_s * batch * heads + kv_bytes / bytes_per_s`` to timings over batch, heads and context.
* Compression: each fraction = (packed + fp16 bytes) / measured time / the memory bandwidth it runs against.
* Disk: O_DIRECT sequential read (four threads, the better of one and four) and write.

Usage: .venv/bin/python benchmarks/offload_fit.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
sys.path.insert(0, str(ROOT))

from offload.platform import PCIE_LANE_BYTES_PER_S  # noqa: E402

# Data-sheet peaks by the name torch reports (NVIDIA H100 / H200 data sheets, SXM form factor, dense fp16 tensor).
GPU_SHEETS = {
    "NVIDIA H100 80GB HBM3": dict(spec="h100-sxm", memory_bandwidth=3.35e12, fp16=989.4e12, kind="hbm3"),
    "NVIDIA H200": dict(spec=None, memory_bandwidth=4.8e12, fp16=989.4e12, kind="hbm3e"),
}


def _gpu(env: dict, gpu: dict) -> tuple[str, dict | None, dict]:
    """(the platform's gpu field, a GPU spec mapping to write or None, notes)."""
    sheet = GPU_SHEETS.get(gpu["name"])
    if sheet is None:
        raise SystemExit(f"no data-sheet entry for GPU {gpu['name']!r}; add it to GPU_SHEETS with its source")
    mem_rate = gpu["d2d_copy_bytes_moved"] / gpu["d2d_copy_s"]
    gemm_rate = gpu["gemm_flops"] / gpu["gemm_8192_fp16_s"]
    notes = {
        "memory_efficiency": mem_rate / sheet["memory_bandwidth"],
        "matrix_efficiency": gemm_rate / sheet["fp16"],
        "memory_bandwidth": sheet["memory_bandwidth"],
    }
    spec = {
        "name": "device-gpu",
        "kind": "gpu",
        "description": f"{gpu['name']} as measured on the device machine",
        "freq_hz": 1.98e9,
        "memory": {
            "kind": sheet["kind"],
            "capacity_bytes": int(gpu["memory_bytes"]),
            "bandwidth_bytes_per_s": sheet["memory_bandwidth"],
            "efficiency": round(min(1.0, notes["memory_efficiency"]), 4),
        },
        "compute": {
            "peak_ops_per_s": {"w16a16": sheet["fp16"]},
            "matrix_efficiency": round(min(1.0, notes["matrix_efficiency"]), 4),
            "vector_ops_per_s": 66.9e12,
        },
        "on_chip_bytes": 52428800,
        "sources": {
            "memory.capacity_bytes": "torch.cuda.get_device_properties on the device machine",
            "memory.bandwidth_bytes_per_s": "NVIDIA H100/H200 data sheet (SXM) peak",
            "memory.efficiency": f"measured: 2 GiB device-to-device copy at {mem_rate / 1e12:.2f} TB/s (read + write) "
            "of the data-sheet peak (benchmarks/data/offload_device.json)",
            "compute.peak_ops_per_s": "NVIDIA H100/H200 data sheet: 989.4 TFLOPS dense fp16 tensor",
            "compute.matrix_efficiency": f"measured: 8192^3 fp16 GEMM at {gemm_rate / 1e12:.0f} TFLOP/s",
            "freq_hz": "NVIDIA H100 whitepaper: max boost 1,980 MHz (informative only)",
            "compute.vector_ops_per_s": "NVIDIA H100 data sheet (SXM5): 66.9 TFLOPS fp32 (informative only)",
            "on_chip_bytes": "50 MB L2 (device KINDS.md; informative only)",
        },
    }
    return "offload_device_gpu.yaml", spec, notes


def _pcie(env: dict) -> tuple[int, int]:
    smi = env.get("nvidia_smi", "")
    parts = [p.strip() for p in smi.split(",")]
    try:  # name, gen.current, width.current, gen.max, width.max, ...
        return int(parts[3]), int(parts[4])
    except (IndexError, ValueError):
        return 5, 16  # H100/H200 SXM: PCIe Gen5 x16 (data sheet)


def fit_cpu_attention(points: list[dict]) -> dict:
    """Non-negative least squares of seconds = call_s + per_head_s * batch * heads + kv_bytes / bytes_per_s."""
    from scipy.optimize import nnls

    A = np.array([[1.0, p["batch"] * p["heads"], p["kv_bytes"]] for p in points])
    y = np.array([p["seconds"] for p in points])
    scale = A.max(axis=0)
    coef, _ = nnls(A / scale, y)
    coef = coef / scale
    pred = A @ coef
    err = float(np.max(np.abs(pred - y) / y))
    return {
        "call_s": float(coef[0]),
        "per_head_s": float(coef[1]),
        "bytes_per_s": float(1.0 / coef[2]),
        "max_rel_error": err,
    }


def build(doc: dict) -> tuple[dict, dict | None, dict]:
    env, links = doc["environment"], doc["links"]
    c, g, h, d = links["copies"], links["gpu"], links["host"], links.get("disk", {})
    gen, lanes = _pcie(env)
    raw = PCIE_LANE_BYTES_PER_S[gen] * lanes
    h2d, d2h = c["bytes"] / c["h2d_pinned_s"], c["bytes"] / c["d2h_pinned_s"]
    h2d_pg = c["bytes"] / c["h2d_pageable_s"]
    lat = max(0.0, c["h2d_pinned_4KiB_s"] - 4096 / h2d)
    gpu_field, gpu_spec, notes = _gpu(env, g)
    dram_bw = h["copy_bytes_moved"] / h["copy_s"]
    cpu_flops = h["gemm_flops"] / h["gemm_2048_fp32_s"]
    ca = fit_cpu_attention(links["cpu_attention"])
    probe = next(r for r in doc["runs"] if r["name"] == "overhead-probe")
    comp = links["compression"]
    touched = comp["fp16_bytes"] + comp["packed_bytes"]
    gbw = notes["memory_bandwidth"]

    def frac(t: float, bw: float) -> float:
        return round(min(1.0, touched / t / bw), 5)

    if "read_s" in d:
        read = max(d["bytes"] / d["read_s"], d["bytes"] / d["read_4threads_s"])
        write = d["bytes"] / d["write_s"]
        disk_source = (
            f"{{measured}}: 1 GiB sequential file, {d.get('method')}, 64 MiB requests; capacity is the "
            "machine's 64 GiB disk; the link is not measured separately and set not to bind"
        )
    else:  # the lease ended before the disk was measured: no placement of this run uses it
        read, write = 2.0e9, 1.0e9
        disk_source = (
            "assumption, not measured (the lease ended first): a generic NVMe drive, 2 GB/s read, "
            "1 GB/s write; no measured placement uses the disk"
        )
    when = env["date_utc"]
    measured = f"measured on the device machine {when} (benchmarks/data/offload_device.json)"
    plat = {
        "name": "device",
        "description": f"the device machine: {g['name']}, {env.get('cpu_model', 'CPU')}, local disk",
        "gpu": gpu_field,
        "gpu_reserved_bytes": 2147483648,
        "gpu_kernel_overhead_s": round(probe["seconds_per_layer"], 8),
        "gpu_link": {
            "generation": gen,
            "lanes": lanes,
            "efficiency": round(h2d / raw, 4),
            "latency_s": round(lat, 8),
            "pageable_efficiency": round(h2d_pg / raw, 4),
        },
        "host": {
            "cpu": env.get("cpu_model", "unknown"),
            "dram_bytes": int(env.get("mem_total_kb", 0)) * 1024,
            "dram_reserved_bytes": 8589934592,
            "dram_bandwidth_bytes_per_s": round(dram_bw, -6),
            "cpu_flops_per_s": round(cpu_flops, -6),
            "cpu_attention_efficiency": 0.5,
            "cpu_attention": {k: ca[k] for k in ("bytes_per_s", "call_s", "per_head_s")},
        },
        "ssd": {
            "model": "device machine local disk",
            "count": 1,
            "capacity_bytes": 64 * 2**30,
            "read_bytes_per_s": round(read, -6),
            "write_bytes_per_s": round(write, -6),
            "latency_s": 1.0e-4,
            "queue_depth": 4,
            "link": {"generation": 5, "lanes": 4, "efficiency": 1.0, "latency_s": 0.0},
        },
        "compression": {
            "gpu_dequant_bandwidth_fraction": frac(comp["gpu_dequantize_s"], gbw),
            "gpu_quant_bandwidth_fraction": frac(comp["gpu_quantize_s"], gbw),
            "cpu_dequant_bandwidth_fraction": frac(comp["cpu_dequantize_s"], dram_bw),
            "cpu_quant_bandwidth_fraction": frac(comp["cpu_quantize_s"], dram_bw),
        },
        "sources": {
            "gpu": "offload_device_gpu.yaml beside this file (relative path, resolved against this folder)",
            "gpu_reserved_bytes": "assumption: 2 GiB for the CUDA context and PyTorch allocator pools",
            "gpu_kernel_overhead_s": f"{measured}: seconds per layer of a decode layer with hidden 256, batch 1, "
            "all on the GPU (launches + per-layer synchronisation)",
            "gpu_link.generation": "nvidia-smi pcie.link.gen.max / width.max on the device machine",
            "gpu_link.efficiency": f"{measured}: 512 MiB pinned host->GPU copy at {h2d / 1e9:.1f} GB/s of "
            f"{raw / 1e9:.1f} GB/s raw (GPU->host {d2h / 1e9:.1f} GB/s)",
            "gpu_link.pageable_efficiency": f"{measured}: pageable host->GPU copy at {h2d_pg / 1e9:.1f} GB/s",
            "gpu_link.latency_s": f"{measured}: a 4 KiB pinned copy less its bytes at the measured rate",
            "host.cpu": "/proc/cpuinfo on the device machine",
            "host.dram_bytes": "/proc/meminfo MemTotal on the device machine",
            "host.dram_reserved_bytes": "assumption: 8 GiB for the OS and the Python process",
            "host.dram_bandwidth_bytes_per_s": f"{measured}: 1 GiB fp32 tensor copy, read + write bytes",
            "host.cpu_flops_per_s": f"{measured}: 2048^3 fp32 GEMM (torch, all threads)",
            "host.cpu_attention_efficiency": "unused: host.cpu_attention is measured",
            "host.cpu_attention": f"{measured}: least-squares fit over (batch, heads) (8, 32), (32, 16), (32, 32) "
            f"x context {{512, 2048}} (head_dim 128), max error {ca['max_rel_error']:.0%}",
            "ssd": disk_source.format(measured=measured),
            "compression": f"{measured}: torch 4-bit group-64 (de)compression of 64 Mi fp16 values; fraction = "
            "(packed + fp16 bytes) / time / (GPU data-sheet bandwidth or measured DRAM bandwidth)",
        },
    }
    return plat, gpu_spec, {"cpu_attention_fit": ca, **notes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=str(DATA / "offload_device.json"))
    args = ap.parse_args()
    doc = json.loads(Path(args.json).read_text())
    plat, gpu_spec, notes = build(doc)
    header = (
        "# Generated by benchmarks/offload_fit.py from benchmarks/data/offload_device.json (measured by\n"
        "# benchmarks/offload_runner.py on the device machine); regenerate, do not edit.\n"
    )
    (DATA / "offload_device_platform.yaml").write_text(header + yaml.safe_dump(plat, sort_keys=False, width=120))
    if gpu_spec is not None:
        (DATA / "offload_device_gpu.yaml").write_text(header + yaml.safe_dump(gpu_spec, sort_keys=False, width=120))
    print(json.dumps(notes, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
