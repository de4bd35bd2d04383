"""Replicated registers (rtl.layouts.replica) survive synthesis: the flow's keep script stops Yosys' opt_merge from
folding identical copies back into one register (the accumulators' per-group clear copies had been merged, and one
copy then drove the resets of ~1,000 FFs: the engine's routed critical path).

Runs Yosys on a tiny design, with cwd = the build directory and relative paths (YoWASP hides /tmp).
"""

import json

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fpga._flow import keep_replicas_script
from fpga._toolchain import SilentListener, run_tool
from rtl.layouts import REPLICA_ATTR, replica

pytestmark = pytest.mark.fpga

COPIES = 8


class Fanout(wiring.Component):
    """One control bit registered in COPIES replicas (or plain signals), each gating its own data bit."""

    a: In(1)
    d: In(COPIES)
    o: Out(COPIES)

    def __init__(self, replicas: bool):
        self.replicas = replicas
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        for i in range(COPIES):
            r = replica(name=f"r{i}") if self.replicas else Signal(name=f"r{i}")
            m.d.sync += r.eq(self.a)
            m.d.comb += self.o[i].eq(r & self.d[i])
        return m


def synth_ffs(tmp_path, *, replicas: bool, keep: bool) -> int:
    (tmp_path / "top.il").write_text(rtlil.convert(Fanout(replicas), name="top"))
    script = keep_replicas_script() if keep else ""
    (tmp_path / "top.ys").write_text(
        f"read_rtlil top.il\n{script}\nsynth_ecp5 -top top\ntee -q -o stat.json stat -json\n"
    )
    proc = run_tool(
        "yosys",
        ["-q", "-l", "synth.log", "top.ys"],
        cwd=tmp_path,
        log="synth.out",
        step="yosys",
        text="yosys",
        listener=SilentListener(),
    )
    assert proc.returncode == 0, (tmp_path / "synth.log").read_text()[-2000:]
    return json.loads((tmp_path / "stat.json").read_text())["design"]["num_cells_by_type"].get("TRELLIS_FF", 0)


def test_replica_is_a_signal_with_the_attribute():
    r = replica(3, name="x", init=5)
    assert r.attrs[REPLICA_ATTR] == 1 and r.shape().width == 3 and r.init == 5 and r.name == "x"


def test_flow_keeps_replicated_registers_apart(tmp_path_factory):
    # without the keep script Yosys merges the identical registers (the problem); with it every copy stays
    assert synth_ffs(tmp_path_factory.mktemp("merged"), replicas=True, keep=False) == 1
    assert synth_ffs(tmp_path_factory.mktemp("kept"), replicas=True, keep=True) == COPIES
    # the script only touches replicas: plain identical registers are still merged
    assert synth_ffs(tmp_path_factory.mktemp("plain"), replicas=False, keep=True) == 1
