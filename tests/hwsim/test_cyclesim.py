"""Cycle-level simulator: memory and pipeline primitives, jumps == step-by-step, the accelerator against the
roofline bound and the analytical model, estimate() plumbing and measured profiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from base.errors import SpecError
from hwsim.cyclesim import Accelerator, MemoryBus, MemoryModel, estimate_cycle, macs_per_cycle, roofline_bound_s
from hwsim.cyclesim._pipeline import TileStream
from hwsim.estimate import estimate
from hwsim.hardware import get_hardware
from hwsim.workload import Workload
from models.spec import get_model
from quant.measured import MeasuredProfile
from quant.scheme import get_scheme

U280 = get_hardware("u280-accllm")
LLAMA = get_model("llama-2-7b")


# ---- memory --------------------------------------------------------------------------------------------------
def test_memory_model_from_u280_by_hand():
    m = MemoryModel.from_hardware(U280)
    # 460 GB/s / 32 channels x 0.924 efficiency / 225 MHz = 59.03 B per cycle per channel
    assert m.channel_bytes_per_cycle == pytest.approx(460e9 / 32 * 0.924 / 225e6)
    assert m.latency_cycles == math.ceil(110e-9 * 225e6)  # 24.75 -> 25
    assert m.transfer_cycles(0) == 0
    assert m.transfer_cycles(1) == 1  # one 32-byte burst on one channel
    assert m.transfer_cycles(32 * 32) == 1  # one burst on each of the 32 channels
    assert m.transfer_cycles(32 * 32 + 1) == 2  # a second burst on channel 0: 64 B / 59.03 B per cycle
    assert m.transfer_cycles(262144) == math.ceil(8192 / m.channel_bytes_per_cycle)  # 256 bursts per channel


def test_bus_fifo_hides_latency_behind_older_data():
    m = MemoryModel(channels=1, burst_bytes=1, channel_bytes_per_cycle=1.0, latency_cycles=10)
    bus = MemoryBus(m)
    assert bus.read(0, 100) == 110  # latency then 100 cycles of data
    assert bus.read(5, 50) == 160  # queued behind the first: its latency is hidden
    assert bus.read(500, 1) == 511  # idle bus: full latency again
    assert bus.bytes_moved == 151 and bus.busy_cycles == 151


# ---- the double-buffered stream: jumping == tile by tile -----------------------------------------------------
@settings(max_examples=60)
@given(
    runs=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 5000), st.integers(1, 300)), min_size=1, max_size=4),
    latency=st.integers(0, 60),
    ready=st.integers(0, 3000),
    buffers=st.integers(1, 3),
    prefetch=st.integers(0, 3),
)
def test_tile_stream_jump_is_exact(runs, latency, ready, buffers, prefetch):
    m = MemoryModel(channels=4, burst_bytes=32, channel_bytes_per_cycle=7.5, latency_cycles=latency)
    results = []
    for jump in (True, False):
        bus = MemoryBus(m)
        s = TileStream(bus, buffers, jump=jump)
        ends = []
        for i, (n, nbytes, comp) in enumerate(runs):
            ends.append(s.run(n, nbytes, comp, ready * i, next_bytes=nbytes, next_count=prefetch))
        results.append((ends, bus.busy_until, bus.bytes_moved, bus.busy_cycles, s.tiles, tuple(s.pending)))
    assert results[0] == results[1]


def test_tile_stream_steady_state_by_hand():
    # memory-bound: 10 tiles of 100 cycles of data each, 10 cycles of compute: last compute ends after the
    # latency, 10 transfers and one compute
    m = MemoryModel(channels=1, burst_bytes=1, channel_bytes_per_cycle=1.0, latency_cycles=5)
    s = TileStream(MemoryBus(m), 2)
    assert s.run(10, 100, 10) == 5 + 10 * 100 + 10
    # compute-bound: first tile's data, then 10 computes back to back
    s = TileStream(MemoryBus(m), 2)
    assert s.run(10, 10, 100) == 5 + 10 + 10 * 100


# ---- the accelerator ----------------------------------------------------------------------------------------
def test_macs_per_cycle_dsp_packing():
    assert macs_per_cycle(U280, 2, 8) == 4096 * 4
    assert macs_per_cycle(U280, 3, 8) == 4096 * 4  # falls back to w4a8
    assert macs_per_cycle(U280, 8, 8) == 4096 * 2
    assert macs_per_cycle(U280, 16, 16) == 4096 // 4


FLIGHT = get_hardware("u280-flightllm")


@pytest.mark.parametrize(
    "scheme,context,hw",
    [
        ("accllm", 3000, U280),
        ("w2a8kv4", 700, U280),
        ("flightllm", 300, FLIGHT),
        ("mustafar70", 900, U280),
        ("flightllm", 2000, FLIGHT),
    ],
)
def test_decode_jumps_are_exact(scheme, context, hw):
    s = get_scheme(scheme)
    fast = Accelerator(LLAMA, hw, s).decode_step(context)
    slow = Accelerator(LLAMA, hw, s, jump=False).decode_step(context)
    assert fast.cycles == slow.cycles
    assert fast.bytes_moved == slow.bytes_moved
    assert fast.class_cycles == slow.class_cycles


def test_prefill_jumps_are_exact():
    s = get_scheme("accllm")
    m = get_model("smollm2-135m")
    assert Accelerator(m, U280, s).prefill(200).cycles == Accelerator(m, U280, s, jump=False).prefill(200).cycles


@settings(max_examples=25)
@given(
    model=st.sampled_from(["llama-2-7b", "llama-3-8b", "smollm2-135m", "opt-6.7b"]),
    scheme=st.sampled_from(["accllm", "w2a8kv4", "flightllm", "fp16", "w4a16", "mustafar70"]),
    context=st.integers(1, 5000),
    batch=st.integers(1, 3),
)
def test_never_faster_than_roofline(model, scheme, context, batch):
    m, s = get_model(model), get_scheme(scheme)
    hw = FLIGHT if scheme == "flightllm" else U280
    r = Accelerator(m, hw, s).decode_step(context, batch)
    assert r.cycles / hw.freq_hz >= roofline_bound_s(m, hw, s, context, batch)
    # and never faster than its own traffic at the sustained bandwidth
    assert r.cycles >= r.bus_busy_cycles


# Tolerance, stated: for 7B-8B models on the U280 the cycle model's decode step is within 12% of the analytical
# roofline. Where the analytical model is optimistic it is for reasons the cycle model resolves: latency-bound
# double buffering of wide (fp16) weight rows, the attention engines' per-block overheads; where it is slower it
# counts activation traffic to HBM and a 0.9 matrix efficiency that the cycle model replaces by explicit pipeline
# fill. (Small models like SmolLM2-135M fall outside: 9 heads leave 23 of the 32 lockstep engines idle.)
@pytest.mark.parametrize("model", ["llama-2-7b", "llama-3-8b", "mistral-7b", "opt-6.7b"])
@pytest.mark.parametrize("scheme", ["accllm", "w2a8kv4", "flightllm", "fp16", "w4a16", "mustafar70"])
def test_agrees_with_analytical(model, scheme):
    from hwsim.analytical import estimate_analytical

    m, s = get_model(model), get_scheme(scheme)
    hw = FLIGHT if scheme == "flightllm" else U280
    acc = Accelerator(m, hw, s)
    for context in (128, 1024, 4096):
        cyc = acc.decode_step(context).cycles / hw.freq_hz
        ana = estimate_analytical(m, hw, s, Workload(1, context - 1, 1)).decode_step_s[0]
        assert 0.88 <= cyc / ana <= 1.12, (context, cyc / ana)


def test_longer_context_never_faster():
    acc = Accelerator(LLAMA, U280, get_scheme("w2a8kv4"))
    steps = [acc.decode_step(c).cycles for c in range(1, 3000, 97)]
    assert steps == sorted(steps)


def test_lambda_attention_saturates():
    acc = Accelerator(LLAMA, U280, get_scheme("accllm"))  # 4 sink + 2048 window tokens
    a, b = acc.decode_step(64 * 60), acc.decode_step(64 * 70)
    assert a.cycles == b.cycles  # same block pattern once the window has filled (context multiple of 64)
    assert acc.decode_step(2052).cycles > acc.decode_step(1000).cycles


def test_estimate_cycle_through_estimate():
    w = Workload(batch=1, prompt_len=64, gen_len=8)
    s = get_scheme("accllm")
    est = estimate(LLAMA, U280, s, w, fidelity="cycle")
    ana = estimate(LLAMA, U280, s, w)
    assert est.fidelity == "cycle" and len(est.decode_step_s) == 8
    assert est.weight_bytes == ana.weight_bytes and est.kv_bytes_final == ana.kv_bytes_final
    assert est.decode_step_s == tuple(
        Accelerator(LLAMA, U280, s).decode_step(c).cycles / U280.freq_hz for c in range(65, 73)
    )
    assert sum(o.time_s for o in est.decode_ops) == pytest.approx(sum(est.decode_step_s))
    assert est.ttft_s > 0 and {o.name for o in est.decode_ops} >= {"ffn", "attn_linear", "attention", "lm_head"}


def test_gpu_hardware_refused():
    with pytest.raises(SpecError, match="FPGA"):
        estimate_cycle(LLAMA, get_hardware("a100-80gb"), get_scheme("fp16"), Workload(1, 8, 2))


@pytest.mark.parametrize(
    "scheme",
    [
        get_scheme("mustafar70"),  # fp16 sparse KV: attention on the linear engine
        get_scheme("w2a8kv4").replace(kv_sparsity=0.5),
    ],
)  # int4 bitmap KV: engines
def test_measured_profile_drives_the_simulation(scheme):
    s = scheme
    m = get_model("smollm2-135m")
    nominal = sum(s.linear_bytes(lin) for lin in m.block_linears)
    w = Workload(1, 500, 2)
    base = estimate_cycle(m, U280, s, w)
    same = estimate_cycle(m, U280, s, w, MeasuredProfile("test", (nominal,) * m.num_layers))
    assert same.decode_step_s == base.decode_step_s
    heavy = MeasuredProfile("test", (nominal,) * (m.num_layers - 1) + (3 * nominal,))
    assert estimate_cycle(m, U280, s, w, heavy).tpot_s > base.tpot_s
    denser = MeasuredProfile("test", (nominal,) * m.num_layers, kv_sparsity_per_layer=(0.3,) * m.num_layers)
    sparser = MeasuredProfile("test", (nominal,) * m.num_layers, kv_sparsity_per_layer=(0.9,) * m.num_layers)
    d, sp = estimate_cycle(m, U280, s, w, denser), estimate_cycle(m, U280, s, w, sparser)
    # fewer KV bytes read; never slower (with 64 lanes a bitmap tile still takes its one cycle in the RTL engine,
    # so a compute-bound engine does not speed up with sparsity -- only the HBM traffic shrinks)
    att = lambda e: next(o for o in e.decode_ops if o.name == "attention")  # noqa: E731
    assert att(sp).bytes < att(d).bytes
    assert d.tpot_s >= sp.tpot_s


@pytest.mark.parametrize("scheme", ["accllm", "fp16"])
def test_prefill_never_faster_than_engine_peak(scheme):
    m, s = get_model("smollm2-135m"), get_scheme(scheme)
    for prompt in (1, 100, 700):
        r = Accelerator(m, U280, s).prefill(prompt)
        density = 0.5 if s.weight_pruning == "2:4" else 1.0
        macs = prompt * m.num_layers * sum(l.weight_elems for l in m.block_linears) * density
        assert r.cycles >= macs / macs_per_cycle(U280, s.weight_bits, s.act_bits)
        assert r.cycles >= r.bus_busy_cycles


def test_fpga_without_cycle_fields_refused_with_the_fix():
    with pytest.raises(SpecError, match="weight_buffer_bytes|attention_lanes|engine_dsps"):
        Accelerator(LLAMA, get_hardware("ecp5-85f"), get_scheme("accllm"))


def test_buffers_must_fit_on_chip():
    import dataclasses

    assert Accelerator(LLAMA, U280, get_scheme("accllm")).on_chip_bytes <= U280.on_chip_bytes
    big = dataclasses.replace(U280, fpga=dataclasses.replace(U280.fpga, activation_buffer_bytes=U280.on_chip_bytes))
    with pytest.raises(SpecError, match="shrink the buffers"):
        Accelerator(LLAMA, big, get_scheme("accllm"))


@settings(max_examples=15)
@given(
    channels=st.sampled_from([1, 4, 32]),
    burst=st.sampled_from([32, 64, 256]),
    latency=st.floats(0, 400),
    buf=st.integers(4096, 1 << 20),
    lanes=st.sampled_from([8, 64]),
    engines=st.integers(1, 12),
    scheme=st.sampled_from(["accllm", "fp16", "w2a8kv4"]),
    context=st.integers(1, 3000),
    batch=st.integers(1, 2),
)
def test_layer_and_tile_jumps_exact_on_random_designs(
    channels, burst, latency, buf, lanes, engines, scheme, context, batch
):
    import dataclasses

    hw = dataclasses.replace(
        U280,
        memory=dataclasses.replace(U280.memory, channels=channels, burst_bytes=burst, latency_ns=latency),
        fpga=dataclasses.replace(U280.fpga, weight_buffer_bytes=buf, attention_lanes=lanes, attention_engines=engines),
    )
    m, s = get_model("smollm2-135m"), get_scheme(scheme)
    fast = Accelerator(m, hw, s).decode_step(context, batch)
    slow = Accelerator(m, hw, s, jump=False).decode_step(context, batch)
    assert (fast.cycles, fast.bytes_moved, fast.bus_busy_cycles) == (
        slow.cycles,
        slow.bytes_moved,
        slow.bus_busy_cycles,
    )
