"""Analytical (roofline) performance model: the operator list of hwsim/ops.py, each priced by `ops.op_time`.

Operators run one after another (no overlap between operators; an operator's own loads, compute and instruction
issue overlap). Every rate, efficiency and overhead comes from the HardwareSpec (ops.py lists the mechanisms);
every byte count from the CompressionScheme. There are no hidden constants here.

Operators per transformer block: the block's linear layers (weights in the scheme's per-operator formats,
activations at the operator's ``act_bits``), attention over the KV cache (bytes from the scheme's KV format;
Λ attention and sliding windows bound the tokens read; flops 2·2·heads·head_dim per attended token), softmax (vector
unit), KV append (fp16 into the dense recent window), and elementwise work (norms, RoPE, activation function,
residuals). Per step: the LM head, and the host's control of the step where the hardware has one.

Modelling choices (stated, not hidden):
* Weight sparsity reduces MACs only where the engines skip zeros of that mode (``fpga.sparse_modes``, or 2:4 on
  hardware that declares none: sparse tensor cores); elsewhere zeros are multiplied, bytes still shrink.
* Attention is fused (no score matrix in memory); in prefill, K/V are written once and read back once per layer.
* On an FPGA with an attention engine (``fpga.attention_lanes``), attention over int KV (<= 8 bits) runs on that
  engine: 2 ops per lane per cycle; other attention runs at the decode engine's rate for its precision.
* Decode is vectorised over steps (numpy): every step is priced up to `EXACT_DECODE_STEPS`; longer runs are priced
  at that many midpoint samples (`hwsim.estimate.decode_samples`), so ``--gen 10**12`` costs the same as 65,536.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwsim.estimate import Breakdown, Estimate, MeasuredProfile, OpClass, decode_samples
from hwsim.hardware import HardwareSpec, precision_key
from hwsim.ops import (
    ELEMENTWISE_OPS_PER_FFN,
    ELEMENTWISE_OPS_PER_HIDDEN,
    SOFTMAX_OPS_PER_SCORE,
    Op,
    attention_ops,
    attention_ops_per_s,
    elementwise_op,
    head_op,
    host_op,
    linear_ops,
    memo_by_identity,
    op_time,
)
from hwsim.workload import Workload
from models.spec import ModelSpec
from quant.scheme import FP16_BYTES, CompressionScheme

__all__ = [
    "estimate_analytical",
    "Op",
    "op_time",
    "attention_ops_per_s",
    "precision_notes",
    "SOFTMAX_OPS_PER_SCORE",
    "ELEMENTWISE_OPS_PER_HIDDEN",
    "ELEMENTWISE_OPS_PER_FFN",
]


def _kv_layer_schemes(
    model: ModelSpec, s: CompressionScheme, profile: MeasuredProfile | None
) -> dict[CompressionScheme, int]:
    """Scheme per group of layers sharing a KV sparsity (measured per layer when a profile has it)."""
    if profile is None or profile.kv_sparsity_per_layer is None:
        return {s: model.num_layers}
    out: dict[CompressionScheme, int] = {}
    for sp in profile.kv_sparsity_per_layer:
        key = s.replace(kv_sparsity=min(max(sp, 0.0), 0.999))
        out[key] = out.get(key, 0) + 1
    return out


_PRICED: dict[tuple[int, int], tuple] = {}


def _priced(op: Op, hw: HardwareSpec):
    """`op_time`, memoised for scalar ops (the op builders return the same Op objects for the same specs)."""
    if isinstance(op.context, np.ndarray) or getattr(hw, "gpu_profile", None) is not None:
        return op_time(op, hw)
    key = (id(op), id(hw))
    got = _PRICED.get(key)
    if got is not None:
        return got[0]
    if len(_PRICED) > 8192:
        _PRICED.clear()
    ot = op_time(op, hw)
    _PRICED[key] = (ot, op, hw)
    return ot


class _Tally:
    """Totals per operator class (flops, bytes, seconds, bounds) and seconds per (class, mechanism)."""

    def __init__(self) -> None:
        self.classes: dict[str, list] = {}
        self.mech: dict[tuple[str, str], float] = {}
        self.bytes = 0.0

    def add(self, op: Op, hw: HardwareSpec, weights: Any = None, repeat: float = 1.0) -> Any:
        """Price `op`; returns seconds per instance x count (array for decode attention). `weights`: how many steps
        each array entry stands for (None: one each); `repeat`: steps a scalar op runs."""
        ot = _priced(op, hw)
        if isinstance(ot.seconds, np.ndarray):
            t = ot.seconds * op.count
            red = (lambda x: float(np.sum(x))) if weights is None else (lambda x: float(np.dot(x, weights)))
            scale = float(op.count)
            total_t = red(t)
            flops = red(np.broadcast_to(op.flops, t.shape)) * scale
            nbytes = red(np.broadcast_to(op.bytes, t.shape)) * scale
            parts = {m: red(np.broadcast_to(v, t.shape)) * scale for m, v in ot.parts.items()}
        else:
            t = ot.seconds * op.count
            scale = repeat * op.count
            total_t = t * repeat
            flops, nbytes = float(op.flops) * scale, float(op.bytes) * scale
            parts = {m: v * scale for m, v in ot.parts.items()}
        c = self.classes.get(op.cls)
        if c is None:
            c = self.classes[op.cls] = [0.0, 0.0, 0.0, set()]
        c[0] += flops
        c[1] += nbytes
        c[2] += total_t
        c[3].add(ot.bound)
        self.bytes += nbytes
        for mech, v in parts.items():
            if v:
                self.mech[(op.cls, mech)] = self.mech.get((op.cls, mech), 0.0) + v
        return t

    def scaled(self, k: float) -> _Tally:
        """A copy with every total multiplied by `k` (a per-step tally over `k` steps)."""
        out = _Tally()
        out.classes = {c: [f * k, b * k, t * k, set(bd)] for c, (f, b, t, bd) in self.classes.items()}
        out.mech = {key: v * k for key, v in self.mech.items()}
        out.bytes = self.bytes * k
        return out

    def op_classes(self) -> tuple[OpClass, ...]:
        return tuple(
            OpClass(name, f, b, t, next(iter(bd)) if len(bd) == 1 else "mixed")
            for name, (f, b, t, bd) in self.classes.items()
        )

    def breakdown(self, steps: float) -> tuple[Breakdown, ...]:
        return tuple(Breakdown(c, m, v / steps) for (c, m), v in sorted(self.mech.items(), key=lambda kv: -kv[1]))


def precision_notes(ops: list[Op], hw: HardwareSpec) -> list[str]:
    """One note per precision the hardware lacks and runs at a wider one (THE fallback rule, stated)."""
    seen: dict[tuple[str, str], str] = {}
    for op in ops:
        if op.unit != "matrix":
            continue
        want = precision_key(op.weight_bits, op.act_bits)
        got = hw.matrix_rate(op.weight_bits, op.act_bits, op.phase)[1]
        if got != want:
            seen[(want, op.phase)] = got
    where = "" if hw.fpga is None else " engine"
    return [
        f"precision fallback: {hw.name} lists no {want} for {phase}{where}; it runs at {got} (slower than a "
        f"native {want} path)"
        for (want, phase), got in seen.items()
    ]


def _prefill_attended_sum(cap: float, P: int) -> float:
    """Sum over queries t = 1..P of min(t, cap): the (query, key) pairs of causal prefill attention."""
    if P <= cap:
        return P * (P + 1) / 2
    a = int(cap)
    return a * (a + 1) / 2 + (P - a) * a


@memo_by_identity
def _kv_groups(model: ModelSpec, s: CompressionScheme, profile: MeasuredProfile | None):
    return _kv_layer_schemes(model, s, profile)


@memo_by_identity
def _weight_bytes(s: CompressionScheme, model: ModelSpec):
    return s.weight_bytes(model)


@memo_by_identity
def _prefill(
    model: ModelSpec, hw: HardwareSpec, s: CompressionScheme, B: int, P: int, profile: MeasuredProfile | None
) -> tuple[float, _Tally, list[str]]:
    """(TTFT, its tally, precision notes) of the prefill of B prompts of P tokens."""
    L = model.num_layers
    n = B * P
    attended_sum = _prefill_attended_sum(s.kv_attended_cap(model), P)
    pre_ops = linear_ops(model, hw, s, n, "prefill", profile, B) + [
        elementwise_op(model, n, "prefill", B),
        head_op(model, hw, s, B, "prefill", profile, B),
    ]
    for ks, count in _kv_groups(model, s, profile).items():
        kv_layer = B * ks.kv_bytes_for_tokens(model, ks.kv_stored_tokens(model, P)) / L
        pre_ops += attention_ops(model, s, "prefill", B, attended_sum / P, attended_sum, kv_layer, kv_layer, count, n)
    pre = _Tally()
    ttft = sum(float(pre.add(op, hw)) for op in pre_ops)
    return ttft, pre, precision_notes(pre_ops, hw)


@memo_by_identity
def _decode_fixed(
    model: ModelSpec, hw: HardwareSpec, s: CompressionScheme, B: int, profile: MeasuredProfile | None
) -> tuple[float, _Tally, list[str]]:
    """(seconds, tally, precision notes) of ONE decode step's context-independent operators."""
    fixed_ops = linear_ops(model, hw, s, B, "decode", profile, B) + [
        elementwise_op(model, B, "decode", B),
        head_op(model, hw, s, B, "decode", profile, B),
    ]
    host = host_op(hw)
    if host is not None:
        fixed_ops.append(host)
    tally = _Tally()
    fixed_t = sum(float(tally.add(op, hw)) for op in fixed_ops)
    return fixed_t, tally, precision_notes(fixed_ops, hw)


