import pytest

from base.errors import SpecError
from offload import Policy, Workload, analyze, check_fits, get_platform, search_flexgen
from offload.search import estimate_total_s


def test_search_keeps_everything_on_the_gpu_when_it_fits():
    wl = Workload.make("opt-6.7b", batch=4, prompt_len=128, gen_len=16)
    res = search_flexgen(get_platform("a6000-ssd"), wl)
    p = res.policy
    assert (p.w_gpu, p.kv_gpu, p.act_gpu) == (1.0, 1.0, 1.0)
    assert res.candidates > 0


def test_search_choice_fits_and_beats_hand_placements():
    plat = get_platform("a6000-ssd")
    wl = Workload.make("opt-13b", batch=64, prompt_len=1024, gen_len=64)
    res = search_flexgen(plat, wl)
    check_fits(plat, wl, res.policy)
    assert res.rejected > 0  # the GPU cannot hold everything: some grid points were infeasible
    for hand in (Policy("flexgen", gpu_batch_size=8, num_gpu_batches=8, kv_gpu=0.0, kv_cpu=1.0),
                 Policy("flexgen", gpu_batch_size=8, num_gpu_batches=8, kv_gpu=0.1, kv_cpu=0.6),
                 Policy("flexgen", gpu_batch_size=16, num_gpu_batches=4, kv_gpu=0.0, kv_cpu=0.0)):
        check_fits(plat, wl, hand)
        assert res.estimated_total_s <= estimate_total_s(plat, wl, hand)
        assert analyze(plat, wl, res.policy).total_s <= analyze(plat, wl, hand).total_s * 1.02


def test_search_objective_tracks_the_full_model():
    plat = get_platform("a6000-ssd")
    wl = Workload.make("opt-13b", batch=64, prompt_len=1024, gen_len=64)
    pol = Policy("flexgen", gpu_batch_size=8, num_gpu_batches=8, kv_gpu=0.1, kv_cpu=0.9)
    # the objective prices the mean-context decode step; the decode cost is linear in the context
    assert estimate_total_s(plat, wl, pol) == pytest.approx(analyze(plat, wl, pol).total_s, rel=0.02)


def test_search_reports_when_nothing_fits():
    wl = Workload.make("llama-2-70b", batch=512, prompt_len=4096, gen_len=4096)
    with pytest.raises(SpecError, match="no FlexGen placement of llama-2-70b"):
        search_flexgen(get_platform("a6000-ssd"), wl)
