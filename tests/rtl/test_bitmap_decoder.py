import random

import pytest
from enginesim import run_comb

from rtl.bitmap_decoder import DECODER_LATENCY, BitmapDecoder
from rtl.popcount import POPCOUNT_LATENCY, Popcount64


@pytest.mark.parametrize("lanes", [2, 8, 64])
def test_decoder_matches_rank_model_with_its_latency(lanes):
    dut = BitmapDecoder(lanes=lanes)
    rng = random.Random(lanes)
    maps = [0, (1 << 64) - 1, 1 << 63, 1] + [rng.getrandbits(64) & rng.getrandbits(64) for _ in range(12)]
    inputs = [
        (bm, beat) for bm in maps for beat in range(min(max(1, -(-bin(bm).count("1") // lanes)) + 1, 64 // lanes))
    ]

    async def tb(ctx):
        for n in range(len(inputs) + DECODER_LATENCY):  # one new input per cycle, results DECODER_LATENCY later
            if n < len(inputs):
                ctx.set(dut.bitmap, inputs[n][0])
                ctx.set(dut.beat, inputs[n][1])
            if n >= DECODER_LATENCY:
                bm, beat = inputs[n - DECODER_LATENCY]
                pos = [i for i in range(64) if bm >> i & 1]
                exp = {p: r % lanes for r, p in enumerate(pos) if r // lanes == beat}
                assert ctx.get(dut.hit) == sum(1 << p for p in exp)
                for p, lane in exp.items():
                    assert ctx.get(dut.lane[p]) == lane
            await ctx.tick()

    run_comb(dut, tb)


def test_popcount_pipeline():
    dut = Popcount64()
    rng = random.Random(5)
    xs = [0, (1 << 64) - 1, 1 << 63] + [rng.getrandbits(64) for _ in range(20)]

    async def tb(ctx):
        for n in range(len(xs) + POPCOUNT_LATENCY):
            if n < len(xs):
                ctx.set(dut.x, xs[n])
            if n >= POPCOUNT_LATENCY:
                assert ctx.get(dut.count) == bin(xs[n - POPCOUNT_LATENCY]).count("1")
            await ctx.tick()

    run_comb(dut, tb)
