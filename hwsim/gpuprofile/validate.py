"""End-to-end validation runs: fp16 decode steps and prefills of whole models with random weights.

The model is built from a ModelSpec-like shape (layers, widths, heads, FFN kind, norm, positional encoding) out of
the operators of `hwsim.gpuprofile.kernels`, so a profile of those operators composes into its step time. Timing
follows the profiler's protocol: the whole forward pass is captured in one CUDA graph and replayed back to back
(median of ``REPS`` event-timed batches of replays), with the SM clock and board power sampled meanwhile (a row's
``clock``, see `hwsim.gpuprofile.clock`).

* decode step at context C: B sequences, one new token each, attending C cached tokens (the new one included; a
  sliding window W attends the newest min(C, W)); the KV cache holds exactly C tokens per sequence;
* prefill (TTFT): B sequences of P tokens, causal attention, K/V written to the cache, the LM head and argmax on
  each sequence's last token.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hwsim.gpuprofile import kernels as K
from hwsim.gpuprofile.clock import ClockSampler, NullSampler
from hwsim.gpuprofile.grid import shape_of
from hwsim.gpuprofile.measure import FORMAT, VERSION, Timer, provenance

__all__ = ["RefModel", "case_step", "shape_of", "run_validation", "DEFAULT_MODELS", "DECODE_POINTS", "PREFILL_POINTS"]

DEFAULT_MODELS = ("llama-3-8b", "mistral-7b", "llama-2-13b", "opt-6.7b", "smollm2-135m")
DECODE_POINTS = tuple((b, c) for b in (1, 8, 32, 64) for c in (512, 2048, 8192))
PREFILL_POINTS = tuple((b, p) for b in (1, 8, 32, 64) for p in (512, 2048, 8192) if b * p <= 16384)
MEMORY_HEADROOM = 4 * 2**30  # left free for activations, graph pools and the allocator


class RefModel:
    """A decoder-only transformer with random fp16 weights, its forward pass made of `kernels` calls."""

    def __init__(self, shape: dict[str, Any], device: torch.device, dtype: torch.dtype = torch.float16):
        self.s = s = shape
        self.dev, self.dtype = device, dtype
        h, f, D = s["hidden_size"], s["ffn_hidden_size"], s["head_dim"]
        Hq, Hkv = s["num_heads"], s["num_kv_heads"]
        ab, mb = s["attention_bias"], s["mlp_bias"]
        ln = s["norm"] == "layernorm"
        r = self._r
        self.layers = []
        for _ in range(s["num_layers"]):
            L = {
                "n1": (r(h) + 1, r(h) if ln else None),
                "n2": (r(h) + 1, r(h) if ln else None),
                "q": (r(Hq * D, h), r(Hq * D) if ab else None),
                "k": (r(Hkv * D, h), r(Hkv * D) if ab else None),
                "v": (r(Hkv * D, h), r(Hkv * D) if ab else None),
                "o": (r(h, Hq * D), r(h) if ab else None),
            }
            if s["ffn_type"] == "swiglu":
                L.update(
                    g=(r(f, h), r(f) if mb else None),
                    u=(r(f, h), r(f) if mb else None),
                    d=(r(h, f), r(h) if mb else None),
                )
            else:
                L.update(f1=(r(f, h), r(f) if mb else None), f2=(r(h, f), r(h) if mb else None))
            self.layers.append(L)
        self.embed = r(s["vocab_size"], h)
        n_pos = max(s["max_position_embeddings"], 32768)  # timing of longer contexts than the model was trained on
        self.pos_embed = r(n_pos + 2, h) if s["positional"] == "learned" else None
        self.final = (r(h) + 1, r(h) if ln else None)
        self.head = self.embed if s["tied_embeddings"] else r(s["vocab_size"], h)
        if s["positional"] == "rope":
            n = max(s["max_position_embeddings"], 32768)
            self.cos_t, self.sin_t = r(n, D // 2), r(n, D // 2)

    def _r(self, *shape: int) -> torch.Tensor:
        return torch.empty(shape, device=self.dev, dtype=self.dtype).normal_(0.0, 0.02)

    @property
    def weight_bytes(self) -> int:
        seen, total = set(), 0
        for t in [self.embed, self.head, self.pos_embed, *[w for L in self.layers for p in L.values() for w in p]]:
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
        return total

    def kv_bytes(self, batch: int, tokens: int) -> int:
        s = self.s
        return 2 * s["num_layers"] * batch * tokens * s["num_kv_heads"] * s["head_dim"] * 2

    def new_cache(self, batch: int, tokens: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        s = self.s
        shape = (batch, s["num_kv_heads"], tokens, s["head_dim"])
        return [(self._r(*shape), self._r(*shape)) for _ in range(s["num_layers"])]

    def _ffn(self, L: dict, x: torch.Tensor) -> torch.Tensor:
        if self.s["ffn_type"] == "swiglu":
            a = K.activation("swiglu", K.linear(x, *L["g"]), K.linear(x, *L["u"]))
            return K.linear(a, *L["d"])
        return K.linear(K.activation(self.s["ffn_type"], K.linear(x, *L["f1"]), None), *L["f2"])

    def _embed(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = K.embed(ids, self.embed)
        if self.pos_embed is not None:
            x = K.add(x, K.embed(pos + 2, self.pos_embed))
        return x

    def decode_step(self, ids: torch.Tensor, pos: torch.Tensor, pos1: torch.Tensor, cache: list, context: int):
        """One decode step: ids[B] at position pos[B] (= context-1), cache index pos1[1]; returns next ids[B]."""
        s = self.s
        B, D, Hq, Hkv = ids.shape[0], s["head_dim"], s["num_heads"], s["num_kv_heads"]
        start = max(0, context - s["sliding_window"]) if s["sliding_window"] else 0
        x = self._embed(ids, pos)
        rope = s["positional"] == "rope"
        if rope:
            cos, sin = K.rope_table(pos, self.cos_t, self.sin_t)
        for L, (kc, vc) in zip(self.layers, cache):
            hN = K.norm(x, *L["n1"], 1e-5)
            q, k, v = K.linear(hN, *L["q"]), K.linear(hN, *L["k"]), K.linear(hN, *L["v"])
            if rope:
                q = K.rope(q.view(B, Hq, D), cos, sin).view(B, Hq * D)
                k = K.rope(k.view(B, Hkv, D), cos, sin).view(B, Hkv * D)
            K.kv_append(kc, vc, k, v, pos1)
            a = K.decode_attention(q, kc, vc, start, context)
            x = K.add(x, K.linear(a, *L["o"]))
            x = K.add(x, self._ffn(L, K.norm(x, *L["n2"], 1e-5)))
        logits = K.linear(K.norm(x, *self.final, 1e-5), self.head, None)
        return K.argmax(logits)

    def prefill(self, ids: torch.Tensor, pos: torch.Tensor, cache: list, batch: int):
        """Prefill of ids[B*P] (positions pos[B*P]); writes K/V to cache; returns each sequence's next id [B]."""
        s = self.s
        T, D, Hq, Hkv = ids.shape[0], s["head_dim"], s["num_heads"], s["num_kv_heads"]
        P = T // batch
        x = self._embed(ids, pos)
        rope = s["positional"] == "rope"
        if rope:
            cos, sin = K.rope_table(pos, self.cos_t, self.sin_t)
        for L, (kc, vc) in zip(self.layers, cache):
            hN = K.norm(x, *L["n1"], 1e-5)
            q, k, v = K.linear(hN, *L["q"]), K.linear(hN, *L["k"]), K.linear(hN, *L["v"])
            q, k = q.view(T, Hq, D), k.view(T, Hkv, D)
            if rope:
                q, k = K.rope(q, cos, sin), K.rope(k, cos, sin)
            q, k, v = q.view(batch, P, Hq, D), k.view(batch, P, Hkv, D), v.view(batch, P, Hkv, D)
            K.kv_write(kc, vc, k, v)
            a = K.prefill_attention(q, k, v)
            x = K.add(x, K.linear(a, *L["o"]))
            x = K.add(x, self._ffn(L, K.norm(x, *L["n2"], 1e-5)))
        last = x.view(batch, P, -1)[:, -1]
        logits = K.linear(K.norm(last, *self.final, 1e-5), self.head, None)
        return K.argmax(logits)


