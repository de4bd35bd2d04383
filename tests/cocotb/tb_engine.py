"""cocotb testbench of rtl.engine.AttentionEngine: driver -> monitor -> golden model -> scoreboard.

Scenarios come from the JSON file named by $HWSIM_TB_CASES (tests/cocotb/harness.py::run_cocotb: each head's
encoded beats, golden output and stall-free cycle count); results
(per-head cycles, outputs) go to the JSON file named by $HWSIM_TB_RESULTS. One coroutine steps the clock: at
each falling edge the drivers present the next beat (or a random stall) on blk/tile/val, the output monitor
raises ``out.ready`` at random, and a handshake is counted when valid & ready (the engine's ready and out
payload depend on registered state only, so they are stable from the falling edge to the next rising edge).
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from rtl.streams import decode_output


class StreamDriver:
    """Drives one valid/ready input stream from a queue of payload integers, stalling at random."""

    def __init__(self, dut, name, stall, rng):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.queue, self.pos, self.stall, self.rng = [], 0, stall, rng
        self.offered = False

    def drive(self) -> bool:
        """Called at a falling edge; returns True when the beat is transferred at the next rising edge."""
        ok = self.pos < len(self.queue) and (self.stall == 0 or self.rng.random() >= self.stall)
        if ok:
            self.payload.value = self.queue[self.pos]
        if ok != self.offered:
            self.valid.value = int(ok)
            self.offered = ok
        return ok and bool(self.ready.value)

    def reset(self):
        self.queue, self.pos = [], 0
        self.valid.value = 0
        self.offered = False


class OutputMonitor:
    """Accepts out beats (random backpressure) and groups them into heads at ``last``."""

    def __init__(self, dut, stall, rng):
        self.dut, self.stall, self.rng = dut, stall, rng
        self.beats, self.heads = [], []
        self.ready_now = False

    def sample(self) -> bool:
        rdy = self.stall == 0 or self.rng.random() >= self.stall
        if rdy != self.ready_now:
            self.dut.out__ready.value = int(rdy)
            self.ready_now = rdy
        if rdy and self.dut.out__valid.value:
            self.beats.append(int(self.dut.out__payload.value.to_unsigned()))
            if (self.beats[-1] >> 16) & 1:
                self.heads.append(decode_output(self.beats)[0])
                self.beats = []
                return True
        return False


class Scoreboard:
    def __init__(self):
        self.records = []

    def check(self, head, got, cycles, stall, check_cycles):
        exp = np.asarray(head["expected"])  # golden model (engine.datapath.run_engine)
        if not np.array_equal(got, exp):
            bad = np.nonzero(got != exp)[0]
            raise AssertionError(
                f"output mismatch at {len(bad)} of {len(exp)} elements, first at {bad[0]}: "
                f"got {got[bad[0]]} expected {exp[bad[0]]}"
            )
        formula = head["formula"]  # engine.cycles.head_cycles
        if check_cycles and stall == 0 and cycles != formula:
            raise AssertionError(f"stall-free head took {cycles} cycles, engine/cycles.py says {formula}")
        if cycles < formula:
            raise AssertionError(f"head took {cycles} cycles, fewer than the stall-free {formula}")
        self.records.append({"cycles": cycles, "formula": formula, "blocks": head["blocks"]})


async def reset(dut, cycles=2):
    dut.rst.value = 1
    for _ in range(cycles):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def run_scenarios(dut):
    with open(os.environ["HWSIM_TB_CASES"]) as f:
        cfg = json.load(f)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for s in ("blk", "tile", "val"):
        getattr(dut, f"{s}__valid").value = 0
    dut.out__ready.value = 0
    await reset(dut)
    out = []
    wall = time.perf_counter()
    total_cycles = 0
    for sc in cfg["scenarios"]:
        rng = random.Random(sc.get("seed", 0))
        stall = sc.get("stall", 0.0)
        drivers = [StreamDriver(dut, n, stall, rng) for n in ("blk", "tile", "val")]
        mon = OutputMonitor(dut, stall, rng)
        board = Scoreboard()
        reset_after = sc.get("reset_after")
        if reset_after is not None:
            # a head interrupted by a reset: drive its first `reset_after` cycles, reset, then run the heads
            s0 = sc["abort_head"]
            for d, k in zip(drivers, ("blk", "tile", "val")):
                d.queue = s0[k]
            for _ in range(reset_after):
                await FallingEdge(dut.clk)
                for d in drivers:
                    if d.drive():
                        d.pos += 1
                mon.sample()
            for d in drivers:
                d.reset()
            await reset(dut)
            mon.beats = []
            mon.heads = []
        heads = sc["heads"]
        for d, k in zip(drivers, ("blk", "tile", "val")):
            d.queue = [x for h in heads for x in h[k]]
            d.pos = 0
        cyc, start, done = 0, None, 0
        limit = 50 * sum(h["formula"] for h in heads) + 1000
        while done < len(heads):
            await FallingEdge(dut.clk)
            cyc += 1
            if cyc > limit:
                raise AssertionError(f"timeout after {cyc} cycles with {done} of {len(heads)} heads done")
            fired = [d.drive() for d in drivers]
            if fired[0] and start is None:
                start = cyc
            finished = mon.sample()
            for d, f in zip(drivers, fired):
                if f:
                    d.pos += 1
            if finished:
                board.check(heads[done], mon.heads[-1], cyc - start + 1, stall, sc.get("check_cycles", True))
                done += 1
                start = None
        total_cycles += cyc
        await FallingEdge(dut.clk)
        for d in drivers:
            d.reset()
        out.append({"heads": board.records, "cycles": cyc})
    elapsed = time.perf_counter() - wall
    with open(os.environ["HWSIM_TB_RESULTS"], "w") as f:
        json.dump({"scenarios": out, "sim_cycles": total_cycles, "wall_s": elapsed}, f)
