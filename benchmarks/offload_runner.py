"""Offloaded decoding on a real GPU, and the links it runs on: the measurements `hwsim offload` is checked against.

Self-contained (torch and the standard library only): it runs on the device machine, which has torch but not this
project's dependencies. Two parts, written to one JSON document:

* ``links``: the machine's physical parameters -- pinned and pageable host<->GPU copies (large and small, so that
  bandwidth and per-transfer latency can be fitted), a GPU GEMM and a device-to-device copy, disk write and read of
  a large file with O_DIRECT (page cache bypassed), CPU decode attention over a grid of batch, heads and context,
  4-bit group-wise (de)compression on the GPU and the CPU, and the per-layer cost of a decode layer whose arithmetic
  is negligible (kernel-launch and synchronisation overhead).
* ``runs``: decode throughput of a Llama-shaped model with random weights at several placements. The loop is
  FlexGen's (Sheng et al., ICML'23, Alg. 1): at layer step s, ``load(s+1)`` (weights / KV cache towards the GPU, on a
  copy stream; disk reads in a thread into a pinned bounce buffer), ``compute(s)`` (compute stream) and
  ``store(s-1)`` (new K/V rows to the host, on a third stream) are issued together, then everything is synchronised.
  Host buffers are pinned unless a placement says pageable. Compression is FlexGen's 4-bit group-wise (group 64):
  weights and KV are stored packed and decompressed on the GPU before use; new K/V rows are compressed on the GPU.
  With CPU attention (FlexGen's CPU delegation), q/k/v go to the host, attention runs on the CPU over the host cache
  and the output comes back.

Usage: python3 benchmarks/offload_runner.py --out DIR [--smoke]   (--smoke: tiny sizes, runs on a CPU too)
"""

# Timed closures below are called at once, inside the loop that binds their variables.
# ruff: noqa: B023
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import mmap
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

import torch

GROUP = 64  # FlexGen's group size for 4-bit compression of weights and KV
CUDA = torch.cuda.is_available()
DEV = torch.device("cuda" if CUDA else "cpu")
F16 = torch.float16


# ---- small helpers --------------------------------------------------------------------------------------------------
def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def stream() -> object | None:
    return torch.cuda.Stream() if CUDA else None


def on(s) -> contextlib.AbstractContextManager:
    return torch.cuda.stream(s) if s is not None else contextlib.nullcontext()


def pinned(shape, dtype=F16, pin=True) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=CUDA and pin)


def pageable(t: torch.Tensor) -> torch.Tensor:
    out = torch.empty(t.shape, dtype=t.dtype)
    out.copy_(t)
    return out


def fill_random(t: torch.Tensor, scale: float = 0.02) -> torch.Tensor:
    """Random values made on the GPU and copied (fast for large host buffers); never zeros."""
    flat = t.view(-1)
    step = 1 << 26
    for i in range(0, flat.numel(), step):
        n = min(step, flat.numel() - i)
        src = torch.randn(n, device=DEV, dtype=torch.float32).mul_(scale).to(t.dtype)
        flat[i : i + n].copy_(src)
    return t


def timed(fn, reps: int = 5, warm: int = 1) -> float:
    """Median seconds of `fn` (synchronised before and after each call)."""
    for _ in range(warm):
        fn()
    sync()
    ts = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


