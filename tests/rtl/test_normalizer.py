import random

import numpy as np
import pytest
from enginesim import run_comb

from engine.datapath import normalize, reciprocal
from engine.timing import NORM_PIPE
from engine.widths import ACC_BITS, L_BITS, RECIP_BITS
from rtl.normalizer import ACC_READ_FROM, Normalizer

AMAX, AMIN = (1 << (ACC_BITS - 1)) - 1, -(1 << (ACC_BITS - 1))
LMIN, LMAX = 128, (1 << L_BITS) - 1  # reciprocal()'s valid range of l (engine/datapath.py)
JUNK_UNTIL = ACC_READ_FROM - 1  # acc may change until cycle t + ACC_READ_FROM - 1 (only read from then on)
assert ACC_READ_FROM == RECIP_BITS - 3  # F1a, F1b, F2, F3 between the issue register and the multipliers


def _boundary_accs(l: int, D: int, rng: random.Random) -> list[int]:
    """acc words at the rounding and saturation edges of o = sat16((acc * Q + 2^35) >> 36) for this l."""
    q = reciprocal(l)
    out = [AMAX, AMIN, 0, 1, -1]
    for target in (32767, 32768, -32768, -32769, 0, 1, -1, 12345):
        # the smallest acc whose rounded output reaches target, and its neighbours
        base = -((-((target << 36) - (1 << 35))) // q)
        out += [base - 1, base, base + 1]
    out = [min(max(a, AMIN), AMAX) for a in out]
    while len(out) < D:
        out.append(rng.randint(AMIN, AMAX) if rng.random() < 0.5 else rng.randint(-8 * l, 8 * l))
    rng.shuffle(out)
    return out[:D]


def _run(D: int, cases, *, ready_p: float, seed: int, junk: bool = False):
    """Drive the cases back to back (each start the cycle after the previous done); returns per case
    (outputs, the cycles (relative to start) at which beats were accepted)."""
    dut = Normalizer(head_dim=D)
    rng = random.Random(seed)
    results = []

    async def tb(ctx):
        for l, acc in cases:
            ctx.set(dut.l, l)
            if junk:  # acc still moving right after start: only the values from cycle t + ACC_READ_FROM count
                for c in range(D):
                    ctx.set(dut.acc[c], rng.randint(AMIN, AMAX))
            else:
                for c in range(D):
                    ctx.set(dut.acc[c], acc[c])
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            got, when, n = [], [], 0
            while len(got) < D:
                n += 1
                assert n < 10 * (RECIP_BITS + D) / max(ready_p, 0.05), "normaliser hung"
                if junk and n <= JUNK_UNTIL + 1:
                    for c in range(D):
                        ctx.set(dut.acc[c], rng.randint(AMIN, AMAX) if n <= JUNK_UNTIL else acc[c])
                # valid and payload come from registers only: o.ready cannot change them in the same cycle
                seen = []
                for r in (0, 1):
                    ctx.set(dut.o.ready, r)
                    seen.append((ctx.get(dut.o.valid), ctx.get(dut.o.payload.data), ctx.get(dut.o.payload.last)))
                assert seen[0] == seen[1]
                ctx.set(dut.o.ready, 0)
                assert ctx.get(dut.done) == 0
                r = rng.random() < ready_p
                ctx.set(dut.o.ready, r)
                v, data, last = seen[1]
                if v and r:
                    got.append(data)
                    when.append(n)
                    assert last == ctx.get(dut.done) == (len(got) == D)
                else:
                    assert ctx.get(dut.done) == 0
                await ctx.tick()
            results.append((got, when))

    run_comb(dut, tb)
    return results


def _expected(l, acc):
    return normalize(np.array(acc, dtype=np.int64), reciprocal(l)).tolist()


def test_reciprocal_and_outputs_with_backpressure():
    D = 64
    rng = random.Random(2)
    cases = [
        (LMIN, [AMIN] + [AMAX] * (D - 1)),
        (LMAX, [rng.randint(AMIN, AMAX) for _ in range(D)]),
        (777, [rng.randint(-8 * 777, 8 * 777) for _ in range(D)]),
    ]
    for (l, acc), (got, when) in zip(cases, _run(D, cases, ready_p=0.6, seed=3)):
        assert got == _expected(l, acc)
        assert when[0] >= 1 + RECIP_BITS + NORM_PIPE
        assert when == sorted(set(when))


@pytest.mark.parametrize("D", [64, 128])
def test_exact_latency_and_extremes(D):
    """Ready always high: beat c is valid exactly during cycle t + 1 + RECIP_BITS + NORM_PIPE + c (never earlier,
    one per cycle), back to back starts; l at both ends of its range, acc at the rounding/saturation edges."""
    rng = random.Random(D)
    ls = [LMIN, LMIN + 1, 255, 4096, 99991, LMAX - 1, LMAX]
    cases = [(l, _boundary_accs(l, D, rng)) for l in ls]
    cases.append((LMIN, [AMAX] * D))
    cases.append((LMIN, [AMIN] * D))
    first = 1 + RECIP_BITS + NORM_PIPE
    for (l, acc), (got, when) in zip(cases, _run(D, cases, ready_p=1.0, seed=D)):
        assert got == _expected(l, acc)
        assert when == list(range(first, first + D))
    # the cases really hit both saturation levels and unsaturated values
    allout = sum((_expected(l, acc) for l, acc in cases), [])
    assert 32767 in allout and -32768 in allout and any(abs(v) < 32767 for v in allout)


@pytest.mark.parametrize("D,p", [(64, 0.3), (128, 0.8)])
def test_random_backpressure_and_late_acc(D, p):
    """Random l/acc and random o.ready; acc is junk until cycle t + ACC_READ_FROM - 1 (the engine's V pipeline may
    still drain right after start), so the unit must not latch acc early."""
    rng = random.Random(100 + D)
    cases = []
    for _ in range(4):
        l = rng.choice([rng.randint(LMIN, 1 << 12), rng.randint(LMIN, LMAX)])
        near = (max(AMIN, -300 * l), min(AMAX, 300 * l))  # mostly unsaturated outputs
        cases.append((l, [rng.randint(*near) if rng.random() < 0.7 else rng.randint(AMIN, AMAX) for _ in range(D)]))
    for (l, acc), (got, when) in zip(cases, _run(D, cases, ready_p=p, seed=D, junk=True)):
        assert got == _expected(l, acc)
        assert when[0] >= 1 + RECIP_BITS + NORM_PIPE
