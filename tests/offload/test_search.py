import numpy as np
import pytest

from base.errors import SpecError
from offload import Policy, Workload, analyze, check_fits, get_platform, search_flexgen
from offload.channels import channels
from offload.footprint import capacities, footprint
from offload.search import FRACTIONS, _linear_terms, estimate_total_s


def grid_search(platform, workload, max_gpu_batches=16, cpu_attention=(False, True)):
    """The exhaustive grid the LP replaced (weights in steps of 1/4, KV in 1/10, activations all-or-nothing),
    priced by the same objective: the cross-check of the LP."""
    cap = capacities(platform)
    best = None
    q4, q10 = [i / 4 for i in range(5)], [i / 10 for i in range(11)]
    for n in (d for d in range(1, max_gpu_batches + 1) if workload.batch % d == 0):
        for wg in q4:
            for wc in (w for w in q4 if wg + w <= 1):
                for cg in q10:
                    for cc in (c for c in q10 if cg + c <= 1 + 1e-9):
                        for hg, hc in ((1.0, 0.0), (0.0, 1.0)):
                            for ca in cpu_attention:
                                pol = Policy(
                                    "flexgen",
                                    gpu_batch_size=workload.batch // n,
                                    num_gpu_batches=n,
                                    w_gpu=wg,
                                    w_cpu=wc,
                                    kv_gpu=cg,
                                    kv_cpu=min(cc, 1 - cg),
                                    act_gpu=hg,
                                    act_cpu=hc,
                                    cpu_attention=ca,
                                )
                                fp = footprint(platform, workload, pol)
                                if any(fp[s] > cap[s] for s in fp):
                                    continue
                                t = estimate_total_s(platform, workload, pol)
                                if best is None or t < best[0]:
                                    best = (t, pol)
    return best


def test_search_keeps_everything_on_the_gpu_when_it_fits():
    wl = Workload.make("opt-6.7b", batch=4, prompt_len=128, gen_len=16)
    res = search_flexgen(get_platform("a6000-ssd"), wl)
    p = res.policy
    assert (p.w_gpu, p.kv_gpu) == (pytest.approx(1.0), pytest.approx(1.0))
    assert res.candidates > 0 and res.rejected == 0


def test_lp_terms_are_linear_in_the_fractions():
    """The LP's premise: channel work and footprint at a random placement equal the values read off the planner
    at the unit placements."""
    plat = get_platform("a6000-ssd")
    wl = Workload.make("opt-13b", batch=32, prompt_len=512, gen_len=32)
    rng = np.random.default_rng(1)
    for ca in (False, True):
        base = Policy("flexgen", gpu_batch_size=8, num_gpu_batches=4, w_gpu=0.0, act_gpu=0.0, cpu_attention=ca)
        coef, mem = _linear_terms(plat, wl, base, channels(plat))
        x = rng.uniform(0, 0.5, 6)
        pol = base.replace(**dict(zip(FRACTIONS, x.tolist())))
        _, fp_coef = None, footprint(plat, wl, pol)
        for s in ("gpu", "cpu", "disk"):
            m0, m = mem[s]
            assert m0 + m @ x == pytest.approx(fp_coef[s], rel=1e-9)
        coef2, _ = _linear_terms(plat, wl, pol.replace(**dict.fromkeys(FRACTIONS, 0.0)), channels(plat))
        assert coef2.keys() == coef.keys()


@pytest.mark.parametrize("model,batch,prompt,gen", [("opt-13b", 64, 1024, 64), ("opt-30b", 32, 512, 32)])
def test_lp_matches_or_beats_the_grid(model, batch, prompt, gen):
    plat = get_platform("a6000-ssd")
    wl = Workload.make(model, batch=batch, prompt_len=prompt, gen_len=gen)
    lp = search_flexgen(plat, wl, max_gpu_batches=8)
    check_fits(plat, wl, lp.policy)
    grid_t, grid_pol = grid_search(plat, wl, max_gpu_batches=8)
    # the LP optimises over a superset of the grid, priced by a linear bound of the same plans
    assert lp.estimated_total_s <= grid_t * 1.05
    assert analyze(plat, wl, lp.policy).total_s <= analyze(plat, wl, grid_pol).total_s * 1.05
    # the LP's own prediction is close to the analytical model of the policy it chose
    assert lp.lp_total_s == pytest.approx(lp.estimated_total_s, rel=0.1)


def test_search_without_kv_in_dram():
    plat = get_platform("a6000-ssd")
    wl = Workload.make("opt-13b", batch=64, prompt_len=1024, gen_len=32)
    res = search_flexgen(plat, wl, max_kv_cpu=0.0)
    assert res.policy.kv_cpu == 0.0
    assert res.policy.kv_disk > 0


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


def test_infeasible_lp_names_the_store():
    """Weights and cache fit the platform together, but one GPU batch's prefill workspace cannot fit the GPU."""
    wl = Workload.make("opt-13b", batch=1, prompt_len=32768, gen_len=1)
    with pytest.raises(SpecError, match="gpu needs at least .* GB but has .* GB"):
        search_flexgen(get_platform("a6000-ssd"), wl)
