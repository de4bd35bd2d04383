"""Amaranth-simulator helpers of tests/rtl: component testbenches and the engine driven by rtl/streams.py."""

from __future__ import annotations

import random

from amaranth.sim import Simulator

from rtl.engine import AttentionEngine
from rtl.streams import decode_output, encode_head


def run_comb(dut, testbench):
    """Run an async testbench (ctx) against a component, with a clock for its sync parts."""
    sim = Simulator(dut)
    try:
        sim.add_clock(1e-8)
    except NameError:  # purely combinational component: no sync domain
        pass
    sim.add_testbench(testbench)
    sim.run()


def _raw(x):
    return x.as_value() if hasattr(x, "as_value") else x


def simulate_heads(heads, *, lanes: int, stall: float = 0.0, seed: int = 0, max_cycles: int = 200_000):
    """Run heads back to back; returns [(o int64 [D], cycles)] per head (cycles as in engine/cycles.py)."""
    D = heads[0].head_dim
    dut = AttentionEngine(head_dim=D, lanes=lanes)
    rng = random.Random(seed)
    qs = {"blk": [], "tile": [], "val": []}
    for h in heads:
        s = encode_head(h, lanes)
        qs["blk"] += s.blk
        qs["tile"] += s.tile
        qs["val"] += s.val
    results = []

    async def tb(ctx):
        idx = {k: 0 for k in qs}
        streams = {"blk": dut.blk, "tile": dut.tile, "val": dut.val}
        outs, start, cyc = [], None, 0
        while len(results) < len(heads):
            cyc += 1
            if cyc > max_cycles:
                raise AssertionError("simulation did not finish")
            fire = {}
            for k, st in streams.items():
                ok = idx[k] < len(qs[k]) and rng.random() >= stall
                ctx.set(st.valid, int(ok))
                if ok:
                    ctx.set(_raw(st.payload), qs[k][idx[k]])
                fire[k] = ok and ctx.get(st.ready)
            ordy = rng.random() >= stall
            ctx.set(dut.out.ready, int(ordy))
            ofire = ordy and ctx.get(dut.out.valid)
            oval = ctx.get(_raw(dut.out.payload)) if ofire else None
            if fire["blk"] and start is None:
                start = cyc
            await ctx.tick()
            for k in streams:
                if fire[k]:
                    idx[k] += 1
            if ofire:
                outs.append(oval)
                if (oval >> 16) & 1:
                    o, _ = decode_output(outs)
                    results.append((o, cyc - start + 1))
                    outs, start = [], None

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return results
