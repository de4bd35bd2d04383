"""fpga/_top.py: the thin top feeds a design from ROMs and folds its outputs onto the LEDs (Amaranth simulator)."""

import pytest
from amaranth.sim import Simulator

from base.errors import SpecError
from fpga._dev_mac import DotProductArray
from fpga._top import FeedTop, _words, pll_params


def test_pll_params_hit_100mhz_from_25mhz_within_limits():
    p = pll_params(25e6, 100e6)
    assert p["fout_hz"] == 100e6
    assert 400e6 <= p["fvco_hz"] <= 800e6
    assert p["fout_hz"] == 25e6 / p["CLKI_DIV"] * p["CLKFB_DIV"]
    assert p["fvco_hz"] == p["fout_hz"] * p["CLKOP_DIV"]
    assert abs(pll_params(25e6, 66.6e6)["fout_hz"] - 66.6e6) < 0.2e6
    with pytest.raises(SpecError, match="3.125..400 MHz"):
        pll_params(25e6, 500e6)


def test_rom_words_are_fixed_and_span_the_width():
    a, b = _words(3, 100, 64), _words(3, 100, 64)
    assert a == b and _words(4, 100, 64) != a
    assert all(0 <= w < 2**100 for w in a) and max(a).bit_length() > 90 and len(set(a)) == 64


def test_design_is_fed_and_results_reach_the_leds():
    dut = FeedTop(DotProductArray(head_dim=8, lanes=4))
    seen = {"leds": set(), "outputs": 0}

    async def bench(ctx):
        for _ in range(300):
            await ctx.tick()
            seen["leds"].add(ctx.get(dut.led))
            if ctx.get(dut.design.o.valid) and ctx.get(dut.design.o.ready):
                seen["outputs"] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # about one dot product per 2 accepted beats, valid/ready high 3/4 of the time each
    assert seen["outputs"] > 40
    assert len(seen["leds"]) > 30


def test_each_stream_has_its_own_stall_lfsr():
    """Input valid and output ready come from separate LFSRs (flip-flops the placer can put by each port), so the
    two handshakes are driven by different registers and follow different sequences, each high ~3/4 of cycles."""
    from amaranth.back import rtlil

    dut = FeedTop(DotProductArray(head_dim=8, lanes=4))
    text = rtlil.convert(dut, ports=[dut.led])
    assert "lfsr1" in text and "lfsr2" in text and "lfsr3" not in text  # one stream in, one out, no config ports
    pattern = {"valid": [], "ready": []}

    async def bench(ctx):
        for _ in range(400):
            await ctx.tick()
            pattern["valid"].append(ctx.get(dut.design.i.valid))
            pattern["ready"].append(ctx.get(dut.design.o.ready))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert pattern["valid"] != pattern["ready"]
    for bits in pattern.values():
        assert 0.65 < sum(bits) / len(bits) < 0.85
