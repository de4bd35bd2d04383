import random

import pytest
from enginesim import run_comb

from base.errors import SpecError
from engine.params import TILE
from rtl.scatter import SCATTER_LATENCY, ScatterNetwork


def _beats(lanes, rng):
    """(bitmap, beat) pairs: edge cases and random densities, every beat of each bitmap."""
    maps = [0, (1 << TILE) - 1, 1 << 63, 1, 0xAAAA_AAAA_AAAA_AAAA, (1 << 63) | 1]
    maps += [sum((rng.random() < d) << i for i in range(TILE)) for d in (0.05, 0.3, 0.5, 0.8, 0.95) for _ in range(3)]
    return [(bm, beat) for bm in maps for beat in range(max(1, -(-bin(bm).count("1") // lanes)))]


@pytest.mark.parametrize("lanes, width", [(2, 4), (8, 4), (32, 4), (64, 4), (64, 13)])
def test_scatter_routes_each_lane_to_its_position(lanes, width):
    """One beat per cycle (pipelined): every hit position receives the value of its lane SCATTER_LATENCY later."""
    dut = ScatterNetwork(lanes=lanes, width=width)
    rng = random.Random(lanes)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    inputs = []
    for bm, beat in _beats(lanes, rng):
        pos = [i for i in range(TILE) if bm >> i & 1]
        hits = {p: r % lanes for r, p in enumerate(pos) if r // lanes == beat}
        prods = [rng.randint(lo, hi) for _ in range(lanes)]
        # lanes of the positions without a hit are arbitrary (the decoder leaves rank bits there)
        lane = [hits.get(i, rng.randrange(lanes)) for i in range(TILE)]
        inputs.append((hits, lane, prods))

    async def tb(ctx):
        for n in range(len(inputs) + SCATTER_LATENCY):
            if n < len(inputs):
                hits, lane, prods = inputs[n]
                ctx.set(dut.hit, sum(1 << p for p in hits))
                for i in range(TILE):
                    ctx.set(dut.lane[i], lane[i])
                for j in range(lanes):
                    ctx.set(dut.data[j], prods[j])
            if n >= SCATTER_LATENCY:
                hits, _, prods = inputs[n - SCATTER_LATENCY]
                assert ctx.get(dut.hit_o) == sum(1 << p for p in hits)
                for p, j in hits.items():
                    assert ctx.get(dut.val[p]) == prods[j], (n, p, j)
            await ctx.tick()

    run_comb(dut, tb)


@pytest.mark.parametrize("width", [0, 33, True, 4.0])
def test_scatter_width_checked(width):
    with pytest.raises(SpecError) as e:
        ScatterNetwork(lanes=8, width=width)
    assert str(e.value) == f"width must be an int in [1, 32], got {width!r}"
