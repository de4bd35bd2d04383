"""rtl/dsp.py: the registered multiplier, in fabric (Amaranth simulator) and as an ECP5 MULT18X18D instance (its
parameters, and a Yosys equivalence proof of the instance against the fabric version under a model of the block)."""

import random
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import signed, unsigned
from amaranth.sim import Simulator

from base.errors import SpecError
from fpga._flow import BareChip  # the bare-chip flow's ECP5 stand-in platform (family "ecp5")
from rtl.dsp import RegisteredMul


@pytest.mark.parametrize(
    "a_shape,b_shape", [(signed(18), unsigned(16)), (unsigned(7), signed(18)), (signed(18), signed(18))]
)
def test_fabric_product_lags_its_enabled_operands_by_two_edges(a_shape, b_shape):
    dut = RegisteredMul(a_shape, b_shape)
    rng = random.Random(7)

    def draw(shape):
        lo = -(1 << (shape.width - 1)) if shape.signed else 0
        return rng.randrange(lo, lo + (1 << shape.width))

    async def bench(ctx):
        a_r = b_r = 0
        for _ in range(300):
            a, b, a_en, b_en = draw(a_shape), draw(b_shape), rng.random() < 0.6, rng.random() < 0.3
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.a_en, a_en)
            ctx.set(dut.b_en, b_en)
            await ctx.tick()
            assert ctx.get(dut.p) == a_r * b_r  # the operand registers as they were before this edge
            a_r, b_r = (a if a_en else a_r), (b if b_en else b_r)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_operands_wider_than_the_block_are_refused():
    with pytest.raises(SpecError, match="MULT18X18D takes 1..18"):
        RegisteredMul(signed(19), unsigned(16))


def test_ecp5_build_is_one_mult18x18d_with_its_registers_on():
    text = rtlil.convert(RegisteredMul(signed(18), unsigned(16)), platform=BareChip(), name="top")
    assert text.count("cell \\MULT18X18D") == 1
    for reg in ("INPUTA", "INPUTB", "OUTPUT"):
        assert f'parameter \\REG_{reg}_CLK "CLK0"' in text
    assert 'parameter \\REG_PIPELINE_CLK "NONE"' in text
    # the fabric build has no instance: registers and a $mul
    plain = rtlil.convert(RegisteredMul(signed(18), unsigned(16)), name="top")
    assert "MULT18X18D" not in plain and "$mul" in plain


# A model of the MULT18X18D subset that RegisteredMul uses (Lattice FPGA-TN-02205, formerly TN1267, "ECP5 and
# ECP5-5G sysDSP Usage Guide": A/B input registers and the output register, each with its CE and RST select;
# SIGNEDA/SIGNEDB say whether A/B are two's complement). It checks the instance's wiring (bit order, signedness
# pins, which CE each register takes), not the silicon.
_MODEL = r"""
module MULT18X18D #(parameter REG_INPUTA_CLK = "NONE", REG_INPUTA_CE = "CE0", REG_INPUTA_RST = "RST0",
  REG_INPUTB_CLK = "NONE", REG_INPUTB_CE = "CE0", REG_INPUTB_RST = "RST0", REG_INPUTC_CLK = "NONE",
  REG_PIPELINE_CLK = "NONE", REG_OUTPUT_CLK = "NONE", REG_OUTPUT_CE = "CE0", REG_OUTPUT_RST = "RST0",
  CLK0_DIV = "ENABLED", CLK1_DIV = "ENABLED", CLK2_DIV = "ENABLED", CLK3_DIV = "ENABLED", GSR = "ENABLED",
  RESETMODE = "SYNC", SOURCEB_MODE = "B_SHIFT", MULT_BYPASS = "DISABLED") (
  input A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17,
  input B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17,
  input C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17,
  input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,
  output P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17, P18, P19, P20, P21, P22,
  output P23, P24, P25, P26, P27, P28, P29, P30, P31, P32, P33, P34, P35);
  wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
  wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
  wire [3:0] ce = {CE3, CE2, CE1, CE0}, rst = {RST3, RST2, RST1, RST0};
  function integer sel(input [23:0] name); sel = name[7:0] - "0"; endfunction
  reg [17:0] ar = 0, br = 0;
  reg [35:0] pr = 0;
  wire [35:0] prod = $signed({SIGNEDA & a[17], a}) * $signed({SIGNEDB & b[17], b});
  always @(posedge CLK0) begin
    if (rst[sel(REG_INPUTA_RST)]) ar <= 0; else if (ce[sel(REG_INPUTA_CE)]) ar <= a;
    if (rst[sel(REG_INPUTB_RST)]) br <= 0; else if (ce[sel(REG_INPUTB_CE)]) br <= b;
    if (rst[sel(REG_OUTPUT_RST)]) pr <= 0;
    else if (ce[sel(REG_OUTPUT_CE)]) pr <= $signed({SIGNEDA & ar[17], ar}) * $signed({SIGNEDB & br[17], br});
  end
  assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15,
          P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = pr;
endmodule
"""


@pytest.mark.parametrize("a_shape,b_shape", [(signed(4), unsigned(3)), (unsigned(5), signed(6))])
def test_ecp5_instance_is_equivalent_to_the_fabric_version(tmp_path, a_shape, b_shape):
    """Yosys proves (bounded: every input sequence of 6 cycles from the all-zero state, which covers the two-edge
    pipeline and its enables) that the MULT18X18D build and the fabric build give the same ``p`` every cycle, under
    the block model above. Narrow operands keep the SAT problem small (18 x 16 did not finish in 5 minutes); the
    bits above them exercise the sign/zero extension into the block's 18-bit ports. Swapping the model's A and B
    clock enables makes this proof fail."""
    from fpga._toolchain import prepare_tool

    (tmp_path / "fabric.il").write_text(rtlil.convert(RegisteredMul(a_shape, b_shape), name="fabric"))
    (tmp_path / "ecp5.il").write_text(rtlil.convert(RegisteredMul(a_shape, b_shape), platform=BareChip(), name="ecp5"))
    (tmp_path / "model.v").write_text(_MODEL)
    script = (
        "read_rtlil fabric.il; read_rtlil ecp5.il; read_verilog model.v; setattr -mod -unset top; "
        "hierarchy -check; proc; flatten; "
        "opt_clean; miter -equiv -flatten -make_assert fabric ecp5 miter; hierarchy -top miter; "
        "sat -verify -prove-asserts -set-init-zero -seq 6 miter"
    )
    # prepare_tool: the first Yosys run compiles its WebAssembly once, under a lock (fpga/_toolchain.py)
    done = subprocess.run([prepare_tool("yosys"), "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
