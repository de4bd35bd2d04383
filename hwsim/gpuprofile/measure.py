"""Measure a GPU operator profile: every operator of the grid timed as CUDA-graph replays.

Protocol (the same for the end-to-end validation in `hwsim.gpuprofile.validate`):
* fp16 tensors filled with N(0, 0.02^2) random values (never zeros: they can run faster than real data);
* each point is warmed up eagerly on a side stream, then ``inner`` back-to-back calls are captured in one CUDA graph;
  the graph is replayed ``REPS`` times, each timed with CUDA events, and the median replay over ``inner`` is the
  operator's time; back-to-back calls include the in-graph gap between dependent kernels, as a forward pass does;
* weights and KV caches rotate over enough copies that one replay touches more than ``ROTATE_BYTES`` (4x the H100's
  50 MB L2), because a forward pass reads each layer's weights and cache once; activations do not rotate, because
  a forward pass hands them from one operator to the next through L2;
* while each table is measured, NVML samples the SM clock and board power every 2 ms (the table's ``clock``: mean
  and range of the clock, mean and peak power, the fraction of samples at the software power cap), so that a profile
  says at which clock its times hold (short bursts run at the boost clock; a long prefill runs power-capped).

Runs on CPU too (eager, host clock; for testing the harness), but profiles are taken on CUDA devices.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hwsim.gpuprofile import kernels as K
from hwsim.gpuprofile.clock import ClockSampler, NullSampler
from hwsim.gpuprofile.grid import OPERATORS

__all__ = ["Timer", "provenance", "run_profile", "FORMAT", "VERSION"]

FORMAT = "hwsim-gpu-profile"
VERSION = 1
REPS = 5
ROTATE_BYTES = 200 * 2**20
TARGET_GRAPH_S = 2e-3  # aim one graph replay at ~2 ms: launch overhead amortised, short runs
MAX_INNER = 64


class Timer:
    """Times callables on `device` by the protocol of the module docstring."""

    def __init__(self, device: torch.device, use_graph: bool = True, reps: int = REPS):
        self.device = device
        self.cuda = device.type == "cuda"
        self.use_graph = use_graph and self.cuda
        self.reps = reps

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def eager_once(self, fn: Callable[[int], Any]) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn(0)
        self.sync()
        return time.perf_counter() - t0

    def time(self, fn: Callable[[int], Any], copies: int = 1, inner: int | None = None) -> float:
        """Seconds per call of fn(i) (i = index of the copy to use, cycling over `copies`)."""
        if not self.cuda:
            fn(0)
            ts = []
            for r in range(self.reps):
                t0 = time.perf_counter()
                fn(r % copies)
                ts.append(time.perf_counter() - t0)
            return statistics.median(ts)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            fn(0)
            fn(1 % copies)
        torch.cuda.current_stream(self.device).wait_stream(side)
        est = self.eager_once(fn)
        if inner is None:
            inner = max(copies, min(MAX_INNER, math.ceil(TARGET_GRAPH_S / max(est, 1e-7))))
            inner = max(2, min(inner, MAX_INNER))
        if not self.use_graph:
            return self._events(lambda: [fn(i % copies) for i in range(inner)]) / inner
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(inner):
                fn(i % copies)
        g.replay()
        t = self._events(g.replay) / inner
        g.reset()
        return t

    def _events(self, run: Callable[[], Any]) -> float:
        ts = []
        for _ in range(self.reps):
            e0 = torch.cuda.Event(enable_timing=True)
            e1 = torch.cuda.Event(enable_timing=True)
            e0.record()
            run()
            e1.record()
            e1.synchronize()
            ts.append(e0.elapsed_time(e1) * 1e-3)
        return statistics.median(ts)


def _rand(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, device=device, dtype=dtype).normal_(0.0, 0.02)


def _copies(nbytes: int, cap: int = MAX_INNER) -> int:
    return max(1, min(cap, math.ceil(ROTATE_BYTES / max(nbytes, 1))))


def provenance(device: torch.device, dtype: torch.dtype, command: list[str]) -> dict[str, Any]:
    """Who measured what where: device, driver, versions, date, command."""
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(command),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "dtype": str(dtype).replace("torch.", ""),
        "device_type": device.type,
        "host_cpu": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            device_name=p.name,
            sm_count=p.multi_processor_count,
            memory_bytes=p.total_memory,
            compute_capability=f"{p.major}.{p.minor}",
            l2_bytes=getattr(p, "L2_cache_size", None),
            cudnn=torch.backends.cudnn.version(),
        )
        try:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem,power.limit",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
            drv, sm, mem, pl = (x.strip() for x in out.strip().splitlines()[0].split(","))
            info.update(driver=drv, max_sm_clock=sm, max_mem_clock=mem, power_limit=pl)
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            info["driver"] = None
    else:
        info["device_name"] = "cpu"
    return info


# ---- one function per operator: (key, axis point) -> seconds -------------------------------------------------------
class _Ops:
    def __init__(self, timer: Timer, dtype: torch.dtype):
        self.t = timer
        self.dev = timer.device
        self.dtype = dtype

    def r(self, *shape: int) -> torch.Tensor:
        return _rand(shape, self.dev, self.dtype)

    def linear(self, key: dict, tokens_axis: list[int]) -> list[float | None]:
        i, o = key["in"], key["out"]
        n = _copies(i * o * 2, 48)
        ws = [self.r(o, i) for _ in range(n)]
        bs = [self.r(o) for _ in range(n)] if key["bias"] else [None] * n
        out = []
        for T in tokens_axis:
            x = self.r(T, i)
            out.append(self.t.time(lambda c, x=x: K.linear(x, ws[c], bs[c]), n))
        return out

    def norm(self, key: dict, tokens_axis: list[int]) -> list[float | None]:
        w = key["width"]
        g = self.r(w) + 1
        b = self.r(w) if key["kind"] == "layer" else None
        res = []
        for T in tokens_axis:
            x = self.r(T, w)
            res.append(self.t.time(lambda c, x=x: K.norm(x, g, b, 1e-5)))
        return res

    def rope_table(self, key: dict, tokens_axis: list[int]) -> list[float | None]:
        D = key["head_dim"]
        cos_t, sin_t = self.r(65536, D // 2), self.r(65536, D // 2)
        res = []
        for T in tokens_axis:
            pos = torch.randint(0, 65536, (T,), device=self.dev)
            res.append(self.t.time(lambda c, pos=pos: K.rope_table(pos, cos_t, sin_t)))
        return res

    def rope(self, key: dict, tokens_axis: list[int]) -> list[float | None]:
        H, D = key["heads"], key["head_dim"]
        res = []
        for T in tokens_axis:
            x, cos, sin = self.r(T, H, D), self.r(T, 1, D // 2), self.r(T, 1, D // 2)
            res.append(self.t.time(lambda c, x=x, cos=cos, sin=sin: K.rope(x, cos, sin)))
        return res

    def activation(self, key: dict, tokens_axis: list[int]) -> list[float | None]:
        w, kind = key["width"], key["kind"]
        res = []
        for T in tokens_axis:
            a = self.r(T, w)
            b = self.r(T, w) if kind == "swiglu" else None
            res.append(self.t.time(lambda c, a=a, b=b: K.activation(kind, a, b)))
        return res

    def add(self, key: dict, tokens_axis: list[int]) -> list[float | None]:
        res = []
        for T in tokens_axis:
            x, y = self.r(T, key["width"]), self.r(T, key["width"])
            res.append(self.t.time(lambda c, x=x, y=y: K.add(x, y)))
        return res

    def embed(self, key: dict, tokens_axis: list[int]) -> list[float | None]:
        table = self.r(32000, key["width"])
        res = []
        for T in tokens_axis:
            ids = torch.randint(0, 32000, (T,), device=self.dev)
            res.append(self.t.time(lambda c, ids=ids: K.embed(ids, table)))
        return res

    def kv_append(self, key: dict, batch_axis: list[int]) -> list[float | None]:
        Hkv, D, C = key["kv_heads"], key["head_dim"], 1024
        res = []
        for B in batch_axis:
            kc, vc = self.r(B, Hkv, C, D), self.r(B, Hkv, C, D)
            k, v = self.r(B, Hkv * D), self.r(B, Hkv * D)
            pos = torch.tensor([C // 2], device=self.dev)
            res.append(self.t.time(lambda c, kc=kc, vc=vc, k=k, v=v, pos=pos: K.kv_append(kc, vc, k, v, pos)))
        return res

    def kv_write(self, key: dict, tokens_axis: list[int]) -> list[float | None]:
        Hkv, D = key["kv_heads"], key["head_dim"]
        res = []
        for T in tokens_axis:
            n = _copies(T * Hkv * D * 4, 16)
            caches = [(self.r(1, Hkv, T, D), self.r(1, Hkv, T, D)) for _ in range(n)]
            k, v = self.r(1, T, Hkv, D), self.r(1, T, Hkv, D)
            res.append(self.t.time(lambda c, cs=caches, k=k, v=v: K.kv_write(cs[c][0], cs[c][1], k, v), n))
        return res

    def decode_attention(
        self, key: dict, batch_axis: list[int], ctx_axis: list[int], kv_max: int
    ) -> list[list[float | None]]:
        Hq, Hkv, D = key["q_heads"], key["kv_heads"], key["head_dim"]
        rows = []
        for B in batch_axis:
            row: list[float | None] = []
            for C in ctx_axis:
                nbytes = B * Hkv * C * D * 2 * 2
                if nbytes > kv_max:
                    row.append(None)
                    continue
                n = _copies(nbytes, 16)
                caches = [(self.r(B, Hkv, C, D), self.r(B, Hkv, C, D)) for _ in range(n)]
                q = self.r(B, Hq * D)
                row.append(
                    self.t.time(lambda c, cs=caches, q=q, C=C: K.decode_attention(q, cs[c][0], cs[c][1], 0, C), n)
                )
            rows.append(row)
        return rows

    def prefill_attention(
        self, key: dict, batch_axis: list[int], seq_axis: list[int], tok_max: int
    ) -> list[list[float | None]]:
        Hq, Hkv, D = key["q_heads"], key["kv_heads"], key["head_dim"]
        rows = []
        for B in batch_axis:
            row: list[float | None] = []
            for P in seq_axis:
                if B * P > tok_max:
                    row.append(None)
                    continue
                q, k, v = self.r(B, P, Hq, D), self.r(B, P, Hkv, D), self.r(B, P, Hkv, D)
                row.append(self.t.time(lambda c, q=q, k=k, v=v: K.prefill_attention(q, k, v)))
            rows.append(row)
        return rows

    def argmax(self, key: dict, batch_axis: list[int]) -> list[float | None]:
        res = []
        for B in batch_axis:
            x = self.r(B, key["vocab"])
            res.append(self.t.time(lambda c, x=x: K.argmax(x)))
        return res


def overheads(timer: Timer) -> dict[str, float]:
    """Fixed costs: one CUDA-graph launch (back-to-back replays of a one-kernel graph), and the host dispatch of one
    eager PyTorch op (back-to-back tiny ops, host-bound)."""
    x = torch.ones(8, device=timer.device, dtype=torch.float16)
    out: dict[str, float] = {}
    if timer.cuda:
        g = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream(timer.device)
        side.wait_stream(torch.cuda.current_stream(timer.device))
        with torch.cuda.stream(side):
            x.add_(0)
        torch.cuda.current_stream(timer.device).wait_stream(side)
        with torch.cuda.graph(g):
            x.add_(0)
        g.replay()
        n = 200
        t_kernel = timer._events(lambda: [g.replay() for _ in range(n)]) / n
        g2 = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g2):
            for _ in range(n):
                x.add_(0)
        g2.replay()
        t_in_graph = timer._events(g2.replay) / n
        out["graph_launch_s"] = max(t_kernel - t_in_graph, 0.0)
        out["graph_tiny_kernel_s"] = t_in_graph
        timer.sync()
        t0 = time.perf_counter()
        for _ in range(2000):
            x.add_(0)
        t_host = (time.perf_counter() - t0) / 2000
        timer.sync()
        out["eager_launch_s"] = t_host
    else:
        t0 = time.perf_counter()
        for _ in range(2000):
            x.add_(0)
        out["eager_launch_s"] = (time.perf_counter() - t0) / 2000
        out["graph_launch_s"] = 0.0
        out["graph_tiny_kernel_s"] = out["eager_launch_s"]
    return out


def calibrate(timer: Timer, dtype: torch.dtype, big: bool = True) -> dict[str, float]:
    """Two ceilings (METHOD.md): device-to-device copy bandwidth (read + write bytes) and a large GEMM's rate."""
    n = (1 << 30) if big else (1 << 22)
    a = torch.empty(n // 2, device=timer.device, dtype=dtype).normal_()
    b = torch.empty_like(a)
    t = timer.time(lambda c: b.copy_(a), inner=4)
    m = 8192 if big else 256
    x, y = _rand((m, m), timer.device, dtype), _rand((m, m), timer.device, dtype)
    tg = timer.time(lambda c: x @ y, inner=4)
    return {"copy_bytes_per_s": 2 * n / t, "gemm_flops_per_s": 2 * m**3 / tg, "gemm_size": m}


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def _count_points(grid: dict[str, Any]) -> int:
    ax = grid["axes"]
    total = 0
    for op, keys in grid["keys"].items():
        axes = OPERATORS[op][1]
        n = 1
        for a in axes:
            n *= len(ax["prefill_batch" if (op == "prefill_attention" and a == "batch") else a])
        total += n * len(keys)
    return total


def _measure_table(
    ops: _Ops, op: str, axes: tuple[str, ...], key: dict, ax: dict[str, list[int]], lim: dict[str, int]
) -> tuple[list, dict[str, list[int]], int]:
    """(times, axes, number of points) of one operator table."""
    if op == "decode_attention":
        t = ops.decode_attention(key, ax["batch"], ax["context"], lim["kv_bytes_max"])
        return t, {"batch": ax["batch"], "context": ax["context"]}, len(ax["batch"]) * len(ax["context"])
    if op == "prefill_attention":
        t = ops.prefill_attention(key, ax["prefill_batch"], ax["seq"], lim["prefill_tokens_max"])
        return t, {"batch": ax["prefill_batch"], "seq": ax["seq"]}, len(ax["prefill_batch"]) * len(ax["seq"])
    name = axes[0]
    return getattr(ops, op)(key, ax[name]), {name: ax[name]}, len(ax[name])


def run_profile(
    grid: dict[str, Any],
    out: Path,
    device: torch.device,
    hardware: str,
    dtype: torch.dtype = torch.float16,
    command: list[str] | None = None,
    progress: bool = True,
    only: list[str] | None = None,
    deadline_s: float | None = None,
) -> dict[str, Any]:
    """Measure every (operator, key, axis point) of `grid`; write the profile JSON to `out` after each table.

    `hardware` is the hwsim hardware spec name the profile is for (checked when a spec names the profile).
    Past `deadline_s` seconds the remaining tables are left out (listed in ``errors``; ``complete`` is false).
    """
    torch.manual_seed(0)
    timer = Timer(device)
    ops = _Ops(timer, dtype)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "hardware": hardware,
        "provenance": provenance(device, dtype, command or sys.argv),
        "protocol": {
            "reps": REPS,
            "rotate_bytes": ROTATE_BYTES,
            "target_graph_s": TARGET_GRAPH_S,
            "cuda_graphs": timer.use_graph,
            "statistic": "median replay / inner calls",
        },
        "grid": grid,
        "complete": False,
        "errors": [],
        "ops": {},
    }
    sampler = ClockSampler.maybe() if timer.cuda else NullSampler()
    t_start = time.perf_counter()
    doc["overhead"] = overheads(timer)
    doc["calibration"] = calibrate(timer, dtype, big=timer.cuda)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=_count_points(grid), unit="pt", desc="profile", mininterval=2.0, file=sys.stderr)
        except ImportError:
            bar = None
    ax = grid["axes"]
    lim = grid["limits"]
    for op, (_, axes) in OPERATORS.items():
        if only and op not in only:
            continue
        tables = []
        for key in grid["keys"][op]:
            if deadline_s is not None and time.perf_counter() - t_start > deadline_s:
                doc["errors"].append(f"{op} {key}: not measured (past the {deadline_s:.0f} s deadline)")
                continue
            try:
                with sampler:
                    t, axis, npts = _measure_table(ops, op, axes, key, ax, lim)
                table = {"key": key, "axes": axis, "time_s": t}
                if clock := sampler.record():  # the clock and power while this table was measured
                    table["clock"] = clock
                tables.append(table)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:  # recorded, the run goes on
                doc["errors"].append(f"{op} {key}: {' '.join(str(exc).split())[:300]}")
                npts = 0
            if bar is not None:
                bar.update(npts)
            if timer.cuda:
                torch.cuda.empty_cache()
        doc["ops"][op] = tables
        doc["elapsed_s"] = time.perf_counter() - t_start
        _write(out, doc)
    if bar is not None:
        bar.close()
    doc["complete"] = not doc["errors"] and (only is None)
    doc["elapsed_s"] = time.perf_counter() - t_start
    _write(out, doc)
    return doc
