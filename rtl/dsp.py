"""A multiplier with registers on both inputs and on its product: on ECP5, one MULT18X18D with its own registers.

``p`` <= ``a_r * b_r`` every cycle, where ``a_r`` <= ``a`` when ``a_en`` and ``b_r`` <= ``b`` when ``b_en`` (all
three are ``sync`` registers, reset to 0 with the domain): a product is in ``p`` two edges after its operands are
presented with their enables.

Elaborated for a platform whose ``family`` is ``"ecp5"`` (amaranth's LatticeECP5Platform, or the bare-chip flow's
stand-in in fpga/_flow.py), it is one MULT18X18D instance with REG_INPUTA/B and REG_OUTPUT on (Lattice TN1267,
"ECP5 and ECP5-5G sysDSP Usage Guide": the input and output registers of the 18x18 multiplier block, each with a
clock, clock enable and reset select). Yosys' ECP5 DSP mapping (share/lattice/dsp_map_18x18.v) leaves these
registers unused, so an inferred multiply is a combinational block between fabric registers, and the placer is free
to put the DSP tiles far from both, so that routing dominates those paths. With the registers inside the block, the
paths into and out of the DSP are single nets from and to fabric registers. Anywhere else (simulation, Verilator, other
targets) it elaborates to the same three registers in fabric logic, cycle for cycle the same.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, ResetSignal, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from base.errors import SpecError
from rtl.layouts import checking

__all__ = ["RegisteredMul", "is_ecp5"]

_WIDTH = 18  # MULT18X18D operand width (TN1267)


def is_ecp5(platform) -> bool:
    """True when elaborating for an ECP5 device (its DSP and register primitives may be instantiated)."""
    return getattr(platform, "family", None) == "ecp5"


class RegisteredMul(wiring.Component):
    """``p`` <= ``a_r * b_r``; ``a_r``/``b_r`` load ``a``/``b`` when their enables are high. Operands up to 18 bits
    (signed or unsigned each), product ``a_width + b_width`` bits, signed if either operand is."""

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = (
            signed(a_shape.width) if a_shape.signed else unsigned(a_shape.width),
            signed(b_shape.width) if b_shape.signed else unsigned(b_shape.width),
        )
        with checking(self):
            for name, shape in (("a", a_shape), ("b", b_shape)):
                if not 1 <= shape.width <= _WIDTH:
                    raise SpecError(f"multiplier operand {name} is {shape.width} bits; MULT18X18D takes 1..18")
        width = a_shape.width + b_shape.width
        p_shape = signed(width) if a_shape.signed or b_shape.signed else unsigned(width)
        super().__init__({"a": In(a_shape), "a_en": In(1), "b": In(b_shape), "b_en": In(1), "p": Out(p_shape)})

    def elaborate(self, platform):
        m = Module()
        if not is_ecp5(platform):
            a_r, b_r = Signal.like(self.a, name="a_r"), Signal.like(self.b, name="b_r")
            with m.If(self.a_en):
                m.d.sync += a_r.eq(self.a)
            with m.If(self.b_en):
                m.d.sync += b_r.eq(self.b)
            m.d.sync += self.p.eq(a_r * b_r)
            return m

        # operands sign- or zero-extended to 18 bits; SIGNEDA/B say how the block reads them
        a18 = self.a.as_signed() if self.a.shape().signed else self.a.as_unsigned()
        b18 = self.b.as_signed() if self.b.shape().signed else self.b.as_unsigned()
        a_ext, b_ext, p36 = Signal(_WIDTH), Signal(_WIDTH), Signal(2 * _WIDTH)
        m.d.comb += [a_ext.eq(a18), b_ext.eq(b18), self.p.eq(p36)]
        ports = {f"i_A{k}": a_ext[k] for k in range(_WIDTH)}
        ports |= {f"i_B{k}": b_ext[k] for k in range(_WIDTH)}
        ports |= {f"i_C{k}": Const(0, 1) for k in range(_WIDTH)}
        ports |= {f"o_P{k}": p36[k] for k in range(2 * _WIDTH)}
        m.submodules.dsp = Instance(
            "MULT18X18D",
            # CE0: always (output register), CE1: operand A, CE2: operand B; RST0: the domain's reset
            p_REG_INPUTA_CLK="CLK0",
            p_REG_INPUTA_CE="CE1",
            p_REG_INPUTA_RST="RST0",
            p_REG_INPUTB_CLK="CLK0",
            p_REG_INPUTB_CE="CE2",
            p_REG_INPUTB_RST="RST0",
            p_REG_INPUTC_CLK="NONE",
            p_REG_PIPELINE_CLK="NONE",
            p_REG_OUTPUT_CLK="CLK0",
            p_REG_OUTPUT_CE="CE0",
            p_REG_OUTPUT_RST="RST0",
            p_CLK0_DIV="ENABLED",
            p_CLK1_DIV="ENABLED",
            p_CLK2_DIV="ENABLED",
            p_CLK3_DIV="ENABLED",
            p_GSR="DISABLED",
            p_RESETMODE="SYNC",
            p_SOURCEB_MODE="B_SHIFT",
            p_MULT_BYPASS="DISABLED",
            i_SIGNEDA=Const(int(self.a.shape().signed), 1),
            i_SIGNEDB=Const(int(self.b.shape().signed), 1),
            i_SOURCEA=Const(0, 1),
            i_SOURCEB=Const(0, 1),
            i_CLK0=ClockSignal(),
            i_CLK1=Const(0, 1),
            i_CLK2=Const(0, 1),
            i_CLK3=Const(0, 1),
            i_CE0=Const(1, 1),
            i_CE1=self.a_en,
            i_CE2=self.b_en,
            i_CE3=Const(0, 1),
            i_RST0=ResetSignal(),
            i_RST1=Const(0, 1),
            i_RST2=Const(0, 1),
            i_RST3=Const(0, 1),
            **ports,
        )
        return m