# ---- 4-bit group-wise compression (symmetric, one fp16 scale per 64 values) ------------------------------------------
def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (numel divisible by 64) -> (packed uint8 [numel/2], fp16 scales [numel/64])."""
    g = x.reshape(-1, GROUP).float()
    scale = g.abs().amax(1).clamp_min(1e-8) / 7
    q = torch.round(g / scale[:, None]).clamp_(-8, 7).add_(8).to(torch.uint8)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)
    return packed.reshape(-1), scale.to(F16)


def dequantize(packed: torch.Tensor, scale: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    p = packed.view(-1, GROUP // 2)
    vals = torch.stack((p & 15, p >> 4), -1).view(-1, GROUP).to(F16).sub_(8).mul_(scale.view(-1, 1))
    out.view(-1).copy_(vals.view(-1))
    return out


# ---- link and engine measurements ---------------------------------------------------------------------------------
def measure_copies(nbytes: int) -> dict:
    n = nbytes // 2
    g = fill_random(torch.empty(n, dtype=F16, device=DEV))
    out = {}
    for pin in (True, False):
        h = fill_random(pinned(n, pin=pin))
        key = "pinned" if pin else "pageable"
        out[f"h2d_{key}_s"] = timed(lambda: g.copy_(h, non_blocking=pin))
        out[f"d2h_{key}_s"] = timed(lambda: h.copy_(g, non_blocking=pin))
        if pin:  # both directions at once: full duplex?
            h2, g2 = fill_random(pinned(n)), torch.empty_like(g)
            s1, s2 = stream(), stream()

            def both():
                with on(s1):
                    g.copy_(h, non_blocking=True)
                with on(s2):
                    h2.copy_(g2, non_blocking=True)

            out["duplex_pinned_s"] = timed(both)
            del h2, g2
        small_h, small_g = pinned(2048, pin=pin), torch.empty(2048, dtype=F16, device=DEV)
        out[f"h2d_{key}_4KiB_s"] = timed(lambda: small_g.copy_(small_h, non_blocking=pin), reps=50, warm=5)
    out["bytes"] = nbytes
    return out


def measure_gpu() -> dict:
    if not CUDA:
        return {}
    n = 8192
    a, b = fill_random(torch.empty(n, n, dtype=F16, device=DEV)), fill_random(torch.empty(n, n, dtype=F16, device=DEV))
    t_gemm = timed(lambda: a @ b, reps=10, warm=3)
    x = fill_random(torch.empty(1 << 30, dtype=F16, device=DEV))
    y = torch.empty_like(x)
    t_copy = timed(lambda: y.copy_(x), reps=10, warm=2)
    props = torch.cuda.get_device_properties(0)
    return {
        "gemm_8192_fp16_s": t_gemm,
        "gemm_flops": 2.0 * n**3,
        "d2d_copy_s": t_copy,
        "d2d_copy_bytes_moved": 2 * 2 * x.numel(),
        "name": props.name,
        "memory_bytes": props.total_memory,
        "sm_count": props.multi_processor_count,
    }


def measure_host(nbytes: int) -> dict:
    """Host DRAM copy (all threads) and an fp32 CPU GEMM: the host's bandwidth and arithmetic ceilings."""
    x = torch.empty(nbytes // 4, dtype=torch.float32).uniform_()
    y = torch.empty_like(x)
    t_copy = timed(lambda: y.copy_(x), reps=5)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    t_mm = timed(lambda: a @ b, reps=5)
    return {"copy_s": t_copy, "copy_bytes_moved": 2 * nbytes, "gemm_2048_fp32_s": t_mm, "gemm_flops": 2.0 * n**3}


def _aligned(nbytes: int) -> mmap.mmap:
    return mmap.mmap(-1, nbytes)  # anonymous mappings are page-aligned, as O_DIRECT needs


def measure_disk(path: str, nbytes: int, block: int = 64 << 20) -> dict:
    """Sequential write then read of `nbytes` in `block`-sized requests, O_DIRECT where the file system allows it,
    else buffered I/O with fsync and POSIX_FADV_DONTNEED (page cache dropped for the file)."""
    buf = _aligned(block)
    buf.write(os.urandom(1 << 20) * (block >> 20))
    res: dict = {"bytes": nbytes, "block_bytes": block, "path": path}
    for direct in (True, False):
        fd = None
        flags = os.O_RDWR | os.O_CREAT | (getattr(os, "O_DIRECT", 0) if direct else 0)
        try:
            fd = os.open(path, flags, 0o600)
            t = time.perf_counter()
            for off in range(0, nbytes, block):
                os.pwritev(fd, [buf], off)
            os.fsync(fd)
            res["write_s"] = time.perf_counter() - t
            os.close(fd)
        except OSError as exc:
            res["direct_error" if direct else "buffered_error"] = str(exc)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
            continue
        res["method"] = "O_DIRECT" if direct else "buffered+fsync+fadvise(DONTNEED)"
        fd = os.open(path, (os.O_RDONLY | (getattr(os, "O_DIRECT", 0) if direct else 0)))
        if not direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        t = time.perf_counter()
        for off in range(0, nbytes, block):
            os.preadv(fd, [buf], off)
        res["read_s"] = time.perf_counter() - t
        # four threads with one request each in flight: does queue depth help?
        offs = list(range(0, nbytes, block))
        bufs = [_aligned(block) for _ in range(4)]
        if not direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

        def reader(k):
            for off in offs[k::4]:
                os.preadv(fd, [bufs[k]], off)

        t = time.perf_counter()
        th = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
        for x in th:
            x.start()
        for x in th:
            x.join()
        res["read_4threads_s"] = time.perf_counter() - t
        os.close(fd)
        break
    with contextlib.suppress(OSError):
        os.unlink(path)
    return res


def cpu_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, ctx: int) -> torch.Tensor:
    """Decode attention on the CPU, FlexGen-style: fp16 cache [ctx_max, B*heads, hd] computed in fp32.
    q [B*heads, hd] fp32 -> [B*heads, hd] fp32."""
    k = k_cache[:ctx].float().permute(1, 2, 0)  # [BH, hd, ctx]
    s = torch.bmm(q.unsqueeze(1), k).mul_(1.0 / math.sqrt(q.shape[-1]))
    p = torch.softmax(s, -1)
    v = v_cache[:ctx].float().permute(1, 0, 2)  # [BH, ctx, hd]
    return torch.bmm(p, v).squeeze(1)