def estimate_analytical(
    model: ModelSpec, hw: HardwareSpec, s: CompressionScheme, w: Workload, profile: MeasuredProfile | None = None
) -> Estimate:
    """Roofline estimate; see the module docstring for what is modelled. `profile`: measured figures of an
    artifact (per-layer weight bytes, per-layer KV sparsity) replacing nominal ones."""
    B, P, G, L = w.batch, w.prompt_len, w.gen_len, model.num_layers
    kv_groups = _kv_groups(model, s, profile)
    cap = s.kv_attended_cap(model)
    n = B * P
    # a GPU operator profile collects notes while it prices: price afresh (no memo) when the spec has one
    fresh = getattr(hw, "gpu_profile", None) is not None
    prefill, decode_fixed = (_prefill.__wrapped__, _decode_fixed.__wrapped__) if fresh else (_prefill, _decode_fixed)
    ttft, pre, pre_notes = prefill(model, hw, s, B, P, profile)

    # ---- decode: step i at context P + i + 1 attends the new token too ----
    contexts, weights = decode_samples(P, G)
    fixed_t, fixed_tally, fixed_notes = decode_fixed(model, hw, s, B, profile)
    dec = fixed_tally.scaled(G)
    attended = np.minimum(contexts, cap)
    steps = np.full(contexts.shape, fixed_t)
    for ks, count in kv_groups.items():
        kv_read = B * ks.kv_bytes_for_tokens_array(model, attended) / L
        for op in attention_ops(
            model, s, "decode", B, attended, attended, kv_read, B * s.kv_append_bytes(model), count, B
        ):
            steps = steps + dec.add(op, hw, weights, repeat=G)

    wb = _weight_bytes(s, model)
    weight_total = wb.total
    if profile is not None:
        weight_total = wb.total - wb.blocks + sum(profile.layer_weight_bytes) + model.num_layers * 2 * wb.final_norm
        if profile.lm_head_bytes is not None:
            weight_total += profile.lm_head_bytes - wb.lm_head
    widest = max(
        2 * model.ffn_hidden_size if model.ffn_type == "swiglu" else model.ffn_hidden_size,
        model.q_dim + 2 * model.kv_dim,
    )
    act_peak = 2 * s.act_bytes(n, model.hidden_size) + n * widest * FP16_BYTES + B * model.vocab_size * FP16_BYTES
    notes = [f"measured profile: {profile.source}"] if profile is not None else []
    notes += list(dict.fromkeys(pre_notes + fixed_notes))
    if hw.gpu_profile is not None:  # what the GPU operator profile did not cover (hwsim/gpuprofile/hook.py)
        notes += hw.gpu_profile.take_notes()
    if s.attn_window is not None:
        notes.append(f"Λ attention: at most {s.attn_sink + s.attn_window} tokens attended and cached per sequence")
    if model.sliding_window is not None:
        notes.append(f"model sliding window: at most {model.sliding_window} tokens attended")
    if weights is not None:
        notes.append(f"decode: {G:,} steps priced at {len(contexts):,} evenly spaced contexts (midpoint rule)")
    return Estimate(
        fidelity="analytical",
        model=model.name,
        hardware=hw.name,
        scheme=s.name,
        batch=B,
        prompt_len=P,
        gen_len=G,
        ttft_s=ttft,
        decode_step_s=tuple(steps.tolist()),
        weight_bytes=int(weight_total),
        kv_bytes_final=sum(ks.kv_cache_bytes(model, w.final_context, B) * c / L for ks, c in kv_groups.items()),
        activation_bytes_peak=act_peak,
        capacity_bytes=hw.memory.capacity_bytes,
        prefill_ops=pre.op_classes(),
        decode_ops=dec.op_classes(),
        power_w=hw.power_w,
        notes=tuple(notes),
        decode_step_weights=() if weights is None else tuple(weights.tolist()),
        decode_breakdown=dec.breakdown(G),
        decode_bytes_per_step=dec.bytes / G,
        peak_bandwidth_bytes_per_s=hw.memory.bandwidth_bytes_per_s,
    )
