from enginesim import run_comb
from rtl.mac_array import MacArray


def test_mac_array_extremes():
    dut = MacArray(lanes=4)
    avals = [-8, 7, 0, -1]

    async def tb(ctx):
        for j, a in enumerate(avals):
            ctx.set(dut.a[j], a)
        for b in (-128, 127, 255, 0, 1, -1):
            ctx.set(dut.b, b)
            for j, a in enumerate(avals):
                assert ctx.get(dut.prod[j]) == a * b

    run_comb(dut, tb)
