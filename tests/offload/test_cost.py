"""The analytical cost model against the simulation: same plans, agreement when nothing contends."""

import pytest

from offload import Policy, Workload, analyze, default_policy, get_platform, simulate
from offload.channels import channels
from offload.cost import route_time
from offload.plan import Effect, Hop, Route, Use

# Agreement tolerance when no two routes of one sync window share a channel: 1%. The closed form prices each stage
# as max(busiest channel, longest pipelined chain), which is exact for a pipeline without contention; what is left
# is the first/last step of the run. Where routes contend, the simulation is slower, never faster.
TOLERANCE = 0.01

UNCONTENDED = {
    "flexgen-cpu-kv": ("a6000-ssd", Policy("flexgen", gpu_batch_size=16, num_gpu_batches=4, kv_gpu=0.2, kv_cpu=0.8)),
    "flexgen-disk-kv": ("a6000-ssd", Policy("flexgen", gpu_batch_size=16, num_gpu_batches=4, kv_gpu=0.2, kv_cpu=0.0)),
    "flexgen-sequential": (
        "a6000-ssd",
        Policy("flexgen", gpu_batch_size=32, num_gpu_batches=2, kv_gpu=0.2, kv_cpu=0.8, overlap=False),
    ),
    "flexgen-cpu-attention": (
        "a6000-ssd",
        Policy("flexgen", gpu_batch_size=16, num_gpu_batches=4, kv_gpu=0.2, kv_cpu=0.8, cpu_attention=True),
    ),
    "instinfer-sparse": (
        "a6000-csd",
        Policy("instinfer", gpu_batch_size=32, num_gpu_batches=2, topk_fraction=0.125, topr_channels=16),
    ),
    "instinfer-dense": ("a6000-csd", Policy("instinfer", gpu_batch_size=64)),
}


@pytest.mark.parametrize("case", sorted(UNCONTENDED))
def test_simulation_and_closed_form_agree_without_contention(case):
    plat_name, pol = UNCONTENDED[case]
    plat = get_platform(plat_name)
    wl = Workload.make("opt-13b", batch=64, prompt_len=512, gen_len=32)
    sim, ana = simulate(plat, wl, pol), analyze(plat, wl, pol)
    assert sim.total_s == pytest.approx(ana.total_s, rel=TOLERANCE)
    assert sim.prefill_s == pytest.approx(ana.prefill_s, rel=TOLERANCE)
    # bytes and store accounting come from the same plans: identical up to float summation order
    assert sim.bytes_moved == pytest.approx(ana.bytes_moved, rel=1e-9)
    for name in sim.stores:
        assert sim.stores[name].resident_bytes == pytest.approx(ana.stores[name].resident_bytes, rel=1e-9, abs=1e-3)
    assert sim.busy_s == pytest.approx(ana.busy_s, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kind", ["flexgen", "leoam", "instinfer"])
def test_contention_only_slows_the_simulation(kind):
    """LeoAM's abstract -> score -> selective load chain needs the GPU that compute(s) holds; weights streamed over
    PCIe share it with InstInfer's attention outputs: the simulation sees that, the closed form does not."""
    plat = get_platform("a6000-csd")
    wl = Workload.make("opt-13b", batch=8, prompt_len=96, gen_len=24)
    pols = {
        "flexgen": Policy(
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
        "leoam": Policy("leoam", gpu_batch_size=8, kv_gpu=0.1, kv_cpu=0.5, load_fraction=0.25),
        "instinfer": Policy("instinfer", gpu_batch_size=8, w_gpu=0.5, w_cpu=0.5),
    }
    sim, ana = simulate(plat, wl, pols[kind]), analyze(plat, wl, pols[kind])
    assert sim.total_s >= ana.total_s * (1 - 1e-9)
    assert sim.total_s > ana.total_s * (1 + 1e-4)  # these cases do contend


def test_default_policies_agree():
    plat = get_platform("a6000-csd")
    wl = Workload.make("opt-13b", batch=64, prompt_len=1024, gen_len=16)
    for kind in ("flexgen", "instinfer"):
        pol = default_policy(kind, plat, wl)
        assert simulate(plat, wl, pol).total_s == pytest.approx(analyze(plat, wl, pol).total_s, rel=TOLERANCE)


def test_route_time_is_the_pipeline_formula():
    ch = channels(get_platform("a6000-ssd"))
    r = Route(
        "x",
        (Hop((Use("disk_read", 8.0),)), Hop((Use("pcie_h2d", 2.0),))),
        chunks=4,
        effects=(Effect("gpu", "write", 1.0),),
    )
    lat = ch["disk_read"].latency_s + ch["pcie_h2d"].latency_s
    # 4 pieces of 2 s (disk) and 0.5 s (PCIe): 2 + 0.5 + 3 * 2 = 8.5 s plus one latency of each hop
    assert route_time(r, ch) == pytest.approx(8.5 + lat, rel=1e-12)
