"""The thin top that wraps a design for a bitstream: on-chip memories feed it, its results light 8 LEDs/pins.

Any `wiring.Component` with a single ``sync`` domain works: the top walks its signature and

* feeds every input stream (``In(stream.Signature)``) from its own ROM (block RAM) of pseudo-random words of
  the payload's width, read synchronously at an address that advances on each transfer;
* drives every plain input port from a "config" ROM word that advances once per output transfer;
* registers every output stream payload (on transfer) and every plain output port, then XOR-folds them into one
  8-bit register that drives the LEDs (board flow) or an 8-bit output port (bare-chip flow); the design's own
  paths therefore end at a register of the top, and Fmax measures the design, not the top;
* toggles every stream's valid/ready from its own free-running LFSR, so stall logic is kept as on a real system.

Every bit of every output reaches the LEDs through the fold, so synthesis keeps the whole datapath.
The ROM contents come from a fixed-seed generator: the same configuration gives the same bitstream.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Const, Instance, Module, Mux, Shape, Signal, Value, unsigned
from amaranth.lib import io, memory, stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from base.errors import SpecError

__all__ = ["FeedTop", "pll_params", "ROM_DEPTH"]

ROM_DEPTH = 512  # words per stream ROM: one DP16KD holds 512 x 36 bits (Lattice FPGA-TN-02204, EBR modes)
_LFSR_TAPS = 0xB400  # 16-bit maximal-length Galois LFSR (x^16 + x^14 + x^13 + x^11 + 1), standard table


def _lfsr(m: Module, index: int) -> Signal:
    """A free-running 16-bit LFSR named ``lfsr<index>``, started at its own nonzero point of the sequence.

    The top gives each stream (and the config ROM) its own: one shared LFSR would sit between the input ROMs and the
    output, far from both, in front of the design's handshake logic. A stream's own 16 flip-flops can sit by its
    port.
    """
    lfsr = Signal(16, init=(0xACE1 * index) & 0xFFFF or 1, name=f"lfsr{index}")
    m.d.sync += lfsr.eq(Cat(lfsr[1:], Const(0, 1)) ^ (_LFSR_TAPS * lfsr[0]))
    return lfsr


def _words(seed: int, width: int, depth: int) -> list[int]:
    """`depth` pseudo-random `width`-bit words from a fixed-seed 64-bit LCG (Knuth MMIX constants)."""
    state, out, mask = seed & (2**64 - 1), [], (1 << width) - 1
    for _ in range(depth):
        word = 0
        for _ in range((width + 31) // 32):
            state = (state * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
            word = (word << 32) | (state >> 32)
        out.append(word & mask)
    return out


def _fold8(value: Value) -> Value:
    """XOR of all 8-bit slices of `value` (zero-extended), so every bit affects the result."""
    value = Value.cast(value)
    width = len(value)
    padded = Cat(value, Const(0, (-width) % 8)) if width % 8 else value
    acc = padded[0:8]
    for i in range(8, len(padded), 8):
        acc = acc ^ padded[i : i + 8]
    return acc


def pll_params(fin_hz: float, fout_hz: float) -> dict[str, int | float]:
    """EHXPLLL dividers giving the output closest to `fout_hz` from `fin_hz` (feedback from CLKOP).

    fout = fin / CLKI_DIV * CLKFB_DIV, fvco = fout * CLKOP_DIV. Limits (Lattice ECP5 family data sheet
    FPGA-DS-02012, sysCLOCK PLL timing): f_PFD 3.125..400 MHz, f_VCO 400..800 MHz, f_OUT 3.125..400 MHz.
    """
    if not 3.125e6 <= fout_hz <= 400e6:
        raise SpecError(f"--freq {fout_hz / 1e6:g} MHz is outside the ECP5 PLL's output range 3.125..400 MHz")
    best = None
    for clki in range(1, 129):
        pfd = fin_hz / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for clkfb in range(1, 81):
            fout = pfd * clkfb
            for clkop in range(1, 129):
                vco = fout * clkop
                if not 400e6 <= vco <= 800e6:
                    continue
                key = (abs(fout - fout_hz), -vco)
                if best is None or key < best[0]:
                    best = (
                        key,
                        {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop, "fout_hz": fout, "fvco_hz": vco},
                    )
    if best is None:  # pragma: no cover - the ranges above always admit a solution
        raise SpecError(f"no PLL setting reaches {fout_hz / 1e6:g} MHz from {fin_hz / 1e6:g} MHz")
    return best[1]


class FeedTop(wiring.Component):
    """Wrap `design` (a Component using the ``sync`` domain) for a bitstream.

    ``pll_from``: None for the bare-chip flow (``sync`` comes from the top's ``clk``/``rst`` ports);
    ``(resource_name, fin_hz, fout_hz)`` for a board: ``sync`` runs from an EHXPLLL fed by that clock pin.
    """

    def __init__(
        self, design: wiring.Component, *, pll_from: tuple[str, float, float] | None = None, seed: int = 1
    ) -> None:
        self.design = design
        self.pll_from = pll_from
        self.seed = seed
        # bare-chip flow: the LEDs are the top's port; board flow: requested from the platform
        super().__init__({} if pll_from else {"led": Out(8)})

    def _clocking(self, m: Module, platform) -> None:
        name, fin_hz, fout_hz = self.pll_from
        p = pll_params(fin_hz, fout_hz)
        clk_pin = platform.request(name, 0, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
        clk_out, locked = Signal(), Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{fin_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{p['fout_hz'] / 1e6:g}",
            p_PLLRST_ENA="DISABLED",
            p_INTFB_WAKE="DISABLED",
            p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA",
            p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=p["CLKI_DIV"],
            p_CLKFB_DIV=p["CLKFB_DIV"],
            p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_DIV"] - 1,
            p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_buf.i,
            i_CLKFB=clk_out,
            i_RST=0,
            i_STDBY=0,
            i_PHASESEL0=0,
            i_PHASESEL1=0,
            i_PHASEDIR=0,
            i_PHASESTEP=0,
            i_PHASELOADREG=0,
            i_PLLWAKESYNC=0,
            i_ENCLKOP=0,
            o_CLKOP=clk_out,
            o_LOCK=locked,
        )
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(clk_out)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")

    def elaborate(self, platform) -> Module:
        m = Module()
        if self.pll_from is not None:
            self._clocking(m, platform)
        m.submodules.design = design = self.design

        result = Signal(8)
        fold = Const(0, 8)
        config_ports: list[Value] = []
        advance_config = Const(0, 1)
        n_lfsr = 0
        seed = self.seed

        for name, member in design.signature.members.items():
            port = getattr(design, name)
            if member.is_signature and isinstance(member.signature, stream.Signature):
                width = Shape.cast(member.signature.members["payload"].shape).width
                n_lfsr += 1
                lfsr = _lfsr(m, n_lfsr)
                valid_or_ready = lfsr[0] | lfsr[5]  # high 3/4 of cycles
                if member.flow == In:  # the design consumes this stream: a ROM feeds it
                    seed += 1
                    mem = memory.Memory(shape=unsigned(width), depth=ROM_DEPTH, init=_words(seed, width, ROM_DEPTH))
                    m.submodules[f"rom_{name}"] = mem
                    rd = mem.read_port()
                    addr = Signal(range(ROM_DEPTH), name=f"addr_{name}")
                    fire = port.valid & port.ready
                    # the ROM word passes a register before the design: block-RAM clock-to-out (~5.8 ns on
                    # LFE5U-85F-6, nextpnr report) plus routing must not become the design's critical path. Which
                    # ROM word a transfer carries does not matter (the data are pseudo-random), only that it varies.
                    word = Signal(width, name=f"word_{name}")
                    m.d.comb += [rd.addr.eq(addr), rd.en.eq(1), Value.cast(port.payload).eq(word)]
                    m.d.sync += [addr.eq(addr + fire), word.eq(rd.data)]
                    if not isinstance(port.valid, Const):
                        m.d.comb += port.valid.eq(valid_or_ready)
                else:  # the design produces this stream: fold it into the result
                    if not isinstance(port.ready, Const):
                        m.d.comb += port.ready.eq(valid_or_ready)
                    fire = port.valid & port.ready
                    # the payload is registered before the fold, so the top adds no logic to the design's paths
                    got = Signal(width, name=f"got_{name}")
                    m.d.sync += got.eq(Mux(fire, Value.cast(port.payload), 0))
                    fold = fold ^ _fold8(got)
                    advance_config = advance_config | fire
            elif member.is_port:
                if member.flow == In:
                    config_ports.append(port)
                else:
                    got = Signal(len(Value.cast(port)), name=f"got_{name}")
                    m.d.sync += got.eq(port)
                    fold = fold ^ _fold8(got)
            else:
                raise SpecError(
                    f"design port {name!r} is neither a stream nor a plain port; the thin top cannot feed it"
                )

        if config_ports:
            if not any(
                isinstance(mem.signature, stream.Signature) and mem.flow == Out
                for mem in (design.signature.members[n] for n in design.signature.members)
                if mem.is_signature
            ):
                # no output stream: change the config word at random, or it is a constant
                advance_config = _lfsr(m, n_lfsr + 1)[7]
            width = sum(len(Value.cast(p)) for p in config_ports)
            mem = memory.Memory(shape=unsigned(width), depth=16, init=_words(seed + 100, width, 16))
            m.submodules.rom_config = mem
            rd = mem.read_port()
            addr = Signal(4, name="addr_config")
            m.d.sync += addr.eq(addr + advance_config)
            m.d.comb += [rd.addr.eq(addr), rd.en.eq(1)]
            config = Signal(width)
            m.d.sync += config.eq(rd.data)
            offset = 0
            for p in config_ports:
                n = len(Value.cast(p))
                m.d.comb += Value.cast(p).eq(config[offset : offset + n])
                offset += n

        folded = Signal(8)  # one register between the (possibly wide) XOR tree and the rotating result
        m.d.sync += [folded.eq(fold), result.eq(Cat(result[1:], result[0]) ^ folded)]
        if self.pll_from is not None:
            for i in range(8):
                led = platform.request("led", i, dir="-")
                m.submodules[f"led_buf{i}"] = buf = io.Buffer("o", led)
                m.d.comb += buf.o.eq(result[i])
        else:
            m.d.comb += self.led.eq(result)
        return m