def measure_cpu_attention(points) -> list[dict]:
    out = []
    for batch, heads, hd, ctx in points:
        bh = batch * heads
        k = fill_random(torch.empty(ctx, bh, hd, dtype=F16), 1.0)
        v = fill_random(torch.empty(ctx, bh, hd, dtype=F16), 1.0)
        q = torch.randn(bh, hd)
        t = timed(lambda: cpu_attention(q, k, v, ctx), reps=3)
        out.append(
            {
                "batch": batch,
                "heads": heads,
                "head_dim": hd,
                "context": ctx,
                "kv_bytes": 2 * k.numel() * 2,
                "seconds": t,
            }
        )
    return out


def measure_compression(numel: int) -> dict:
    out = {"fp16_bytes": numel * 2}
    for where in ("gpu", "cpu") if CUDA else ("cpu",):
        dev = torch.device("cuda" if where == "gpu" else "cpu")
        x = torch.randn(numel, device=dev, dtype=torch.float32).to(F16)
        packed, scale = quantize(x)
        y = torch.empty_like(x)
        out[f"{where}_quantize_s"] = timed(lambda: quantize(x), reps=3)
        out[f"{where}_dequantize_s"] = timed(lambda: dequantize(packed, scale, y), reps=3)
        out[f"{where}_rel_error"] = float((y.float() - x.float()).norm() / x.float().norm())
        out["packed_bytes"] = packed.numel() + 2 * scale.numel()
    return out


# ---- the offloaded decoding model ---------------------------------------------------------------------------------
WEIGHTS = ("wq", "wk", "wv", "wo", "wg", "wu", "wd")


class Model:
    """Llama-shaped decoder with random weights: per layer q/k/v/o [H,H], gate/up [H,F], down [F,H] (fp16)."""

    def __init__(self, hidden: int, heads: int, ffn: int, layers: int, vocab: int) -> None:
        self.H, self.nh, self.F, self.L, self.V = hidden, heads, ffn, layers, vocab
        self.hd = hidden // heads
        self.shapes = {
            "wq": (hidden, hidden),
            "wk": (hidden, hidden),
            "wv": (hidden, hidden),
            "wo": (hidden, hidden),
            "wg": (hidden, ffn),
            "wu": (hidden, ffn),
            "wd": (ffn, hidden),
        }
        # the home copy of every weight: pinned host memory (placements move shares to the GPU or to disk)
        self.host = [{n: fill_random(pinned(s)) for n, s in self.shapes.items()} for _ in range(layers)]
        self.host_q = None
        self.lm_head = fill_random(torch.empty(hidden, vocab, dtype=F16, device=DEV))

    def layer_bytes(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values()) * 2

    def compressed_host(self) -> list:
        if self.host_q is None:
            self.host_q = []
            for lw in self.host:
                d = {}
                for n, t in lw.items():
                    p, s = quantize(t.to(DEV))
                    hp, hs = pinned(p.shape, torch.uint8), pinned(s.shape)
                    hp.copy_(p)
                    hs.copy_(s)
                    d[n] = (hp, hs)
                self.host_q.append(d)
        return self.host_q


