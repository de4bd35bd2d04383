"""The operator list and op_time: shapes, mechanisms by hand, the measured-profile hook, and both models using it."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from hwsim.estimate import estimate
from hwsim.hardware import get_hardware
from hwsim.ops import Op, attention_ops, head_op, linear_ops, op_time
from hwsim.workload import Workload
from models.spec import get_model
from quant.scheme import get_scheme

LLAMA = get_model("llama-2-7b")
FLIGHT = get_hardware("u280-flightllm")
U280 = get_hardware("u280-accllm")


def test_linear_ops_carry_full_shape_and_scheme_bytes():
    s = get_scheme("flightllm")
    ops = {op.name: op for op in linear_ops(LLAMA, FLIGHT, s, 3, "decode")}
    q, down = ops["q_proj"], ops["down_proj"]
    assert (q.tokens, q.k, q.n, q.count, q.phase, q.kind) == (3, 4096, 4096, 32, "decode", "linear")
    assert (q.sparsity, q.density, q.weight_bits, q.act_bits) == ("block", 0.7, 8, 8)
    assert (down.k, down.n, down.sparsity, down.density) == (11008, 4096, "none", 1.0)
    assert q.weight_bytes == s.for_op("q_proj").linear_bytes(LLAMA.block_linears[0])
    assert q.flops == pytest.approx(2 * 3 * 4096 * 4096 * 0.7)
    att = attention_ops(
        LLAMA, s, "decode", 2, np.array([10.0, 20.0]), np.array([10.0, 20.0]), np.array([1.0, 2.0]), 8.0, 32, 2
    )
    assert (att[0].q_heads, att[0].kv_heads, att[0].head_dim, att[0].batch) == (32, 32, 128, 2)
    assert list(att[0].context) == [10.0, 20.0]


def test_memory_bound_linear_by_hand_on_the_active_channels():
    s = get_scheme("flightllm")
    op = next(o for o in linear_ops(LLAMA, FLIGHT, s, 1, "decode") if o.name == "gate_proj")
    t = op_time(op, FLIGHT)
    bw = 24 * 460e9 / 32 * 0.924  # only the 24 channels the SLRs are wired to
    assert t.bound == "memory"
    assert t.parts["memory"] == pytest.approx(op.bytes / bw)
    assert t.seconds == pytest.approx(op.bytes / bw + 1 / 225e6)  # + one SYS barrier (sync_cycles 1)


def test_compute_bound_honours_efficiency_and_sparse_engine():
    hw = dataclasses.replace(
        FLIGHT,
        compute=dataclasses.replace(FLIGHT.compute, matrix_efficiency=0.5),
        fpga=dataclasses.replace(FLIGHT.fpga, sparse_efficiency=0.8, sync_cycles=0),
    )
    op = Op(
        "linear",
        "q_proj",
        "attn_linear",
        "prefill",
        "matrix",
        tokens=512,
        k=4096,
        n=4096,
        weight_bits=8,
        act_bits=8,
        sparsity="block",
        density=0.7,
        flops=2 * 512 * 4096 * 4096 * 0.7,
        bytes=1.0,
    )
    rate = 2 * 2 * 16 * 128 * 3 * 225e6
    t = op_time(op, hw)
    assert t.bound == "compute"
    assert t.seconds == pytest.approx(2 * 512 * 4096 * 4096 * 0.7 / 0.8 / (rate * 0.5))


def test_load_latency_littles_law_and_instruction_issue():
    f = dataclasses.replace(FLIGHT.fpga, outstanding_loads=1, sync_cycles=0, weight_buffer_bytes=1 << 16)
    hw = dataclasses.replace(FLIGHT, fpga=f)
    op = next(o for o in linear_ops(LLAMA, hw, get_scheme("flightllm"), 1, "decode") if o.name == "up_proj")
    t = op_time(op, hw)
    loads = -(-op.weight_bytes // (1 << 16))
    data = op.bytes / hw.stream_bandwidth_bytes_per_s
    per_die = loads / 3
    expect = per_die * max(data / per_die, (110e-9 + data / per_die) / 1)
    assert t.seconds == pytest.approx(expect)
    assert t.parts["load_latency"] == pytest.approx(expect - data)
    issue = dataclasses.replace(hw, fpga=dataclasses.replace(f, outstanding_loads=0, instruction_cycles=10_000.0))
    ti = op_time(op, issue)
    assert ti.bound == "instruction_issue"
    assert ti.seconds == pytest.approx(loads / 3 * 3 * 10_000 / 225e6)


def test_profile_hook_prices_ops():
    class Profile:
        def __init__(self):
            self.seen = []

        def op_time(self, op):
            self.seen.append(op)
            return 1e-3 if op.kind == "linear" else None

        def take_notes(self):
            return []

    @dataclasses.dataclass(frozen=True)
    class Profiled:  # the hook attribute op_time asks (HardwareSpec.gpu_profile when a spec names a profile)
        base: object
        gpu_profile: object

        def __getattr__(self, name):
            return getattr(self.base, name)

    prof = Profile()
    hw = Profiled(get_hardware("h100-sxm"), prof)
    op = head_op(LLAMA, hw.base, get_scheme("fp16"), 1, "decode")
    assert op_time(op, hw).seconds == 1e-3 and op_time(op, hw).bound == "measured"
    assert prof.seen[0].n == 32000 and prof.seen[0].k == 4096
    e = estimate(LLAMA, hw, get_scheme("fp16"), Workload(1, 16, 4))
    linear_cls = {"attn_linear": 4, "ffn": 3}
    for o in e.decode_ops:
        if o.name in linear_cls:
            assert o.time_s == pytest.approx(4 * 32 * linear_cls[o.name] * 1e-3)
    assert any(o.kind == "attention" and isinstance(o.context, np.ndarray) for o in prof.seen)


def test_breakdown_sums_to_the_step_and_utilisation():
    for fid in ("analytical", "cycle"):
        e = estimate(LLAMA, FLIGHT, get_scheme("flightllm"), Workload(1, 128, 64), fidelity=fid)
        assert sum(b.seconds for b in e.decode_breakdown) == pytest.approx(e.tpot_s, rel=1e-6)
        assert 0 < e.bandwidth_utilisation < 1
        assert e.bandwidth_utilisation == pytest.approx(e.decode_bytes_per_step / e.tpot_s / 460e9)
        d = e.to_dict()
        assert d["breakdown"] and d["bandwidth_utilisation"] == e.bandwidth_utilisation


def test_huge_generation_is_closed_form_fast():
    t = time.perf_counter()
    e = estimate(LLAMA, U280, get_scheme("accllm"), Workload(1, 128, 10**12))
    assert time.perf_counter() - t < 10  # sampled, not a loop per token (speed itself is a benchmark figure)
    assert len(e.decode_step_s) == len(e.decode_step_weights) <= 1 << 16
    assert sum(e.decode_step_weights) == 10**12
    # Λ attention caps the cache: after the window every step is the same, so the mean is the capped step
    capped = estimate(LLAMA, U280, get_scheme("accllm"), Workload(1, 5000, 1)).decode_step_s[0]
    assert e.tpot_s == pytest.approx(capped, rel=1e-6)
    c = estimate(LLAMA, U280, get_scheme("accllm"), Workload(1, 128, 10**9), fidelity="cycle")
    assert c.tpot_s == pytest.approx(e.tpot_s, rel=0.12)


def test_sampled_mean_matches_exact_mean():
    from hwsim import estimate as est_mod

    s, w = get_scheme("w2a8kv4"), Workload(1, 64, 3000)
    exact = estimate(LLAMA, U280, s, w)
    old = est_mod.EXACT_DECODE_STEPS
    try:
        est_mod.decode_samples.__defaults__ = (97,)
        sampled = estimate(LLAMA, U280, s, w)
    finally:
        est_mod.decode_samples.__defaults__ = (old,)
    assert len(sampled.decode_step_s) == 97
    assert sampled.tpot_s == pytest.approx(exact.tpot_s, rel=1e-3)


def test_cycle_model_honours_matrix_efficiency():
    from hwsim.cyclesim import Accelerator

    s = get_scheme("fp16")
    m = get_model("smollm2-135m")
    full = dataclasses.replace(U280, compute=dataclasses.replace(U280.compute, matrix_efficiency=1.0))
    half = dataclasses.replace(U280, compute=dataclasses.replace(U280.compute, matrix_efficiency=0.5))
    a, b = Accelerator(m, full, s).prefill(512), Accelerator(m, half, s).prefill(512)
    assert 1.8 < b.cycles / a.cycles <= 2.0  # prefill is compute bound: half the efficiency, ~twice the time


def test_precision_fallback_is_noted():
    e = estimate(LLAMA, FLIGHT, get_scheme("flightllm").replace(weight_bits=4), Workload(1, 16, 2))
    assert any("lists no w4a8 for decode engine; it runs at w8a8" in n for n in e.notes)
    c = estimate(LLAMA, FLIGHT, get_scheme("flightllm").replace(weight_bits=4), Workload(1, 16, 2), fidelity="cycle")
    assert any("lists no w4a8" in n for n in c.notes)


def test_precision_the_engine_lacks_is_refused():
    from base.errors import SpecError

    with pytest.raises(SpecError, match="engine.macs_per_lane lists no precision covering w16a16"):
        estimate(LLAMA, FLIGHT, get_scheme("fp16"), Workload(1, 8, 2))


def test_host_control_and_die_link_in_both_fidelities():
    s, w = get_scheme("flightllm"), Workload(1, 64, 4)
    base = estimate(LLAMA, FLIGHT, s, w)
    host = dataclasses.replace(FLIGHT, fpga=dataclasses.replace(FLIGHT.fpga, host_s_per_token=1e-3))
    assert estimate(LLAMA, host, s, w).tpot_s == pytest.approx(base.tpot_s + 1e-3)
    cb, ch = (estimate(LLAMA, h, s, w, fidelity="cycle") for h in (FLIGHT, host))
    assert ch.tpot_s == pytest.approx(cb.tpot_s + 1e-3, abs=1 / 225e6)
    assert any(b.mechanism == "host" for b in ch.decode_breakdown)
    link = dataclasses.replace(FLIGHT, fpga=dataclasses.replace(FLIGHT.fpga, die_link_bytes_per_cycle=8.0))
    for fid in ("analytical", "cycle"):
        e = estimate(LLAMA, link, s, w, fidelity=fid)
        dl = sum(b.seconds for b in e.decode_breakdown if b.mechanism == "die_link")
        # each of the 7 linears x 32 layers + the LM head exchanges 2/3 of its int8 output over 8 B/cycle
        outs = 32 * (3 * 4096 + 4096 + 2 * 11008 + 4096) + 32000
        assert dl == pytest.approx(outs * 2 / 3 / 8 / 225e6, rel=0.01)


def test_write_turnaround_in_both_fidelities():
    s, w = get_scheme("flightllm"), Workload(1, 64, 4)
    turn = dataclasses.replace(FLIGHT, memory=dataclasses.replace(FLIGHT.memory, turnaround_ns=400.0))
    for fid in ("analytical", "cycle"):
        base, slow = (estimate(LLAMA, h, s, w, fidelity=fid) for h in (FLIGHT, turn))
        # one KV-append write per layer, two turnarounds each (the cycle model rounds 400 ns up to 90 cycles)
        assert slow.tpot_s - base.tpot_s == pytest.approx(32 * 2 * 400e-9, rel=0.02)
