"""fpga/_config.py: the design registry and BuildConfig's checks (no tools)."""

import pytest

from base.errors import SpecError
from fpga._config import DESIGNS, MAX_SEED, MAX_SEEDS, ROUTERS, BuildConfig, Design, check_design, make_design


def test_designs_are_typed_and_build_their_component():
    assert set(DESIGNS) == {"engine", "dot", "softmax", "normalizer"}
    assert all(isinstance(d, Design) and d.name == k and callable(d.make) for k, d in DESIGNS.items())
    from fpga._dev_mac import DotProductArray
    from rtl.engine import AttentionEngine
    from rtl.normalizer import Normalizer
    from rtl.softmax import SoftmaxUnit

    for name, cls in (
        ("engine", AttentionEngine),
        ("dot", DotProductArray),
        ("softmax", SoftmaxUnit),
        ("normalizer", Normalizer),
    ):
        design = make_design(BuildConfig(board="lfe5u-85f", design=name, lanes=4, head_dim=64))
        assert isinstance(design, cls)
        design._MustUse__used = True  # built only to check its class: no unused-elaboratable warning


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(board="de10"), "unknown board 'de10'"),
        (dict(design="fft"), "unknown design 'fft'; use one of dot, engine, normalizer, softmax"),
        (dict(router="router3"), "unknown router 'router3'"),
        (dict(freq_mhz=0.5), "out of range; use 1..400 MHz"),
        (dict(seeds=3), "seeds must be a list of integers"),
        (dict(seeds=()), f"0 seeds given; use 1 to {MAX_SEEDS}"),
        (dict(seeds=(MAX_SEED + 1,)), "is out of range"),
        (dict(seeds=(True,)), "is out of range"),
        (dict(seeds=(2, 5, 2)), "seed 2 is given twice"),
    ],
)
def test_build_config_rejects(kw, msg):
    with pytest.raises(SpecError, match=msg):
        BuildConfig(**kw)


def test_build_config_normalises_seeds():
    cfg = BuildConfig(seeds=[3, 1])
    assert cfg.seeds == (3, 1) and cfg.several_seeds and not BuildConfig().several_seeds
    assert cfg.router in ROUTERS and "engine lanes=8 head_dim=64 on ulx3s-85f @ 100 MHz" == cfg.label


def test_check_design_leaves_no_unused_elaboratable():
    """The sweep checks every point's parameters before building any: the components it constructs for that must
    not be reported as never elaborated when collected (warnings are errors)."""
    import gc

    check_design(BuildConfig(board="lfe5u-85f", design="dot", lanes=2, head_dim=16))
    with pytest.raises(SpecError, match="not a power of two"):
        check_design(BuildConfig(board="lfe5u-85f", design="dot", lanes=3, head_dim=16))
    gc.collect()
