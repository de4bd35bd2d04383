"""Boards and bare chips the flow targets, each tied to the hwsim hardware spec that describes its part."""

from __future__ import annotations

from dataclasses import dataclass

from hwsim.errors import SpecError

__all__ = ["Board", "BOARDS", "get_board", "list_boards"]


@dataclass(frozen=True)
class Board:
    """A build target.

    ``platform`` names an amaranth-boards platform class (board flow: pin constraints, PLL from ``clock``);
    ``None`` is a bare-chip build (auto-placed clk/rst/led pins, clock constrained by ``--freq`` only), used for
    utilisation/Fmax sweeps. ``hardware`` is the shipped hwsim spec (hwsim/hardware/NAME.yaml) of the part: the
    single source of its resources and memory system.
    """

    name: str
    description: str
    hardware: str
    device: str  # nextpnr/Amaranth device name
    nextpnr_device: str  # nextpnr-ecp5 device flag
    package: str  # nextpnr-ecp5 --package
    speed: str  # speed grade
    platform: str | None = None  # "module:Class" of an amaranth-boards platform
    clock: tuple[str, float] | None = None  # (clock resource, its frequency in Hz) feeding the PLL

    @property
    def is_board(self) -> bool:
        return self.platform is not None


BOARDS: dict[str, Board] = {
    b.name: b for b in (
        # ULX3S 85F: LFE5U-85F-6BG381C with a 25 MHz oscillator on pin G2 (amaranth_boards.ulx3s)
        Board("ulx3s-85f", "ULX3S 85F board (amaranth-boards platform, PLL from the 25 MHz oscillator, 8 LEDs)",
              hardware="ecp5-85f", device="LFE5U-85F", nextpnr_device="--85k", package="CABGA381", speed="6",
              platform="amaranth_boards.ulx3s:ULX3S_85F_Platform", clock=("clk25", 25e6)),
        # the same part without a board: what the utilisation/Fmax sweeps build
        Board("lfe5u-85f", "bare LFE5U-85F-6BG381C (no board constraints; clk/rst/led pins placed by nextpnr)",
              hardware="ecp5-85f", device="LFE5U-85F", nextpnr_device="--85k", package="CABGA381", speed="6"),
    )
}


def list_boards() -> list[str]:
    return sorted(BOARDS)


def get_board(name: str) -> Board:
    """Exact lookup; SpecError listing the known names otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise SpecError(f"unknown board {name!r}; use one of {', '.join(list_boards())}") from None
