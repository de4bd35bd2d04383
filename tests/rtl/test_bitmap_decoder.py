import random

import pytest

from enginesim import run_comb
from rtl.bitmap_decoder import BitmapDecoder


@pytest.mark.parametrize("lanes", [2, 8, 64])
def test_decoder_matches_rank_model(lanes):
    dut = BitmapDecoder(lanes=lanes)
    rng = random.Random(lanes)
    maps = [0, (1 << 64) - 1, 1 << 63, 1] + [rng.getrandbits(64) & rng.getrandbits(64) for _ in range(12)]

    async def tb(ctx):
        for bm in maps:
            pos = [i for i in range(64) if bm >> i & 1]
            nb = max(1, -(-len(pos) // lanes))
            ctx.set(dut.bitmap, bm)
            for beat in range(min(nb + 1, 64 // lanes)):
                ctx.set(dut.beat, beat)
                assert ctx.get(dut.count) == len(pos)
                assert ctx.get(dut.nbeats) == nb
                assert ctx.get(dut.last) == (beat == nb - 1)
                hit = ctx.get(dut.hit)
                exp = {p: r % lanes for r, p in enumerate(pos) if r // lanes == beat}
                assert hit == sum(1 << p for p in exp)
                for p, lane in exp.items():
                    assert ctx.get(dut.lane[p]) == lane

    run_comb(dut, tb)
