"""The simpy simulation: exact event trace of a tiny run, conservation, requests, injected slowdowns, speed bound."""

import pytest

from offload import Policy, Slowdown, Workload, get_platform, simulate
from offload.planners import make_planner
from offload.platform import PCIE_LANE_BYTES_PER_S


def test_exact_trace_of_a_tiny_flexgen_run(tiny):
    """2 layers, prompt 4, 2 generated tokens; weights and KV on the CPU; a GPU that costs 1 ms per kernel.
    Each route's (start, end) follows from FIFO links, latency that does not occupy a link, and FlexGen's
    load(s+1) || compute(s) || store(s-1) then sync()."""
    plat, model = tiny
    wl = Workload.make(model, batch=1, prompt_len=4, gen_len=2)
    pol = Policy("flexgen", gpu_batch_size=1, w_gpu=0.0, w_cpu=1.0, kv_gpu=0.0, kv_cpu=1.0, route_chunks=1)
    res = simulate(plat, wl, pol, trace=True)

    bw = PCIE_LANE_BYTES_PER_S[4] * 16 * 0.5
    lat, c = 1e-5, 1e-3
    tw = wl.layer_weight_bytes / bw
    tk = wl.layer_kv_bytes(4) / bw  # cache read by the decode step (4 tokens)
    tp = wl.layer_kv_bytes(4) / bw  # cache written by the prefill
    td = (wl.layer_kv_bytes(5) - wl.layer_kv_bytes(4)) / bw  # one new token's K/V
    t0 = tw + lat
    t1 = t0 + max(tw + lat, c)
    t2 = t1 + max(tw + tk + lat, c, tp + lat)
    t3 = t2 + max(tw + tk + lat, c, tp + lat)
    t4 = t3 + max(c, td + lat)
    expected = [
        (0, "load", "load_weights[cpu]", 0.0, tw + lat),
        (0, "compute", "compute", t0, t0 + c),
        (1, "load", "load_weights[cpu]", t0, t0 + tw + lat),
        (1, "compute", "compute", t1, t1 + c),
        (2, "load", "load_weights[cpu]", t1, t1 + tw + lat),
        (2, "load", "load_cache[cpu]", t1, t1 + tw + tk + lat),
        (0, "store", "store_cache[cpu]", t1, t1 + tp + lat),
        (2, "compute", "compute", t2, t2 + c),
        (3, "load", "load_weights[cpu]", t2, t2 + tw + lat),
        (3, "load", "load_cache[cpu]", t2, t2 + tw + tk + lat),
        (1, "store", "store_cache[cpu]", t2, t2 + tp + lat),
        (3, "compute", "compute", t3, t3 + c),
        (2, "store", "store_cache[cpu]", t3, t3 + td + lat),
        (3, "store", "store_cache[cpu]", t4, t4 + td + lat),
    ]
    got = [(e.step, e.stage, e.route, e.start_s, e.end_s) for e in res.trace]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    for g, e in zip(got, expected):
        assert g[3:] == pytest.approx(e[3:], rel=1e-12, abs=1e-15), g
    assert res.prefill_s == pytest.approx(t2, rel=1e-12)
    assert res.total_s == pytest.approx(t4 + td + lat, rel=1e-12)
    assert [(e.token, e.layer) for e in res.trace[:4]] == [(0, 0), (0, 0), (0, 1), (0, 1)]


def _check_conservation(res, planner, wl):
    for st in res.stores.values():
        assert st.conservation_error_bytes == pytest.approx(0.0, abs=1e-3 * max(1.0, st.written_bytes)), st
        assert st.peak_bytes <= st.capacity_bytes or st.capacity_bytes == 0 and st.peak_bytes == 0
    exp = planner.expected_final_kv()
    init = planner.initial_residency()
    for name, st in res.stores.items():
        # what stays resident = weights placed there + the final cache (every transient buffer was freed)
        assert st.resident_bytes == pytest.approx(init[name] + exp[name], rel=1e-9, abs=1e-3), name
    assert res.requests_completed == res.requests_submitted == wl.batch


