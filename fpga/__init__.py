"""ECP5 bitstreams of the rtl/ attention engine with the open YoWASP toolchain, and their figures for hwsim.

``build(BuildConfig(board="ulx3s-85f", lanes=8, head_dim=64), "build")`` writes ``build/top.bit`` and
``build/report.json`` (a :class:`BuildReport`: utilisation, Fmax per clock, pass/fail at the target, critical path,
and a "hardware" mapping in HardwareSpec form that ``hwsim estimate --hardware build/report.json`` reads). ``sweep``
builds a grid of lanes x head_dim on the bare LFE5U-85F; ``plot_sweep`` draws it. The CLI is ``hwsim fpga build|sweep``.
"""

from fpga._boards import BOARDS, Board, get_board, list_boards
from fpga._config import DESIGNS, ROUTERS, BuildConfig, Design
from fpga._flow import BuildResult, build
from fpga._report import RESOURCES, BuildReport, DoesNotFit, hardware_from_build
from fpga._sweep import SweepPoint, plot_sweep, sweep, sweep_rows
from fpga._toolchain import BuildError, Listener, SilentListener, find_tool, needs_compile

__all__ = [
    "BOARDS",
    "Board",
    "get_board",
    "list_boards",
    "DESIGNS",
    "Design",
    "ROUTERS",
    "BuildConfig",
    "BuildResult",
    "BuildReport",
    "build",
    "RESOURCES",
    "DoesNotFit",
    "hardware_from_build",
    "SweepPoint",
    "sweep",
    "sweep_rows",
    "plot_sweep",
    "BuildError",
    "Listener",
    "SilentListener",
    "find_tool",
    "needs_compile",
]