def assign(shapes: dict, w_gpu: float, w_cpu: float) -> dict[str, str]:
    """Whole tensors to GPU / CPU / disk, each tier getting as close to its byte fraction as tensor sizes allow
    (tensors in order q, k, v, o, gate, up, down; GPU first, then CPU, the rest disk)."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(sizes.values())
    out, acc = {}, 0.0
    bounds = (("gpu", w_gpu), ("cpu", w_gpu + w_cpu))
    for n, sz in sizes.items():
        mid = (acc + sz / 2) / total  # a tensor goes to the tier whose share its midpoint falls in (FlexGen's rule)
        out[n] = next((tier for tier, hi in bounds if mid < hi - 1e-9), "disk")
        acc += sz
    return out


class Runner:
    """One placement of the model on the machine; `decode(tokens)` returns seconds per token."""

    def __init__(
        self,
        m: Model,
        batch: int,
        prompt: int,
        gen: int,
        *,
        w_gpu: float,
        w_cpu: float,
        kv_gpu: bool,
        cpu_attention: bool = False,
        compress_w: bool = False,
        compress_kv: bool = False,
        pinned_host: bool = True,
        disk_dir: str | None = None,
    ) -> None:
        self.m, self.B, self.prompt = m, batch, prompt
        self.ctx_max = prompt + gen + 4  # decode() runs gen timed tokens plus up to 3 warm-up tokens
        self.kv_gpu, self.cpu_attn, self.cw, self.ckv = kv_gpu, cpu_attention, compress_w, compress_kv
        self.tier = assign(m.shapes, w_gpu, w_cpu)
        tiers = set(self.tier.values())
        if "disk" in tiers and disk_dir is None:
            raise RuntimeError("disk placement without a disk directory")
        L = m.L
        self.copy_s, self.comp_s, self.store_s = stream(), stream(), stream()
        # weights: GPU-resident ones, host ones (pinned or pageable), disk ones in one file; staging x3 on the GPU
        hq = m.compressed_host() if compress_w else None
        self.gpu_w, self.home = [], []
        for j in range(L):
            g, h = {}, {}
            for n in WEIGHTS:
                if compress_w:
                    p, s = hq[j][n]
                    if self.tier[n] == "gpu":
                        g[n] = (p.to(DEV), s.to(DEV))
                    else:
                        h[n] = (p, s) if pinned_host else (pageable(p), pageable(s))
                elif self.tier[n] == "gpu":
                    g[n] = m.host[j][n].to(DEV)
                else:
                    h[n] = m.host[j][n] if pinned_host else pageable(m.host[j][n])
            self.gpu_w.append(g)
            self.home.append(h)
        if not pinned_host and CUDA:
            assert not any(
                t.is_pinned() for hh in self.home for v in hh.values() for t in (v if isinstance(v, tuple) else (v,))
            )
        self.disk_names = [n for n in WEIGHTS if self.tier[n] == "disk"]
        self.fd = None
        if self.disk_names:
            if compress_w:
                raise RuntimeError("compressed weights on disk are not implemented by this runner")
            self._write_disk(disk_dir)
        off_names = [n for n in WEIGHTS if self.tier[n] != "gpu"]
        self.stage = [{n: torch.empty(m.shapes[n], dtype=F16, device=DEV) for n in off_names} for _ in range(3)]
        if compress_w:
            self.stage_q = [
                {
                    n: (
                        torch.empty(self.home[0][n][0].shape, dtype=torch.uint8, device=DEV),
                        torch.empty(self.home[0][n][1].shape, dtype=F16, device=DEV),
                    )
                    for n in off_names
                }
                for _ in range(3)
            ]
            self.deq = {n: torch.empty(m.shapes[n], dtype=F16, device=DEV) for n in WEIGHTS}
        # KV cache [ctx_max, B*heads, hd] per layer for K and V
        bh, hd = batch * m.nh, m.hd
        shape = (self.ctx_max, bh, hd)
        if kv_gpu:
            self.kv = [
                [fill_random(torch.empty(shape, dtype=F16, device=DEV), 1.0) for _ in range(2)] for _ in range(L)
            ]
        elif compress_kv:
            self.kvq = []
            for _ in range(L):
                kvs = []
                for _ in range(2):
                    p, s = quantize(fill_random(torch.empty(shape, dtype=F16, device=DEV), 1.0))
                    hp, hs = pinned((self.ctx_max, bh, hd // 2), torch.uint8), pinned((self.ctx_max, bh, hd // GROUP))
                    hp.view(-1).copy_(p)
                    hs.view(-1).copy_(s)
                    kvs.append((hp, hs))
                self.kvq.append(kvs)
            self.kv_stage_q = [
                [
                    (
                        torch.empty((self.ctx_max, bh, hd // 2), dtype=torch.uint8, device=DEV),
                        torch.empty((self.ctx_max, bh, hd // GROUP), dtype=F16, device=DEV),
                    )
                    for _ in range(2)
                ]
                for _ in range(3)
            ]
            self.kv_stage = [[torch.empty(shape, dtype=F16, device=DEV) for _ in range(2)] for _ in range(3)]
        else:
            self.kv_host = [[fill_random(pinned(shape), 1.0) for _ in range(2)] for _ in range(L)]
            if not cpu_attention:
                self.kv_stage = [[torch.empty(shape, dtype=F16, device=DEV) for _ in range(2)] for _ in range(3)]
        self.x = fill_random(torch.empty(batch, m.H, dtype=F16, device=DEV), 1.0)
        self.pending: dict[int, threading.Thread] = {}

    # ---- disk -------------------------------------------------------------------------------------------------
    def _write_disk(self, disk_dir: str) -> None:
        self.disk_path = os.path.join(disk_dir, "offload_runner_weights.bin")
        page = mmap.PAGESIZE
        self.disk_off, off = {}, 0
        for j in range(self.m.L):
            for n in self.disk_names:
                nb = math.prod(self.m.shapes[n]) * 2
                self.disk_off[(j, n)] = (off, nb)
                off += -(-nb // page) * page
        with open(self.disk_path, "wb") as f:
            for j in range(self.m.L):
                for n in self.disk_names:
                    o, nb = self.disk_off[(j, n)]
                    f.seek(o)
                    f.write(self.m.host[j][n].view(torch.uint8).numpy().tobytes())
            f.flush()
            os.fsync(f.fileno())
        self.fd = None
        with contextlib.suppress(OSError):
            self.fd = os.open(self.disk_path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
            self.disk_method = "O_DIRECT"
        if self.fd is None:
            self.fd = os.open(self.disk_path, os.O_RDONLY)
            self.disk_method = "buffered+fadvise(DONTNEED)"
        # bounce buffers: page-aligned, pinned by cudaHostRegister so that the H2D copy is a DMA
        nb = max(self.disk_off[(0, n)][1] for n in self.disk_names)
        self.bounce_bytes = -(-nb // page) * page
        self.bounce = []
        for _ in range(len(self.disk_names)):
            mm = _aligned(self.bounce_bytes)
            t = torch.frombuffer(mm, dtype=torch.uint8)
            if CUDA:
                torch.cuda.cudart().cudaHostRegister(t.data_ptr(), t.numel(), 0)
            self.bounce.append((mm, t))
        self.disk_stream = stream()

    def _disk_load(self, j: int, slot: int) -> None:
        if self.disk_method != "O_DIRECT":
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        with on(self.disk_stream):
            for k, n in enumerate(self.disk_names):
                off, nb = self.disk_off[(j, n)]
                mm, t = self.bounce[k]
                os.preadv(self.fd, [mm], off)
                self.stage[slot][n].view(-1).view(torch.uint8).copy_(t[:nb], non_blocking=True)
            if self.disk_stream is not None:
                self.disk_stream.synchronize()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            os.unlink(self.disk_path)
            if CUDA:
                for _, t in self.bounce:
                    torch.cuda.cudart().cudaHostUnregister(t.data_ptr())

    # ---- the three stages --------------------------------------------------------------------------------------
    def load(self, s: int) -> None:
        j, ctx = self.step(s)
        slot = s % 3
        with on(self.copy_s):
            for n, h in self.home[j].items():
                if self.tier[n] != "cpu":
                    continue
                if self.cw:
                    p, sc = self.stage_q[slot][n]
                    p.copy_(h[0], non_blocking=True)
                    sc.copy_(h[1], non_blocking=True)
                else:
                    self.stage[slot][n].copy_(h, non_blocking=True)
            if not self.kv_gpu and not self.cpu_attn:
                for i in range(2):
                    if self.ckv:
                        hp, hs = self.kvq[j][i]
                        sp, ss = self.kv_stage_q[slot][i]
                        sp[:ctx].copy_(hp[:ctx], non_blocking=True)
                        ss[:ctx].copy_(hs[:ctx], non_blocking=True)
                    else:
                        self.kv_stage[slot][i][:ctx].copy_(self.kv_host[j][i][:ctx], non_blocking=True)
        if self.disk_names:
            th = threading.Thread(target=self._disk_load, args=(j, slot))
            th.start()
            self.pending[s] = th

    def weight(self, j: int, n: str, slot: int) -> torch.Tensor:
        if self.cw:
            src = self.gpu_w[j][n] if self.tier[n] == "gpu" else self.stage_q[slot][n]
            return dequantize(src[0], src[1], self.deq[n])
        return self.gpu_w[j][n] if self.tier[n] == "gpu" else self.stage[slot][n]

    def compute(self, s: int) -> None:
        j, ctx = self.step(s)
        slot, m, B = s % 3, self.m, self.B
        x = self.x
        with on(self.comp_s):
            h = torch.nn.functional.rms_norm(x, (m.H,))
            q = h @ self.weight(j, "wq", slot)
            k = h @ self.weight(j, "wk", slot)
            v = h @ self.weight(j, "wv", slot)
            bh = B * m.nh
            if self.cpu_attn:
                qkv = torch.stack((q, k, v)).view(3, bh, m.hd).to("cpu", non_blocking=False)
                K, V = self.kv_host[j]
                K[ctx].copy_(qkv[1])
                V[ctx].copy_(qkv[2])
                o = cpu_attention(qkv[0].float(), K, V, ctx + 1).to(F16).to(DEV, non_blocking=False)
            else:
                if self.kv_gpu:
                    K, V = self.kv[j]
                elif self.ckv:
                    K, V = self.kv_stage[slot]
                    for i, t in enumerate((K, V)):
                        sp, ss = self.kv_stage_q[slot][i]
                        dequantize(sp[:ctx], ss[:ctx], t[:ctx])
                else:
                    K, V = self.kv_stage[slot]
                K[ctx].copy_(k.view(bh, m.hd))
                V[ctx].copy_(v.view(bh, m.hd))
                kk = K[: ctx + 1].permute(1, 2, 0)  # [BH, hd, ctx+1]
                sc = torch.bmm(q.view(bh, 1, m.hd), kk).mul_(1.0 / math.sqrt(m.hd))
                p = torch.softmax(sc.float(), -1).to(F16)
                o = torch.bmm(p, V[: ctx + 1].permute(1, 0, 2))
                if self.ckv:  # the new rows, compressed for the host cache (stored next step)
                    self._keep = getattr(self, "new_q", None)  # in use by the store stream until the next sync
                    self.new_q = [quantize(t[ctx]) for t in (K, V)]
            x = x + o.reshape(B, m.H) @ self.weight(j, "wo", slot)
            h = torch.nn.functional.rms_norm(x, (m.H,))
            a = torch.nn.functional.silu(h @ self.weight(j, "wg", slot)) * (h @ self.weight(j, "wu", slot))
            x = x + a @ self.weight(j, "wd", slot)
            if j == m.L - 1:
                self.logits = torch.nn.functional.rms_norm(x, (m.H,)) @ m.lm_head
            self.x = x

    def store(self, s: int) -> None:
        if self.kv_gpu or self.cpu_attn:
            return
        j, ctx = self.step(s)
        slot = s % 3
        with on(self.store_s):
            if self.ckv:
                for i in range(2):
                    hp, hs = self.kvq[j][i]
                    hp[ctx].view(-1).copy_(self.new_q[i][0], non_blocking=True)
                    hs[ctx].view(-1).copy_(self.new_q[i][1], non_blocking=True)
            else:
                for i in range(2):
                    self.kv_host[j][i][ctx].copy_(self.kv_stage[slot][i][ctx], non_blocking=True)

    def step(self, s: int) -> tuple[int, int]:
        token, j = divmod(s, self.m.L)
        return j, self.prompt + token

    def decode(self, tokens: int, warm: int = 1) -> dict:
        L = self.m.L
        S = (tokens + warm) * L
        self.load(0)
        self._join(0)
        sync()
        t_start = None
        for s in range(S):
            if s == warm * L:
                t_start = time.perf_counter()
            if s > 0:
                self.store(s - 1)
            if s + 1 < S:
                self.load(s + 1)
            self.compute(s)
            self._join(s + 1)
            sync()
        self.store(S - 1)
        sync()
        dt = time.perf_counter() - t_start
        assert torch.isfinite(self.logits.float()).all(), "non-finite logits"
        return {"seconds_per_token": dt / tokens, "tokens_timed": tokens}

    def _join(self, s: int) -> None:
        th = self.pending.pop(s, None)
        if th is not None:
            th.join()


# ---- driver ---------------------------------------------------------------------------------------------------------
PLACEMENTS = [  # name, keyword arguments of Runner (most informative first: a lease may end early)
    ("all-gpu", dict(w_gpu=1, w_cpu=0, kv_gpu=True)),
    ("w100cpu", dict(w_gpu=0, w_cpu=1, kv_gpu=True)),
    ("kvcpu", dict(w_gpu=1, w_cpu=0, kv_gpu=False)),
    ("w100cpu-q4", dict(w_gpu=0, w_cpu=1, kv_gpu=True, compress_w=True)),
    ("kvcpu-q4", dict(w_gpu=1, w_cpu=0, kv_gpu=False, compress_kv=True)),
    ("kvcpu-cpuattn", dict(w_gpu=1, w_cpu=0, kv_gpu=False, cpu_attention=True)),
    ("w50cpu", dict(w_gpu=0.5, w_cpu=0.5, kv_gpu=True)),
    ("w100cpu-kvcpu-q4", dict(w_gpu=0, w_cpu=1, kv_gpu=False, compress_w=True, compress_kv=True)),
    ("w100cpu-kvcpu", dict(w_gpu=0, w_cpu=1, kv_gpu=False)),
    ("all-gpu-q4", dict(w_gpu=1, w_cpu=0, kv_gpu=True, compress_w=True)),
    ("w100cpu-pageable", dict(w_gpu=0, w_cpu=1, kv_gpu=True, pinned_host=False)),
    ("w50disk", dict(w_gpu=0.5, w_cpu=0, kv_gpu=True)),
]


def environment() -> dict:
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    with contextlib.suppress(Exception):
        env["cpu_model"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    with contextlib.suppress(Exception):
        env["mem_total_kb"] = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")))
    with contextlib.suppress(Exception):
        env["nvidia_smi"] = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,pcie.link.gen.current,"
                "pcie.link.width.current,"
                "pcie.link.gen.max,pcie.link.width.max,clocks.sm,clocks.mem,driver_version",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    with contextlib.suppress(Exception):
        env["nvidia_topo"] = subprocess.run(
            ["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=20
        ).stdout.strip()
    with contextlib.suppress(Exception):
        env["df"] = subprocess.run(["df", "-hT", "/tmp"], capture_output=True, text=True, timeout=20).stdout.strip()
    return env


def _save(out: str, doc: dict) -> str:
    """Write what is measured so far (a run cut short by its time limit still returns its data)."""
    path = os.path.join(out, "offload_device.json")
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for offload_device.json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU-only check of the code paths)")
    ap.add_argument("--disk-dir", default="/tmp")
    ap.add_argument("--only", default=None, help="comma-separated placement names")
    ap.add_argument(
        "--cpu-only",
        action="store_true",
        help="only the host's measurements (CPU attention grid, CPU (de)compression, DRAM copy, CPU GEMM):"
        " for a machine without a GPU",
    )
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    smoke = args.smoke
    # Llama-2-7B layer shapes, 8 layers (the per-layer behaviour is what is measured; 8 layers keep it in budget)
    dims = (
        dict(hidden=256, heads=2, ffn=512, layers=3, vocab=1000)
        if smoke
        else dict(hidden=4096, heads=32, ffn=11008, layers=8, vocab=32000)
    )
    wl = dict(batch=4, prompt=64, gen=3) if smoke else dict(batch=32, prompt=1024, gen=6)
    doc: dict = {"environment": environment(), "model": dims, "workload": wl, "group_size": GROUP}
    t0 = time.perf_counter()
    links: dict = {}
    if args.cpu_only:
        links["host"] = measure_host(256 << 20)
        grid = [(b, h, 128, c) for b, h in ((4, 16), (8, 16), (8, 32)) for c in (256, 512, 1024)]
        links["cpu_attention"] = measure_cpu_attention(grid)
        links["compression"] = measure_compression(1 << 24)
        doc.update(links=links, runs=[], elapsed_s=time.perf_counter() - t0)
        path = _save(args.out, doc)
        for p in links["cpu_attention"]:
            print(
                f"  CPU attention batch {p['batch']:3d} heads {p['heads']:3d} context {p['context']:5d}: "
                f"{p['seconds'] * 1e3:8.2f} ms"
            )
        print(f"wrote {path}")
        return 0
    links["copies"] = measure_copies(16 << 20 if smoke else 512 << 20)
    links["gpu"] = measure_gpu()
    links["host"] = measure_host((16 << 20) if smoke else (1 << 30))
    cpu_pts = (
        [(2, 2, 128, 64)] if smoke else [(b, h, 128, c) for b, h in ((8, 32), (32, 16), (32, 32)) for c in (512, 2048)]
    )
    links["cpu_attention"] = measure_cpu_attention(cpu_pts)
    links["compression"] = measure_compression((1 << 16) if smoke else (1 << 26))
    print(f"links measured in {time.perf_counter() - t0:.1f} s", flush=True)
    _save(args.out, {**doc, "links": links, "runs": [], "partial": True})
    # per-layer overhead: the same loop with negligible arithmetic (all on the GPU)
    tiny = Model(hidden=256, heads=2, ffn=512, layers=8, vocab=256)
    runs = []
    for name, kw in (
        ("overhead-probe", dict(w_gpu=1, w_cpu=0, kv_gpu=True)),
        ("overhead-probe-q4", dict(w_gpu=1, w_cpu=0, kv_gpu=True, compress_w=True)),
        ("overhead-probe-kvcpu", dict(w_gpu=1, w_cpu=0, kv_gpu=False)),
    ):
        r = Runner(tiny, 1, 64, 20, **kw)
        res = r.decode(20, warm=2)
        res.update(
            name=name,
            placement=kw,
            seconds_per_layer=res["seconds_per_token"] / tiny.L,
            batch=1,
            prompt=64,
            model=dict(hidden=256, heads=2, ffn=512, layers=8, vocab=256),
            tiers=r.tier,
        )
        runs.append(res)
        r.close()
        del r
    del tiny
    m = Model(**dims)
    only = set(args.only.split(",")) if args.only else None
    for name, kw in PLACEMENTS:
        if only and name not in only:
            continue
        if name == "w50disk":  # the disk last: the least certain part of a short lease
            links["disk"] = measure_disk(
                os.path.join(args.disk_dir, "offload_runner_disk.bin"),
                (32 << 20) if smoke else (1 << 30),
                block=(8 << 20) if smoke else (64 << 20),
            )
            _save(args.out, {**doc, "links": links, "runs": runs, "partial": True})
        t = time.perf_counter()
        try:
            r = Runner(m, wl["batch"], wl["prompt"], wl["gen"], disk_dir=args.disk_dir, **kw)
            res = r.decode(2 if r.disk_names else wl["gen"])
            res.update(disk_method=getattr(r, "disk_method", None))
            res.update(
                name=name,
                placement=kw,
                tiers=r.tier,
                batch=wl["batch"],
                prompt=wl["prompt"],
                layer_weight_bytes=m.layer_bytes(),
                w_bytes_by_tier={
                    tier: sum(math.prod(m.shapes[n]) * 2 for n in WEIGHTS if r.tier[n] == tier)
                    for tier in ("gpu", "cpu", "disk")
                },
            )
            r.close()
            del r
        except Exception as exc:  # one placement failing must not lose the others
            res = {"name": name, "placement": kw, "error": f"{type(exc).__name__}: {exc}"}
        res["setup_and_run_s"] = time.perf_counter() - t
        runs.append(res)
        _save(args.out, {**doc, "links": links, "runs": runs, "partial": True})
        print(
            f"{name:20s} {res.get('seconds_per_token', float('nan')) * 1e3:9.2f} ms/token "
            f"({res['setup_and_run_s']:.1f} s) {res.get('error', '')}",
            flush=True,
        )
        if CUDA:
            torch.cuda.empty_cache()
    doc["links"], doc["runs"] = links, runs
    doc["elapsed_s"] = time.perf_counter() - t0
    path = _save(args.out, doc)
    c = links["copies"]
    gb = c["bytes"] / 1e9
    print(
        f"\nH2D pinned {gb / c['h2d_pinned_s']:.1f} GB/s, pageable {gb / c['h2d_pageable_s']:.1f}; D2H pinned "
        f"{gb / c['d2h_pinned_s']:.1f}, pageable {gb / c['d2h_pageable_s']:.1f}; "
        f"duplex {2 * gb / c['duplex_pinned_s']:.1f}"
        f"; 4 KiB H2D {c['h2d_pinned_4KiB_s'] * 1e6:.1f} us"
    )
    d = links.get("disk", {})
    if "read_s" in d:
        print(
            f"disk ({d.get('method')}): write {d['bytes'] / d['write_s'] / 1e9:.2f} GB/s, read "
            f"{d['bytes'] / d['read_s'] / 1e9:.2f} GB/s, 4 threads {d['bytes'] / d['read_4threads_s'] / 1e9:.2f}"
        )
    for r in runs:
        print(f"  {r['name']:22s} {r.get('seconds_per_token', float('nan')) * 1e3:9.3f} ms/token")
    print(f"wrote {path} ({doc['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
