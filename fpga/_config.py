"""What a build makes: the designs the flow knows, the nextpnr routers, and the validated build configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from base.errors import SpecError
from fpga._boards import get_board

__all__ = [
    "Design",
    "DESIGNS",
    "ROUTERS",
    "NEXTPNR_SEED",
    "MAX_SEEDS",
    "MAX_SEED",
    "BuildConfig",
    "make_design",
    "check_design",
    "check_jobs",
]


def _engine(*, head_dim: int, lanes: int):
    from rtl.engine import AttentionEngine

    return AttentionEngine(head_dim=head_dim, lanes=lanes)


def _dot(*, head_dim: int, lanes: int):
    from fpga._dev_mac import DotProductArray

    return DotProductArray(head_dim=head_dim, lanes=lanes)


def _softmax(*, head_dim: int, lanes: int):
    from fpga._units import softmax

    return softmax(head_dim=head_dim, lanes=lanes)


def _normalizer(*, head_dim: int, lanes: int):
    from fpga._units import normalizer

    return normalizer(head_dim=head_dim, lanes=lanes)


@dataclass(frozen=True)
class Design:
    """A buildable design: ``make(head_dim=, lanes=)`` returns an Amaranth component with one ``sync`` domain (its
    constructor checks the parameters with its own message). Imported only when built, so that listing the designs
    needs no Amaranth."""

    name: str
    description: str
    make: Callable[..., object]


DESIGNS: dict[str, Design] = {
    d.name: d
    for d in (
        Design("engine", "the attention engine of rtl/ (rtl.engine.AttentionEngine)", _engine),
        Design("dot", "small int4 x int8 dot-product array (flow development, quick tests)", _dot),
        Design("softmax", "the engine's softmax unit alone (timing closure unit by unit)", _softmax),
        Design("normalizer", "the engine's normaliser alone", _normalizer),
    )
}
NEXTPNR_SEED = 1  # default placer seed: same input and seed, same bitstream
MAX_SEEDS = 64  # seeds per build (each is a full place and route)
MAX_SEED = 2**31 - 1  # nextpnr reads --seed as a signed 32-bit int here
# nextpnr-ecp5 routers. router2 is the default because it finishes on the engine at every lane count; router1
# (nextpnr's own default) reaches a higher Fmax where it converges, but on the engines with 32 or 64 lanes it mostly
# does not converge. Pass router1 explicitly to try it. The placer stays nextpnr's default (HeAP), which placed the
# lanes-64 engine better than the electrostatic placer (--placer static).
ROUTERS = ("router1", "router2")


@dataclass(frozen=True)
class BuildConfig:
    """What to build. ``freq_mhz`` is the clock target (PLL output on a board, nextpnr constraint on a bare chip)."""

    board: str = "ulx3s-85f"
    lanes: int = 8
    head_dim: int = 64
    freq_mhz: float = 100.0
    design: str = "engine"
    router: str = "router2"
    seeds: tuple[int, ...] = (NEXTPNR_SEED,)  # nextpnr placer seeds; several: the best Fmax is kept

    def __post_init__(self) -> None:
        get_board(self.board)
        seeds = self.seeds
        if isinstance(seeds, int) or not isinstance(seeds, (tuple, list)):
            raise SpecError(f"seeds must be a list of integers, got {seeds!r}; e.g. --seed 1,2,3")
        object.__setattr__(self, "seeds", tuple(seeds))
        if not 1 <= len(self.seeds) <= MAX_SEEDS:
            raise SpecError(f"{len(self.seeds)} seeds given; use 1 to {MAX_SEEDS} (each is a full place and route)")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 1 <= seed <= MAX_SEED:
                raise SpecError(f"seed {seed!r} is out of range; use integers 1..{MAX_SEED}")
        if len(set(self.seeds)) != len(self.seeds):
            dup = next(x for x in self.seeds if self.seeds.count(x) > 1)
            raise SpecError(f"seed {dup} is given twice; list each seed once (same seed, same placement)")
        if self.design not in DESIGNS:
            raise SpecError(f"unknown design {self.design!r}; use one of {', '.join(sorted(DESIGNS))}")
        if not 1.0 <= self.freq_mhz <= 400.0:
            raise SpecError(f"--freq {self.freq_mhz:g} MHz is out of range; use 1..400 MHz (ECP5 fabric)")
        if self.router not in ROUTERS:
            raise SpecError(f"unknown router {self.router!r}; use one of {', '.join(ROUTERS)}")

    @property
    def label(self) -> str:
        return f"{self.design} lanes={self.lanes} head_dim={self.head_dim} on {self.board} @ {self.freq_mhz:g} MHz"

    @property
    def several_seeds(self) -> bool:
        return len(self.seeds) > 1


def make_design(config: BuildConfig):
    """Instantiate the configured design (its constructor validates lanes/head_dim with its own message)."""
    design = DESIGNS[config.design]
    try:
        return design.make(head_dim=config.head_dim, lanes=config.lanes)
    except ImportError as exc:
        raise SpecError(
            f"design {config.design!r} ({design.description}) cannot be imported: {exc}; "
            "install the [rtl] extra or use --design dot"
        ) from None


def check_design(config: BuildConfig) -> None:
    """Run the configured design's parameter checks (its constructor) without building it: SpecError if rejected."""
    design = make_design(config)
    design._MustUse__used = True  # constructed for its checks only: Amaranth must not warn it was never elaborated


def check_jobs(jobs: object) -> int:
    """`jobs` (parallel place-and-route runs or sweep points) if it is a positive integer, else a SpecError."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SpecError(f"jobs must be a positive integer, got {jobs!r}")
    return jobs
