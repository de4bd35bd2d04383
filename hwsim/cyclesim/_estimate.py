"""`estimate_cycle`: the cycle-level simulator behind ``estimate(..., fidelity="cycle")``."""

from __future__ import annotations

from hwsim.cyclesim._accel import Accelerator, StepResult
from hwsim.cyclesim._linear import macs_per_cycle
from hwsim.estimate import Breakdown, Estimate, MeasuredProfile, OpClass, decode_samples
from hwsim.hardware import HardwareSpec
from hwsim.ops import linear_ops
from hwsim.workload import Workload
from models.spec import ModelSpec
from quant.scheme import CompressionScheme

__all__ = ["estimate_cycle", "roofline_bound_s", "decode_contexts", "CYCLE_EXACT_STEPS"]

CYCLE_EXACT_STEPS = 4096  # up to this many decode steps are simulated one by one; beyond, this many samples


def decode_contexts(w: Workload) -> range:
    """Context (tokens in the cache, the new one included) of each decode step: step i runs at prompt_len + i + 1,
    as in the analytical model."""
    return range(w.prompt_len + 1, w.prompt_len + w.gen_len + 1)


def _op_classes(results: list[tuple[StepResult, float]], freq: float, bytes_per_cycle: float) -> tuple[OpClass, ...]:
    cyc: dict[str, float] = {}
    nbytes: dict[str, float] = {}
    flops: dict[str, float] = {}
    comp: dict[str, float] = {}
    for r, n in results:
        for k in r.class_cycles:
            cyc[k] = cyc.get(k, 0) + n * r.class_cycles[k]
            nbytes[k] = nbytes.get(k, 0) + n * r.class_bytes[k]
            flops[k] = flops.get(k, 0) + n * r.class_flops[k]
            comp[k] = comp.get(k, 0) + n * r.class_compute[k]
    return tuple(
        OpClass(
            k, flops[k], nbytes[k], cyc[k] / freq, "compute" if comp[k] >= nbytes[k] / bytes_per_cycle else "memory"
        )
        for k in cyc
    )


def estimate_cycle(
    model: ModelSpec,
    hw: HardwareSpec,
    scheme: CompressionScheme,
    workload: Workload,
    profile: MeasuredProfile | None = None,
) -> Estimate:
    """Simulate prefill and the decode steps of `workload` on the FPGA design `hw` (see hwsim/cyclesim): every step
    up to CYCLE_EXACT_STEPS, midpoint samples beyond (`hwsim.estimate.decode_samples`)."""
    from hwsim.analytical import estimate_analytical, precision_notes

    acc = Accelerator(model, hw, scheme, profile)
    B = workload.batch
    pre = acc.prefill(workload.prompt_len, B)
    contexts, weights = decode_samples(workload.prompt_len, workload.gen_len, CYCLE_EXACT_STEPS)
    steps: list[StepResult] = [acc.decode_step(int(c), B) for c in contexts]
    wts = [1.0] * len(steps) if weights is None else weights.tolist()
    f = hw.freq_hz
    counts: dict[int, list] = {}
    for r, wt in zip(steps, wts):
        counts.setdefault(id(r), [r, 0.0])[1] += wt
    bpc = acc.mem.bytes_per_cycle
    G = workload.gen_len
    mech: dict[tuple[str, str], float] = {}
    moved = 0.0
    for r, n in counts.values():
        moved += n * r.bytes_moved
        for key, c in r.mechanism_cycles.items():
            mech[key] = mech.get(key, 0.0) + n * c
    breakdown = tuple(Breakdown(c, m, v / f / G) for (c, m), v in sorted(mech.items(), key=lambda kv: -kv[1]))
    # footprint figures (weights, KV at the final length, activations) do not depend on timing: the analytical
    # model's, so that both fidelities report the same memory use
    kw = {"profile": profile} if profile is not None else {}
    fp = estimate_analytical(model, hw, scheme, Workload(batch=B, prompt_len=workload.prompt_len, gen_len=1), **kw)
    mpc = macs_per_cycle(hw, scheme.weight_bits, scheme.act_bits)
    notes = [
        f"cycle-level: {hw.freq_hz / 1e6:g} MHz, {acc.mem.channels} memory channels x "
        f"{acc.mem.channel_bytes_per_cycle:.1f} B/cycle sustained, latency {acc.mem.latency_cycles} cycles; "
        f"decode engine {mpc} MACs/cycle at w{scheme.weight_bits}a{scheme.act_bits} "
        f"x matrix efficiency {hw.compute.matrix_efficiency:g}"
    ]
    if acc.int_kv:
        notes.append(
            f"decode attention on {hw.fpga.attention_engines} RTL attention engines x {hw.fpga.attention_lanes} lanes"
        )
    else:
        notes.append("decode attention runs on the linear engine (fp16 KV, or no RTL attention engines in the design)")
    if profile is not None:
        notes.append(f"per-layer weight bytes and KV sparsity measured on {profile.source}")
    if weights is not None:
        notes.append(f"decode: {G:,} steps simulated at {len(contexts):,} evenly spaced contexts (midpoint rule)")
    notes += [n for n in precision_notes(linear_ops(model, hw, scheme, B, "decode", profile, B), hw)]
    kv_final = scheme.kv_cache_bytes(model, workload.final_context, B)
    return Estimate(
        fidelity="cycle",
        model=model.name,
        hardware=hw.name,
        scheme=scheme.name,
        batch=B,
        prompt_len=workload.prompt_len,
        gen_len=G,
        ttft_s=pre.cycles / f,
        decode_step_s=tuple(r.cycles / f for r in steps),
        weight_bytes=fp.weight_bytes,
        kv_bytes_final=kv_final,
        activation_bytes_peak=fp.activation_bytes_peak,
        capacity_bytes=hw.memory.capacity_bytes,
        prefill_ops=_op_classes([(pre, 1)], f, bpc),
        decode_ops=_op_classes(list(counts.values()), f, bpc),
        power_w=hw.power_w,
        notes=tuple(dict.fromkeys(notes + list(fp.notes))),
        decode_step_weights=() if weights is None else tuple(wts),
        decode_breakdown=breakdown,
        decode_bytes_per_step=moved / G,
        peak_bandwidth_bytes_per_s=hw.memory.bandwidth_bytes_per_s,
    )


def roofline_bound_s(
    model: ModelSpec, hw: HardwareSpec, scheme: CompressionScheme, context: int, batch: int = 1
) -> float:
    """A lower bound on one decode step at `context`: the bytes the step must read (all weights streamed per step,
    the attended KV cache, from quant/scheme.py) at the active channels' sustained bandwidth, or the linear
    engine's MACs (THE operator list, sparsity the engines skip applied) at its peak rate, whichever is longer.
    No schedule can beat it."""
    wb = scheme.weight_bytes(model)
    kv = batch * scheme.kv_bytes_for_tokens(model, scheme.kv_attended_tokens(model, context))
    t_mem = (wb.read_per_decode_step + kv) / hw.stream_bandwidth_bytes_per_s
    t_cmp = 0.0
    for op in linear_ops(model, hw, scheme, batch, "decode"):
        dense = op.flops / 2 / op.density
        t_cmp += (
            op.count
            * dense
            * hw.sparse_speedup(op.sparsity, op.density)
            / (macs_per_cycle(hw, op.weight_bits, op.act_bits) * hw.freq_hz)
        )
    return max(t_mem, t_cmp)