def case_step(model: RefModel, phase: str, batch: int, n: int, device: torch.device):
    """A callable running one validation case on `model` with a fresh KV cache of `n` tokens per sequence: a decode
    step at context n ("decode") or the prefill of `batch` prompts of n tokens ("prefill")."""
    vocab = model.s["vocab_size"]
    cache = model.new_cache(batch, n)
    if phase == "decode":
        ids = torch.randint(0, vocab, (batch,), device=device)
        pos = torch.full((batch,), n - 1, device=device, dtype=torch.long)
        pos1 = torch.tensor([n - 1], device=device)
        return lambda: model.decode_step(ids, pos, pos1, cache, n)
    ids = torch.randint(0, vocab, (batch * n,), device=device)
    pos = torch.arange(n, device=device).repeat(batch)
    return lambda: model.prefill(ids, pos, cache, batch)


def _time_graph(timer: Timer, fn) -> float:
    """Median seconds of one replay of a CUDA graph of fn() (replays back to back), or eager on CPU."""
    if not timer.cuda:
        return timer.time(lambda c: fn(), inner=1)
    side = torch.cuda.Stream(timer.device)
    side.wait_stream(torch.cuda.current_stream(timer.device))
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream(timer.device).wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    timer.sync()
    t0 = time.perf_counter()
    g.replay()
    timer.sync()
    est = time.perf_counter() - t0
    n = max(2, min(40, math.ceil(0.06 / max(est, 1e-6))))
    t = timer._events(lambda: [g.replay() for _ in range(n)]) / n
    g.reset()  # free the graph's memory pool now
    return t


