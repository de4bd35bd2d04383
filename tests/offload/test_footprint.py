"""The footprint follows the placement: FlexGen's own published policies fit the machine they ran on."""

from pathlib import Path

import pytest

from base.errors import SpecError
from models.spec import get_model
from offload import Policy, Workload, get_platform
from offload.footprint import capacities, check_fits, footprint
from offload.policy import flexgen_percent
from quant.scheme import CompressionScheme

DATA = Path(__file__).resolve().parents[1] / "data"
# FlexGen's 4-bit group-wise compression (group 64) of weights and/or KV (Sheng et al. 2023, Sec. 5)
W4KV4 = CompressionScheme(name="flexgen-w4kv4", weight_bits=4, weight_group_size=64, kv_bits=4, kv_group_size=64)
KV4 = CompressionScheme(name="flexgen-kv4", kv_bits=4, kv_group_size=64)
FP16 = CompressionScheme(name="fp16")

# FlexLLMGen benchmark/flexgen/bench_suite.py: the policies FlexGen ran on a T4 (16 GB) + 208 GB DRAM + 1.5 TB SSD,
# gen_len 32: (model, prompt, percent, gpu batch size, GPU batches, --cpu, scheme, --pin-weight)
PUBLISHED = [
    ("opt-6.7b", 512, (100, 0, 100, 0, 100, 0), 2, 1, False, FP16, True),
    ("opt-6.7b", 256, (100, 0, 100, 0, 100, 0), 128, 1, False, W4KV4, True),
    ("opt-6.7b", 512, (100, 0, 100, 0, 100, 0), 72, 1, False, W4KV4, True),
    ("opt-6.7b", 1024, (100, 0, 100, 0, 100, 0), 28, 1, False, W4KV4, True),
    ("opt-30b", 256, (10, 90, 0, 100, 0, 100), 160, 2, True, FP16, True),
    ("opt-30b", 512, (20, 80, 0, 100, 0, 100), 48, 3, True, FP16, True),
    ("opt-30b", 1024, (4, 96, 0, 100, 0, 100), 20, 4, True, FP16, True),
    ("opt-30b", 512, (0, 100, 0, 100, 0, 100), 64, 8, False, KV4, True),
    ("opt-30b", 1024, (0, 100, 0, 100, 0, 100), 20, 12, False, KV4, True),
    ("opt-175b", 256, (0, 50, 0, 0, 0, 100), 64, 8, True, FP16, False),
    ("opt-175b", 512, (0, 50, 0, 0, 0, 100), 32, 8, True, FP16, False),
    ("opt-175b", 1024, (0, 50, 0, 0, 0, 100), 12, 12, True, FP16, False),
    ("opt-175b", 512, (0, 100, 0, 100, 0, 100), 48, 3, False, W4KV4, False),
]


def _model(name):
    return get_model(DATA / "offload_opt-175b.yaml") if name == "opt-175b" else get_model(name)


@pytest.mark.parametrize("case", PUBLISHED, ids=[f"{c[0]}-p{c[1]}-{c[6].name}-bs{c[3]}x{c[4]}" for c in PUBLISHED])
def test_flexgen_published_policies_fit_the_t4_host(case):
    model, prompt, percent, gbs, n, cpu, scheme, pin = case
    plat = get_platform("t4-flexgen")
    wl = Workload.make(_model(model), gbs * n, prompt, 32, scheme)
    pol = flexgen_percent(wl, percent, gbs, n, cpu_cache_compute=cpu, pin_weight=pin)
    fp = check_fits(plat, wl, pol)
    assert fp["gpu"] <= capacities(plat)["gpu"]


def test_percent_uses_flexgens_tensor_midpoints():
    wl = Workload.make("opt-30b", 144, 512, 32)
    # 20% GPU: of the attention layer's four equal projections only q (midpoint 12.5%) is below 20; of the MLP's
    # two equal matrices neither (25%, 75%); q is 1/12 of the block
    pol = flexgen_percent(wl, (20, 80, 0, 100, 0, 100), 48, 3)
    assert pol.w_gpu == pytest.approx(1 / 12, rel=1e-3)
    assert pol.w_cpu == pytest.approx(11 / 12, rel=1e-3)


def test_hidden_states_on_the_cpu_leave_the_gpu():
    """Activations placed on the CPU: only one GPU batch's input and output stay on the GPU."""
    plat = get_platform("t4-flexgen")
    wl = Workload.make("opt-30b", 144, 512, 32)
    on_gpu = Policy("flexgen", gpu_batch_size=48, num_gpu_batches=3, w_gpu=0.0, w_cpu=1.0, kv_cpu=1.0)
    on_cpu = on_gpu.replace(act_gpu=0.0, act_cpu=1.0)
    block = wl.hidden_bytes(144 * 512)
    assert footprint(plat, wl, on_gpu)["gpu"] - footprint(plat, wl, on_cpu)["gpu"] == pytest.approx(block)
    assert footprint(plat, wl, on_cpu)["cpu"] - footprint(plat, wl, on_gpu)["cpu"] == pytest.approx(block)


def test_compression_adds_decompression_buffers():
    plat = get_platform("t4-flexgen")
    pol = Policy("flexgen", gpu_batch_size=8, num_gpu_batches=1, kv_gpu=0.0, kv_cpu=1.0)
    plain = footprint(plat, Workload.make("opt-6.7b", 8, 512, 32, KV4), pol)["gpu"]
    wl = Workload.make("opt-6.7b", 8, 512, 32, W4KV4)
    comp = footprint(plat, wl, pol)["gpu"]
    saved = Workload.make("opt-6.7b", 8, 512, 32, KV4).total_weight_bytes - wl.total_weight_bytes
    # compressed weights save their bytes but need one layer's fp16 weights decompressed on the GPU
    assert comp == pytest.approx(plain - saved + wl.layer_weight_fp16_bytes, rel=1e-6)


def test_overfull_placement_names_the_store_and_the_fix():
    plat = get_platform("t4-flexgen")
    wl = Workload.make("opt-30b", 144, 512, 32)
    with pytest.raises(SpecError, match="places .* GB on gpu but platform 't4-flexgen' has .* GB there; lower w_gpu"):
        check_fits(plat, wl, Policy("flexgen", gpu_batch_size=48, num_gpu_batches=3, kv_cpu=1.0))
