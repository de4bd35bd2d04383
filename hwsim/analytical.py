"""Analytical (roofline) performance model.

Each operator takes ``max(bytes / (memory peak * memory.efficiency), flops / (compute peak * efficiency))``;
operators run one after another (no overlap between operators, full overlap of an operator's own loads and
compute). Every efficiency factor comes from the HardwareSpec; there are no hidden constants here.

Operators per transformer block: the block's linear layers (weights in the scheme's format, activations at
``act_bits``), attention over the KV cache (bytes from the scheme's KV format; Λ attention and sliding windows bound
the tokens read; flops 2·2·heads·head_dim per attended token), softmax (vector unit), KV append (fp16 into the
dense recent window), and elementwise work (norms, RoPE, activation function, residuals). Per step: the LM head.

Modelling choices (stated, not hidden):
* 2:4 pruning halves linear-layer MACs (sparse engines and sparse tensor cores skip zeros); unstructured pruning
  shrinks bytes but not MACs.
* Attention is fused (no score matrix in memory); in prefill, K/V are written once and read back once per layer.
* On an FPGA with an attention engine (``fpga.attention_lanes``), attention over int KV (<= 8 bits) runs on that
  engine: 2 ops per lane per cycle; other attention runs at the compute peak for its precision.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwsim.estimate import Estimate, MeasuredProfile, OpClass
from hwsim.hardware import HardwareSpec
from hwsim.workload import Workload
from models.spec import ModelSpec
from quant.scheme import FP16_BYTES, CompressionScheme

__all__ = ["estimate_analytical", "Op", "op_time", "attention_ops_per_s"]

# Vector-unit operation counts per element (documented estimates of the arithmetic, not efficiencies):
SOFTMAX_OPS_PER_SCORE = 5  # max, subtract, exp, add to sum, scale
ELEMENTWISE_OPS_PER_HIDDEN = 12  # two norms (~4 each), two residual adds, RoPE share
ELEMENTWISE_OPS_PER_FFN = 4  # SiLU/GELU/ReLU + gating multiply


@dataclass(frozen=True)
class Op:
    """One operator instance (or `count` identical ones)."""

    cls: str
    flops: float
    bytes: float
    compute_rate: float  # achievable ops/s for this operator (peak x efficiency)
    count: int = 1


def op_time(op: Op, hw: HardwareSpec) -> tuple[float, str]:
    """(seconds, bound) of one instance of `op`."""
    t_mem = op.bytes / hw.memory.effective_bandwidth_bytes_per_s
    t_cmp = op.flops / op.compute_rate
    return (t_cmp, "compute") if t_cmp > t_mem else (t_mem, "memory")


def attention_ops_per_s(hw: HardwareSpec, kv_bits: int, act_bits: int) -> float:
    """Achievable ops/s of attention (q·K and p·V) for KV at `kv_bits` and queries at `act_bits`."""
    if hw.fpga is not None and hw.fpga.attention_lanes and kv_bits <= 8:
        return 2.0 * hw.fpga.attention_lanes * hw.fpga.attention_engines * hw.freq_hz
    return hw.peak_ops_per_s(kv_bits, act_bits) * hw.compute.matrix_efficiency


def _linear_ops(model: ModelSpec, hw: HardwareSpec, s: CompressionScheme, tokens: int,
                profile: MeasuredProfile | None = None) -> list[Op]:
    """The blocks' linear layers; with a profile, each block's weight bytes are scaled to the measured size."""
    density = 0.5 if s.weight_pruning == "2:4" else 1.0
    rate = hw.peak_ops_per_s(s.weight_bits, s.act_bits) * hw.compute.matrix_efficiency
    nominal = sum(s.linear_bytes(lin) for lin in model.block_linears)
    factors = {1.0: model.num_layers} if profile is None else {}
    if profile is not None:
        for b in profile.layer_weight_bytes:
            factors[b / nominal] = factors.get(b / nominal, 0) + 1
    ops = []
    for factor, count in factors.items():
        for lin in model.block_linears:
            cls = "ffn" if lin.name in ("gate_proj", "up_proj", "down_proj", "fc1", "fc2") else "attn_linear"
            nbytes = (s.linear_bytes(lin) * factor + s.act_bytes(tokens, lin.in_features)
                      + s.act_bytes(tokens, lin.out_features))
            ops.append(Op(cls, 2.0 * tokens * lin.weight_elems * density, nbytes, rate, count))
    return ops


def _kv_layer_schemes(model: ModelSpec, s: CompressionScheme,
                      profile: MeasuredProfile | None) -> dict[CompressionScheme, int]:
    """Scheme per group of layers sharing a KV sparsity (measured per layer when a profile has it)."""
    if profile is None or profile.kv_sparsity_per_layer is None:
        return {s: model.num_layers}
    out: dict[CompressionScheme, int] = {}
    for sp in profile.kv_sparsity_per_layer:
        key = s.replace(kv_sparsity=min(max(sp, 0.0), 0.999))
        out[key] = out.get(key, 0) + 1
    return out


def _head_op(model: ModelSpec, hw: HardwareSpec, s: CompressionScheme, tokens: int,
             profile: MeasuredProfile | None = None) -> Op:
    wb = s.weight_bytes(model)
    head_bytes = wb.lm_head if wb.lm_head else wb.embedding
    if profile is not None and profile.lm_head_bytes is not None:
        head_bytes = profile.lm_head_bytes
    act = s.act_bits if s.lm_head_bits < 16 else 16
    rate = hw.peak_ops_per_s(s.lm_head_bits, act) * hw.compute.matrix_efficiency
    nbytes = head_bytes + s.act_bytes(tokens, model.hidden_size) + tokens * model.vocab_size * FP16_BYTES
    return Op("lm_head", 2.0 * tokens * model.lm_head.weight_elems, nbytes, rate)


def _elementwise_op(model: ModelSpec, hw: HardwareSpec, tokens: int) -> Op:
    flops = tokens * (ELEMENTWISE_OPS_PER_HIDDEN * model.hidden_size + ELEMENTWISE_OPS_PER_FFN * model.ffn_hidden_size)
    # residual stream read + written twice per block (fp16); kept on chip on FPGAs is an optimisation we don't assume
    nbytes = 4 * tokens * model.hidden_size * FP16_BYTES
    return Op("elementwise", flops, nbytes, hw.compute.vector_ops_per_s, model.num_layers)


def _attention_ops(model: ModelSpec, hw: HardwareSpec, s: CompressionScheme, batch: int,
                   attended_sum: float, kv_read_bytes: float, kv_write_bytes: float, count: int) -> list[Op]:
    """Attention of one layer over `attended_sum` (query, key) pairs per sequence."""
    pairs = batch * model.num_heads * attended_sum
    rate = attention_ops_per_s(hw, s.kv_bits, s.act_bits)
    return [
        Op("attention", 4.0 * model.head_dim * pairs, kv_read_bytes, rate, count),
        Op("softmax", SOFTMAX_OPS_PER_SCORE * pairs, 0.0, hw.compute.vector_ops_per_s, count),
        Op("kv_append", 0.0, kv_write_bytes, float("inf"), count),
    ]


def _summarise(ops: list[Op], hw: HardwareSpec, repeat: float = 1.0) -> tuple[float, dict[str, list]]:
    total = 0.0
    classes: dict[str, list] = {}
    for op in ops:
        t, bound = op_time(op, hw)
        t *= op.count * repeat
        total += t
        c = classes.setdefault(op.cls, [0.0, 0.0, 0.0, set()])
        c[0] += op.flops * op.count * repeat
        c[1] += op.bytes * op.count * repeat
        c[2] += t
        c[3].add(bound)
    return total, classes


def _merge(into: dict[str, list], more: dict[str, list]) -> None:
    for k, v in more.items():
        c = into.setdefault(k, [0.0, 0.0, 0.0, set()])
        for i in range(3):
            c[i] += v[i]
        c[3] |= v[3]


def _op_classes(classes: dict[str, list]) -> tuple[OpClass, ...]:
    return tuple(OpClass(name, f, b, t, next(iter(bd)) if len(bd) == 1 else "mixed")
                 for name, (f, b, t, bd) in classes.items())


def estimate_analytical(model: ModelSpec, hw: HardwareSpec, s: CompressionScheme, w: Workload,
                        profile: MeasuredProfile | None = None) -> Estimate:
    """Roofline estimate; see the module docstring for what is modelled. `profile`: measured figures of an
    artifact (per-layer weight bytes, per-layer KV sparsity) replacing nominal ones."""
    B, P, G, L = w.batch, w.prompt_len, w.gen_len, model.num_layers
    kv_token_fp16 = 2 * model.kv_dim * FP16_BYTES  # one token's K and V in one layer, fp16
    kv_groups = _kv_layer_schemes(model, s, profile)

    # ---- prefill: B sequences of P tokens ----
    n = B * P
    attended_sum = sum(s.kv_attended_tokens(model, t) for t in range(1, P + 1))
    pre_ops = _linear_ops(model, hw, s, n, profile) + [_elementwise_op(model, hw, n),
                                                       _head_op(model, hw, s, B, profile)]
    for ks, count in kv_groups.items():
        kv_layer = B * ks.kv_bytes_for_tokens(model, ks.kv_stored_tokens(model, P)) / L
        pre_ops += _attention_ops(model, hw, s, B, attended_sum, kv_layer, kv_layer, count)
    ttft, pre_classes = _summarise(pre_ops, hw)

    # ---- decode: step i at context P + i attends the new token too ----
    fixed_ops = _linear_ops(model, hw, s, B, profile) + [_elementwise_op(model, hw, B),
                                                         _head_op(model, hw, s, B, profile)]
    fixed_t, dec_classes = _summarise(fixed_ops, hw, repeat=G)
    fixed_t /= G
    steps = []
    for i in range(G):
        a = s.kv_attended_tokens(model, P + i + 1)
        att_ops = []
        for ks, count in kv_groups.items():
            kv_read = B * ks.kv_bytes_for_tokens(model, a) / L
            att_ops += _attention_ops(model, hw, s, B, a, kv_read, B * kv_token_fp16, count)
        att_t, att_classes = _summarise(att_ops, hw)
        _merge(dec_classes, att_classes)
        steps.append(fixed_t + att_t)

    wb = s.weight_bytes(model)
    weight_total = wb.total
    if profile is not None:
        weight_total = wb.total - wb.blocks + sum(profile.layer_weight_bytes) + model.num_layers * 2 * (
            model.hidden_size * (2 if model.norm == "layernorm" else 1) * FP16_BYTES)
        if profile.lm_head_bytes is not None:
            weight_total += profile.lm_head_bytes - wb.lm_head
    widest = max(2 * model.ffn_hidden_size if model.ffn_type == "swiglu" else model.ffn_hidden_size,
                 model.q_dim + 2 * model.kv_dim)
    act_peak = 2 * s.act_bytes(n, model.hidden_size) + n * widest * FP16_BYTES + B * model.vocab_size * FP16_BYTES
    notes = [f"measured profile: {profile.source}"] if profile is not None else []
    if s.attn_window is not None:
        notes.append(f"Λ attention: at most {s.attn_sink + s.attn_window} tokens attended and cached per sequence")
    if model.sliding_window is not None:
        notes.append(f"model sliding window: at most {model.sliding_window} tokens attended")
    return Estimate(
        fidelity="analytical", model=model.name, hardware=hw.name, scheme=s.name, batch=B, prompt_len=P,
        gen_len=G, ttft_s=ttft, decode_step_s=tuple(steps), weight_bytes=int(weight_total),
        kv_bytes_final=sum(ks.kv_cache_bytes(model, w.final_context, B) * c / L for ks, c in kv_groups.items()),
        activation_bytes_peak=act_peak,
        capacity_bytes=hw.memory.capacity_bytes, prefill_ops=_op_classes(pre_classes),
        decode_ops=_op_classes(dec_classes), power_w=hw.power_w, notes=tuple(notes))
