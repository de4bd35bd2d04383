from enginesim import run_comb

from rtl.mac_array import MacArray


def test_mac_array_extremes():
    dut = MacArray(lanes=4)
    avals = [-8, 7, 0, -1]

    async def tb(ctx):
        for j, a in enumerate(avals):
            ctx.set(dut.a[j], a)
        for b in (-128, 127, 255, 0, 1, -1):
            for c in range(dut.copies):
                ctx.set(dut.b[c], b)
            for j, a in enumerate(avals):
                assert ctx.get(dut.prod[j]) == a * b

    run_comb(dut, tb)


def test_mac_array_exhaustive():
    """Every int4 a (one per lane) times every signed-9 b: the LUT shift-add multiplier is exact."""
    dut = MacArray(lanes=16)

    async def tb(ctx):
        for j in range(16):
            ctx.set(dut.a[j], j - 8)
        for b in range(-256, 256):
            for c in range(dut.copies):
                ctx.set(dut.b[c], b)
            got = [ctx.get(dut.prod[j]) for j in range(16)]
            assert got == [(j - 8) * b for j in range(16)], b

    run_comb(dut, tb)