CASES = {
    "flexgen-all-tiers": (
        "a6000-ssd",
        Policy(
            "flexgen",
            gpu_batch_size=4,
            num_gpu_batches=2,
            w_gpu=0.5,
            w_cpu=0.25,
            kv_gpu=0.2,
            kv_cpu=0.5,
            act_gpu=0.0,
            act_cpu=0.5,
        ),
    ),
    "flexgen-no-overlap": ("a6000-ssd", Policy("flexgen", gpu_batch_size=8, kv_gpu=0.3, kv_cpu=0.3, overlap=False)),
    "flexgen-cpu-attention": (
        "a6000-ssd",
        Policy(
            "flexgen",
            gpu_batch_size=4,
            num_gpu_batches=2,
            w_gpu=0.75,
            w_cpu=0.25,
            kv_gpu=0.2,
            kv_cpu=0.5,
            act_gpu=0.5,
            act_cpu=0.5,
            cpu_attention=True,
        ),
    ),
    "leoam": ("a6000-ssd", Policy("leoam", gpu_batch_size=8, kv_gpu=0.1, kv_cpu=0.5, load_fraction=0.25)),
    "instinfer-sparse": (
        "a6000-csd",
        Policy("instinfer", gpu_batch_size=4, num_gpu_batches=2, topk_fraction=0.125, topr_channels=16),
    ),
    "instinfer-dense": ("a6000-csd", Policy("instinfer", gpu_batch_size=8, w_gpu=0.5, w_cpu=0.5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bytes_are_conserved_and_every_request_completes(case):
    plat_name, pol = CASES[case]
    plat = get_platform(plat_name)
    wl = Workload.make("opt-13b", batch=8, prompt_len=96, gen_len=40)
    res = simulate(plat, wl, pol)
    _check_conservation(res, make_planner(plat, wl, pol), wl)
    # the final cache of a FlexGen-style policy is the scheme's KV size, split by the placement fractions
    if pol.kind == "flexgen":
        kv = wl.scheme.kv_cache_bytes(wl.model, 96 + 40 - 1, 8)
        assert res.stores["cpu"].resident_bytes == pytest.approx(
            kv * pol.kv_cpu + wl.layer_weight_bytes * wl.model.num_layers * pol.w_cpu, rel=1e-9
        )


def test_flexgen_link_bytes_match_the_loop():
    """Every decode step reads the offloaded cache once over PCIe; every step reloads the offloaded weights."""
    plat = get_platform("a6000-ssd")
    wl = Workload.make("opt-13b", batch=8, prompt_len=64, gen_len=8)
    pol = Policy("flexgen", gpu_batch_size=8, w_gpu=0.75, w_cpu=0.25, kv_gpu=0.25, kv_cpu=0.75)
    res = simulate(plat, wl, pol)
    L = wl.model.num_layers
    kv_reads = sum(wl.layer_kv_bytes(wl.decode_context(t)) for t in range(1, wl.gen_len)) * L * 0.75
    weights = wl.layer_weight_bytes * 0.25 * L * wl.gen_len
    assert res.bytes_moved["pcie_h2d"] == pytest.approx(kv_reads + weights, rel=1e-12)
    kv_writes = wl.kv_total_bytes(wl.final_context) * 0.75
    assert res.bytes_moved["pcie_d2h"] == pytest.approx(kv_writes, rel=1e-12)
    assert res.stores["cpu"].read_bytes == pytest.approx(kv_reads + weights, rel=1e-12)


@pytest.mark.parametrize("case", ["instinfer-sparse", "flexgen-all-tiers"])
def test_a_drive_at_ten_percent_for_a_window(case):
    plat_name, pol = CASES[case]
    plat = get_platform(plat_name)
    wl = Workload.make("opt-13b", batch=8, prompt_len=96, gen_len=40)
    base = simulate(plat, wl, pol)
    channel = "csd_flash_read" if pol.kind == "instinfer" else "disk_read"
    window = (base.prefill_s, base.prefill_s + 0.5 * base.decode_s)
    slow = simulate(plat, wl, pol, slowdowns=[Slowdown(channel, *window, factor=0.1, member=0)])
    _check_conservation(slow, make_planner(plat, wl, pol), wl)
    assert slow.total_s > base.total_s * 1.05  # the straggler drive holds every striped read back
    assert slow.bytes_moved == pytest.approx(base.bytes_moved, rel=1e-12)  # it changes time, never bytes
    assert slow.prefill_s == pytest.approx(base.prefill_s, rel=1e-12)  # the window opens after the prefill


def test_unknown_slowdown_channel_is_a_spec_error():
    from base.errors import SpecError

    plat = get_platform("a6000-ssd")
    wl = Workload.make("opt-13b", batch=8, prompt_len=32, gen_len=2)
    with pytest.raises(SpecError, match="lacks; use one of"):
        simulate(plat, wl, CASES["flexgen-no-overlap"][1], slowdowns=[Slowdown("csd_flash_read", 0.0, 1.0, 0.1)])


def test_event_count_is_bounded_by_layer_steps():
    """The simulation is per layer step, not per byte: events grow with layers x tokens only."""
    plat = get_platform("a6000-csd")
    pol = CASES["instinfer-sparse"][1]
    a = simulate(plat, Workload.make("opt-13b", batch=8, prompt_len=64, gen_len=20), pol)
    b = simulate(plat, Workload.make("opt-13b", batch=8, prompt_len=1024, gen_len=20), pol)
    assert a.events == b.events  # 16x the context, same events
    assert a.events < 20 * 40 * 12


def test_cpu_attention_keeps_the_cpu_cache_share_off_pcie():
    plat = get_platform("a6000-ssd")
    wl = Workload.make("opt-13b", batch=8, prompt_len=64, gen_len=8)
    base = Policy("flexgen", gpu_batch_size=8, kv_gpu=0.0, kv_cpu=1.0)
    gpu_att = simulate(plat, wl, base)
    cpu_att = simulate(plat, wl, base.replace(cpu_attention=True))
    m, L = wl.model, wl.model.num_layers
    steps = (wl.gen_len - 1) * L
    # only the attention outputs come back to the GPU; q and the fresh k, v rows go to the CPU
    assert cpu_att.bytes_moved["pcie_h2d"] == pytest.approx(steps * 8 * m.q_dim * 2, rel=1e-12)
    prefill_kv = wl.kv_total_bytes(wl.prompt_len)
    assert cpu_att.bytes_moved["pcie_d2h"] == pytest.approx(
        prefill_kv + steps * 8 * (m.q_dim + 2 * m.kv_dim) * 2, rel=1e-12
    )
    assert gpu_att.bytes_moved["pcie_h2d"] > 10 * cpu_att.bytes_moved["pcie_h2d"]
    assert cpu_att.busy_s["cpu"] > 0 and gpu_att.busy_s["cpu"] == 0
    assert cpu_att.stores["cpu"].resident_bytes == pytest.approx(wl.kv_total_bytes(wl.final_context), rel=1e-9)


@pytest.mark.parametrize("scheme", ["w2a8kv4", "accllm"])
@pytest.mark.parametrize("case", ["flexgen-all-tiers", "flexgen-cpu-attention", "leoam", "instinfer-sparse"])
def test_conservation_with_compressed_and_evicting_caches(scheme, case):
    """KV4 chunks shrink when compressed and Λ attention evicts: negative K/V deltas free bytes in every tier."""
    plat_name, pol = CASES[case]
    plat = get_platform(plat_name)
    wl = Workload.make("opt-13b", batch=8, prompt_len=100, gen_len=70, scheme=scheme)
    if scheme == "accllm":  # a short Λ window so that eviction happens inside this run
        wl = Workload.make(
            "opt-13b", batch=8, prompt_len=100, gen_len=70, scheme=wl.scheme.replace(attn_sink=4, attn_window=128)
        )
    res = simulate(plat, wl, pol)
    _check_conservation(res, make_planner(plat, wl, pol), wl)
