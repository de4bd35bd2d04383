"""Board table: every bare-chip target puts its clock on a dedicated clock input of its package (no toolchain run)."""

import pytest

from fpga._boards import BOARDS, package_pin

BARE = [b for b in BOARDS.values() if not b.is_board]


@pytest.mark.parametrize("board", BARE, ids=lambda b: b.name)
def test_bare_chip_clock_sits_on_a_primary_clock_input(board):
    # without clk_site nextpnr picks the clock pin, and may pick one it cannot route to the global clock network
    assert board.clk_site, f"{board.name}: a bare chip needs clk_site"
    _, function = package_pin(board.device, board.package, board.clk_site)
    assert function.startswith("PCLKT"), (board.clk_site, function)


def test_a_general_purpose_pin_is_not_a_clock_input():  # the check above can fail: X0/Y11 C is where clk once landed
    assert package_pin("LFE5U-85F", "CABGA381", "B5") == ("X0/Y11/PIOC", "")
