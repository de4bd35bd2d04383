import pytest
import yaml

from base.errors import SpecError
from offload import Policy, Workload, check_fits, get_platform, read_policy, read_workload


def test_impossible_placement_fractions():
    with pytest.raises(SpecError, match=r"KV cache placement gpu 0.5 \+ cpu 0.6 = 1.1 exceeds 1"):
        Policy("flexgen", gpu_batch_size=8, kv_gpu=0.5, kv_cpu=0.6)
    with pytest.raises(SpecError, match="w_gpu: 1.5 is out of range"):
        from base.specio import from_mapping

        from_mapping(Policy, {"kind": "flexgen", "gpu_batch_size": 8, "w_gpu": 1.5}, "p.yaml")


def test_policy_specific_settings_are_checked():
    with pytest.raises(SpecError, match="keeps the whole KV cache in the computational storage drives"):
        Policy("instinfer", gpu_batch_size=8, kv_gpu=0.1)
    with pytest.raises(SpecError, match="topk_fraction/topr_channels are InstInfer"):
        Policy("flexgen", gpu_batch_size=8, topk_fraction=0.5)
    with pytest.raises(SpecError, match="cpu_attention is FlexGen's CPU delegation"):
        Policy("leoam", gpu_batch_size=8, cpu_attention=True)
    with pytest.raises(SpecError, match="load_fraction is a LeoAM setting"):
        Policy("flexgen", gpu_batch_size=8, load_fraction=0.5)
    with pytest.raises(SpecError, match="needs topr_channels >= 1"):
        Policy("instinfer", gpu_batch_size=8, topk_fraction=0.5)


def test_derived_disk_shares():
    p = Policy("flexgen", gpu_batch_size=8, w_gpu=0.5, w_cpu=0.25, kv_gpu=0.2, kv_cpu=0.3, act_gpu=0.0, act_cpu=0.0)
    assert (p.w_disk, p.kv_disk, p.act_disk) == (0.25, 0.5, 1.0)
    assert p.label() == "flexgen bs=8x1 w=50/25/25 kv=20/30/50 act=0/0/100"


def test_batch_split_and_platform_are_checked():
    wl = Workload.make("opt-13b", batch=64, prompt_len=128, gen_len=8)
    with pytest.raises(SpecError, match="= 48 != workload batch 64"):
        check_fits(get_platform("a6000-ssd"), wl, Policy("flexgen", gpu_batch_size=16, num_gpu_batches=3))
    with pytest.raises(SpecError, match="needs computational storage drives; platform 'a6000-ssd' has none"):
        check_fits(get_platform("a6000-ssd"), wl, Policy("instinfer", gpu_batch_size=64))


def test_a_model_that_cannot_fit_anywhere():
    wl = Workload.make("llama-2-70b", batch=8192, prompt_len=4096, gen_len=4096)  # 22 TB of KV cache
    with pytest.raises(
        SpecError,
        match=r"needs \d+\.\d GB \(weights \+ KV cache\) but platform 'a6000-csd' holds only "
        r"\d+\.\d GB .*; lower --batch, --prompt or --gen",
    ):
        check_fits(get_platform("a6000-csd"), wl, Policy("instinfer", gpu_batch_size=8192))


def test_a_placement_that_overfills_the_gpu():
    wl = Workload.make("opt-13b", batch=64, prompt_len=1024, gen_len=1024)
    with pytest.raises(SpecError, match="places .* GB on gpu but platform 'a6000-ssd' has 49.4 GB there; lower w_gpu"):
        check_fits(get_platform("a6000-ssd"), wl, Policy("flexgen", gpu_batch_size=64, kv_gpu=1.0))


def test_policy_and_workload_from_yaml(tmp_path):
    (tmp_path / "p.yaml").write_text(
        yaml.safe_dump(
            {
                "kind": "leoam",
                "gpu_batch_size": 4,
                "num_gpu_batches": 2,
                "kv_gpu": 0.25,
                "kv_cpu": 0.75,
                "load_fraction": 0.5,
            }
        )
    )
    assert read_policy(tmp_path / "p.yaml") == Policy(
        "leoam", gpu_batch_size=4, num_gpu_batches=2, kv_gpu=0.25, kv_cpu=0.75, load_fraction=0.5
    )
    (tmp_path / "w.yaml").write_text(
        yaml.safe_dump({"model": "opt-13b", "batch": 8, "prompt_len": 64, "gen_len": 4, "scheme": "w4a16"})
    )
    wl = read_workload(tmp_path / "w.yaml")
    assert (wl.model.name, wl.scheme.name, wl.batch, wl.final_context) == ("opt-13b", "w4a16", 8, 67)
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({"model": "opt-13b", "batch": 8, "prompt": 64, "gen_len": 4}))
    with pytest.raises(SpecError, match="unknown key 'prompt'"):
        read_workload(tmp_path / "w.yaml")
    with pytest.raises(SpecError, match="batch must be an integer >= 1"):
        Workload.make("opt-13b", 0, 64, 4)


def test_workload_sizes_come_from_the_scheme():
    wl = Workload.make("opt-13b", batch=2, prompt_len=100, gen_len=1, scheme="w2a8kv4")
    m, s = wl.model, wl.scheme
    assert wl.layer_kv_bytes(100) * m.num_layers == pytest.approx(s.kv_cache_bytes(m, 100, 2))
    assert wl.layer_weight_bytes * m.num_layers == s.weight_bytes(m).blocks
    assert wl.hidden_bytes(3) == s.act_bytes(3, m.hidden_size)
