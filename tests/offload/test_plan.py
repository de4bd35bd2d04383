"""offload/plan.py (the plan types) and the planners that build plans (offload/planners)."""

import dataclasses

import pytest

from offload import Policy, Workload, get_platform
from offload.plan import STORES, Effect, Hop, Route, StepPlan, Use
from offload.planners import PLANNERS, FlexGenPlanner, InstInferPlanner, LeoAMPlanner, make_planner
from quant.scheme import CompressionScheme

W4KV4 = CompressionScheme(name="w4kv4", weight_bits=4, weight_group_size=64, kv_bits=4, kv_group_size=64)


def test_plan_types_are_frozen_and_stages_are_ordered():
    r = Route("x", (Hop((Use("pcie_h2d", 1.0, nbytes=10.0),)),), effects=(Effect("gpu", "write", 10.0),))
    plan = StepPlan(load=(r,), compute=(), store=())
    assert [name for name, _ in plan.stages] == ["load", "compute", "store"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.chunks = 2
    assert STORES == ("gpu", "cpu", "disk", "csd")


def test_registry_dispatches_on_the_planner_classes():
    assert PLANNERS == {"flexgen": FlexGenPlanner, "leoam": LeoAMPlanner, "instinfer": InstInferPlanner}
    plat = get_platform("a6000-csd")
    wl = Workload.make("opt-13b", 8, 64, 4)
    for kind, cls in PLANNERS.items():
        pol = Policy(kind, gpu_batch_size=8)
        assert type(make_planner(plat, wl, pol)) is cls


def _gpu_seconds(plan):
    return sum(
        u.seconds for _, routes in plan.stages for r in routes for h in r.hops for u in h.uses if u.channel == "gpu"
    )


def test_compressed_weights_cost_a_decompression_pass_per_gpu_batch():
    plat = get_platform("a6000-ssd")
    wl = Workload.make("opt-13b", 8, 512, 4, W4KV4.replace(kv_bits=16))
    one = make_planner(plat, wl, Policy("flexgen", gpu_batch_size=8, w_gpu=0.0, w_cpu=1.0, kv_gpu=1.0))
    two = make_planner(
        plat, wl, Policy("flexgen", gpu_batch_size=4, num_gpu_batches=2, w_gpu=0.0, w_cpu=1.0, kv_gpu=1.0)
    )
    c = plat.compression
    bw = plat.gpu_spec.memory.bandwidth_bytes_per_s
    per_pass = (wl.layer_weight_bytes + wl.layer_weight_fp16_bytes) / (bw * c.gpu_dequant_bandwidth_fraction)
    assert one.weight_codec_s() == pytest.approx(per_pass)
    assert two.weight_codec_s() == pytest.approx(2 * per_pass)
    plain = make_planner(
        plat, Workload.make("opt-13b", 8, 512, 4), Policy("flexgen", gpu_batch_size=8, w_gpu=0.0, w_cpu=1.0, kv_gpu=1.0)
    )
    assert plain.weight_codec_s() == 0.0
    # the compressed layer moves 3.6x fewer bytes but its GPU step now pays the decompression
    dec = one.plan("decode", 512, False, False)
    assert _gpu_seconds(dec) > per_pass


def test_compressed_cache_on_the_cpu_pays_decompression_on_the_gpu():
    plat = get_platform("a6000-ssd")
    wl = Workload.make("opt-13b", 8, 512, 4, W4KV4.replace(weight_bits=16))
    p = make_planner(plat, wl, Policy("flexgen", gpu_batch_size=8, kv_gpu=0.0, kv_cpu=1.0))
    kv, fp16 = wl.layer_kv_bytes(512), wl.layer_kv_fp16_bytes(512)
    assert fp16 > 3 * kv
    assert p.kv_codec_s(kv, fp16, 0.0, 0.0) == pytest.approx(
        (kv + fp16) / (plat.gpu_spec.memory.bandwidth_bytes_per_s * plat.compression.gpu_dequant_bandwidth_fraction)
    )


def test_pageable_host_buffers_slow_the_link(tiny):
    plat, model = tiny
    plat = dataclasses.replace(plat, gpu_link=dataclasses.replace(plat.gpu_link, pageable_efficiency=0.25))
    wl = Workload.make(model, 4, 32, 4)
    pinned = Policy("flexgen", gpu_batch_size=4, w_gpu=0.0, w_cpu=1.0, kv_gpu=1.0)
    p1 = make_planner(plat, wl, pinned).plan("decode", 32, False, False)
    p2 = make_planner(plat, wl, pinned.replace(pinned=False)).plan("decode", 32, False, False)
    t1 = sum(u.seconds for r in p1.load for h in r.hops for u in h.uses if u.channel == "pcie_h2d")
    t2 = sum(u.seconds for r in p2.load for h in r.hops for u in h.uses if u.channel == "pcie_h2d")
    assert t2 == pytest.approx(t1 * 0.5 / 0.25)


def test_pageable_without_a_measured_rate_is_refused(tiny):
    from base.errors import SpecError

    plat, model = tiny
    wl = Workload.make(model, 4, 32, 4)
    with pytest.raises(SpecError, match="no pageable_efficiency"):
        make_planner(plat, wl, Policy("flexgen", gpu_batch_size=4, pinned=False))


def test_measured_cpu_attention_replaces_the_roofline(tiny):
    from offload.platform import CpuAttentionSpec

    plat, model = tiny
    spec = CpuAttentionSpec(bytes_per_s=1e9, call_s=1e-3, per_head_s=1e-6)
    plat = dataclasses.replace(plat, host=dataclasses.replace(plat.host, cpu_attention=spec))
    wl = Workload.make(model, 4, 32, 4)
    p = make_planner(plat, wl, Policy("flexgen", gpu_batch_size=4, kv_cpu=1.0, cpu_attention=True))
    use = p.cpu_attention(4, 32, 1000.0, 1000.0)
    assert use.seconds == pytest.approx(1e-3 + 1e-6 * 4 * model.num_heads + 1000.0 / 1e9)


def test_compressed_scheme_on_a_platform_without_codec_costs_is_refused(tiny):
    from base.errors import SpecError

    plat, model = tiny
    plat = dataclasses.replace(plat, compression=None)
    wl = Workload.make(model, 4, 64, 4, W4KV4)
    p = make_planner(plat, wl, Policy("flexgen", gpu_batch_size=4, kv_cpu=1.0))
    with pytest.raises(SpecError, match="has no 'compression' section"):
        p.plan("decode", 64, False, False)
