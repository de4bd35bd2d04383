import numpy as np

from enginesim import run_comb
from quant.fixedpoint import EXP_FRAC_BITS, exp2_fixed, scale_scores
from rtl.softmax import SoftmaxUnit


def test_two_blocks_scan_update_exp_against_golden_formulas():
    L = 8
    dut = SoftmaxUnit(lanes=L)
    rng = np.random.default_rng(0)
    mant, shift = 40000, 17
    blocks = [rng.integers(-3000, 3000, 64), rng.integers(0, 9000, 64)]  # block 2 raises the max
    gates = [rng.random(64) < 0.7, np.ones(64, dtype=bool)]

    async def tb(ctx):
        ctx.set(dut.mant, mant)
        ctx.set(dut.shift, shift)
        ctx.set(dut.head_start, 1)
        await ctx.tick()
        ctx.set(dut.head_start, 0)
        M, l, first = 0, 0, True
        for s, g in zip(blocks, gates):
            ctx.set(dut.blk_start, 1)
            await ctx.tick()
            ctx.set(dut.blk_start, 0)
            ctx.set(dut.scan, 1)
            for c in range(64 // L):
                for j in range(L):
                    ctx.set(dut.s[j], int(s[c * L + j]))
                ctx.set(dut.gate, sum(1 << j for j in range(L) if g[c * L + j]))
                await ctx.tick()
            ctx.set(dut.scan, 0)
            # golden: Mblk = ceil(Xmax / 2^F)
            xmax = int(scale_scores(np.array([s[g].max()]), mant, shift)[0])
            mblk = (xmax + 255) >> EXP_FRAC_BITS
            mnew = mblk if first else max(M, mblk)
            delta = 0 if first else mnew - M
            ctx.set(dut.update, 1)
            assert ctx.get(dut.rescale) == min(delta, 31)
            await ctx.tick()
            ctx.set(dut.update, 0)
            l >>= min(delta, 31)
            M, first = mnew, False
            assert ctx.get(dut.m) == M and ctx.get(dut.l) == l
            p = np.where(g, exp2_fixed(np.maximum((M << EXP_FRAC_BITS) - scale_scores(s, mant, shift), 0)), 0)
            ctx.set(dut.exp, 1)
            for c in range(64 // L):
                ctx.set(dut.chunk, c)
                for j in range(L):
                    ctx.set(dut.s[j], int(s[c * L + j]))
                ctx.set(dut.gate, sum(1 << j for j in range(L) if g[c * L + j]))
                await ctx.tick()
            ctx.set(dut.exp, 0)
            l += int(p.sum())
            assert [ctx.get(dut.p_all[i]) for i in range(64)] == p.tolist()
            assert ctx.get(dut.l) == l

    run_comb(dut, tb)
