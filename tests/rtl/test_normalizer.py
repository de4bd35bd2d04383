import random

import numpy as np

from enginesim import run_comb
from quant.fixedpoint import RECIP_BITS, normalize, reciprocal
from rtl.normalizer import Normalizer


def test_reciprocal_and_outputs_with_backpressure():
    D = 64
    dut = Normalizer(head_dim=D)
    rng = random.Random(2)
    cases = [(128, [-(1 << 31)] + [(1 << 31) - 1] * (D - 1)), ((1 << 28) - 1, [rng.randint(-(1 << 31), (1 << 31) - 1)
             for _ in range(D)]), (777, [rng.randint(-8 * 777, 8 * 777) for _ in range(D)])]

    async def tb(ctx):
        for l, acc in cases:
            ctx.set(dut.l, l)
            for c in range(D):
                ctx.set(dut.acc[c], acc[c])
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            exp = normalize(np.array(acc), reciprocal(l)).tolist()
            got, cycles = [], 0
            while True:
                r = rng.random() < 0.6
                ctx.set(dut.o.ready, r)
                v = ctx.get(dut.o.valid)
                cycles += 1
                if v and r:
                    got.append(ctx.get(dut.o.payload.data))
                    last = ctx.get(dut.o.payload.last)
                    done = ctx.get(dut.done)
                    assert last == done == (len(got) == D)
                await ctx.tick()
                if len(got) == D:
                    break
            assert got == exp
            assert cycles >= RECIP_BITS + D

    run_comb(dut, tb)