def _clock(sampler: ClockSampler | NullSampler) -> dict[str, Any]:
    """{"clock": ...} for a measurement row: SM clock and power while it was timed (empty without NVML)."""
    c = sampler.record()
    return {"clock": c} if c else {}


def run_validation(
    models: list[Any],
    out: Path,
    device: torch.device,
    hardware: str,
    decode_points=DECODE_POINTS,
    prefill_points=PREFILL_POINTS,
    command: list[str] | None = None,
    deadline_s: float | None = None,
) -> dict[str, Any]:
    """Measure decode steps and prefills of `models` (ModelSpec-like) at the given (batch, context) points where
    memory allows; write the JSON to `out` after each model. Stops early (``complete: false``) past `deadline_s`."""
    torch.manual_seed(0)
    timer = Timer(device, reps=3)
    doc: dict[str, Any] = {
        "format": FORMAT + "-validation",
        "version": VERSION,
        "hardware": hardware,
        "provenance": provenance(device, torch.float16, command or sys.argv),
        "protocol": {
            "reps": 3,
            "cuda_graphs": timer.cuda,
            "statistic": "median of event-timed batches of back-to-back replays",
            "decode_context": "tokens attended, the new one included",
            "memory_headroom_bytes": MEMORY_HEADROOM,
        },
        "complete": False,
        "models": {},
        "decode": [],
        "prefill": [],
        "skipped": [],
        "errors": [],
    }
    cap = torch.cuda.get_device_properties(device).total_memory if timer.cuda else 64 * 2**30
    sampler = ClockSampler.maybe() if timer.cuda else NullSampler()
    t0 = time.perf_counter()
    stopped = False
    for spec in models:
        if deadline_s is not None and time.perf_counter() - t0 > deadline_s:
            stopped = True
            break
        shape = shape_of(spec)
        model = RefModel(shape, device)
        doc["models"][shape["name"]] = shape
        wb = model.weight_bytes
        for B, C in decode_points:
            if model.kv_bytes(B, C) + wb + MEMORY_HEADROOM > cap:
                doc["skipped"].append(
                    {"phase": "decode", "model": shape["name"], "batch": B, "context": C, "why": "memory"}
                )
                continue
            try:
                step = case_step(model, "decode", B, C, device)
                with sampler:
                    t = _time_graph(timer, step)
                doc["decode"].append({"model": shape["name"], "batch": B, "context": C, "time_s": t, **_clock(sampler)})
                print(f"decode  {shape['name']:<14} B={B:<3} C={C:<5} {t * 1e3:9.3f} ms", flush=True)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                doc["errors"].append(f"decode {shape['name']} B={B} C={C}: {' '.join(str(exc).split())[:300]}")
            step = None  # frees its KV cache
            if timer.cuda:
                torch.cuda.empty_cache()
        for B, P in prefill_points:
            if shape["sliding_window"] and P > shape["sliding_window"]:
                doc["skipped"].append(
                    {
                        "phase": "prefill",
                        "model": shape["name"],
                        "batch": B,
                        "prompt": P,
                        "why": "prompt longer than the sliding window (SDPA has no window)",
                    }
                )
                continue
            if model.kv_bytes(B, P) + wb + MEMORY_HEADROOM > cap:
                doc["skipped"].append(
                    {"phase": "prefill", "model": shape["name"], "batch": B, "prompt": P, "why": "memory"}
                )
                continue
            try:
                step = case_step(model, "prefill", B, P, device)
                with sampler:
                    t = _time_graph(timer, step)
                doc["prefill"].append({"model": shape["name"], "batch": B, "prompt": P, "time_s": t, **_clock(sampler)})
                print(f"prefill {shape['name']:<14} B={B:<3} P={P:<5} {t * 1e3:9.3f} ms", flush=True)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                doc["errors"].append(f"prefill {shape['name']} B={B} P={P}: {' '.join(str(exc).split())[:300]}")
            step = None
            if timer.cuda:
                torch.cuda.empty_cache()
        model = None  # free the weights before the next model
        if timer.cuda:
            torch.cuda.empty_cache()
        doc["elapsed_s"] = time.perf_counter() - t0
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, out)
    doc["complete"] = not stopped and not doc["errors"]
    doc["elapsed_s"] = time.perf_counter() - t0
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, out)
    return doc
