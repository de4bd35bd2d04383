import random

import numpy as np
import pytest
from enginesim import run_comb

from rtl.accumulator import ADD_LATENCY, GROUP, SHIFT_LATENCY, SHIFT_STEPS_MAX, Accumulator, shift_steps


@pytest.mark.parametrize("shift", [True, False])
def test_scatter_add_shift_clear_against_numpy(shift):
    """Adds back to back (pipelined), each landing ADD_LATENCY cycles later, with a random per-group add_en mask;
    shift/clear only after the drain, as the engine issues them. ``shift=False`` (the score accumulators) has no
    shift ports."""
    E, W = 128, 32
    dut = Accumulator(entries=E, width=W, shift=shift)
    assert hasattr(dut, "shift_en") == shift
    rng = random.Random(1 + shift)
    ops = ["add"] * 6 + (["shift", "clear"] if shift else ["clear"])
    model = np.zeros(E, dtype=np.int64)

    async def tb(ctx):
        nonlocal model

        async def drain_and_check():
            ctx.set(dut.add_en, 0)
            if shift:
                ctx.set(dut.shift_en, 0)
            ctx.set(dut.clear, 0)
            for _ in range(ADD_LATENCY - 1):
                await ctx.tick()
            assert [ctx.get(dut.acc[e]) for e in range(E)] == model.tolist()

        pending = False
        for _step in range(60):
            op = rng.choice(ops)
            if pending and op != "add":
                await drain_and_check()
            groups = rng.getrandbits(E // GROUP) if op == "add" else 0
            ctx.set(dut.add_en, groups)
            if shift:
                ctx.set(dut.shift_en, op == "shift")
            ctx.set(dut.clear, op == "clear")
            if op == "add":
                hit = 0
                for e in range(E):  # every entry gets a value; only the hit ones of enabled groups may add it
                    v = rng.randint(-4096, 4095)
                    ctx.set(dut.val[e], v)
                    if rng.random() < 0.3:
                        hit |= 1 << e
                        if groups >> (e // GROUP) & 1:
                            model[e] += v
                ctx.set(dut.hit, hit)
            elif op == "shift":
                sh = rng.randint(0, W - 1)
                ctx.set(dut.shift, sh)
                await ctx.tick()
                ctx.set(dut.shift_en, 0)
                for _ in range(SHIFT_LATENCY - 2):  # the command crosses its register: nothing moves yet
                    await ctx.tick()
                    assert [ctx.get(dut.acc[e]) for e in range(E)] == model.tolist(), sh
                # one step per cycle, 4 bits while >= 4 are left, then 1 bit: check every intermediate value
                done = 0
                for _ in range(shift_steps(sh)):
                    done += 4 if sh - done >= 4 else 1
                    await ctx.tick()
                    assert [ctx.get(dut.acc[e]) for e in range(E)] == (model >> done).tolist(), (sh, done)
                assert done == sh
                model >>= sh
                pending = False
                continue
            else:
                model[:] = 0
            await ctx.tick()
            pending = op == "add" and rng.random() < 0.5  # the next add follows right away (pipelined)
            if not pending:
                await drain_and_check()
        await drain_and_check()

    run_comb(dut, tb)


def test_shift_steps():
    assert [shift_steps(n) for n in (0, 1, 3, 4, 5, 8, 31)] == [0, 1, 3, 1, 2, 2, 10]
    assert SHIFT_STEPS_MAX == 10
