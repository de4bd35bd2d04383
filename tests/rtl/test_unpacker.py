import random

from enginesim import run_comb

from rtl.unpacker import Unpacker


def test_unpacker_nibble_order_and_handshake():
    dut = Unpacker(lanes=8)
    rng = random.Random(0)

    async def tb(ctx):
        for _ in range(50):
            word = rng.getrandbits(32)
            v, r = rng.randint(0, 1), rng.randint(0, 1)
            ctx.set(dut.i.payload, word)
            ctx.set(dut.i.valid, v)
            ctx.set(dut.o.ready, r)
            assert ctx.get(dut.o.valid) == v and ctx.get(dut.i.ready) == r
            for j in range(8):
                nib = (word >> (4 * j)) & 0xF
                assert ctx.get(dut.o.payload[j]) == (nib - 16 if nib >= 8 else nib)

    run_comb(dut, tb)
