"""The per-layer schedule of each policy, as data: what moves over which link and what computes where.

A *layer step* is one transformer layer of one token for the whole batch (FlexGen's block of GPU batches, folded
into one step: the granularity of FlexGen's own cost model). Each step has three stages, as in the papers' loops::

    load    weights / cache / hidden states the layer needs, towards the GPU
    compute on the GPU (and, for InstInfer, attention in the drives)
    store   the new K/V rows and hidden states to where the policy keeps them

A stage is a tuple of `Route`s. A route is a chain of `Hop`s (disk -> host DRAM -> GPU is two hops), cut into
``chunks`` pieces that flow through the hops as a pipeline; a hop books one or more channels at once (a flash read
streaming into the FPGA engine books both). `Effect`s say which store gains or loses bytes when the route ends.
The simpy simulation (`offload.sim`) executes these plans on device objects; the analytical model
(`offload.cost`) prices the very same plans in closed form. The planners (`offload.planners`) build them; the
channels they book are in `offload.channels`, the memory footprint in `offload.footprint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Use", "Hop", "Route", "Effect", "StepPlan", "STORES"]

STORES = ("gpu", "cpu", "disk", "csd")


@dataclass(frozen=True)
class Use:
    """Work on one channel: `seconds` of busy time per member at full speed, for the whole route."""

    channel: str
    seconds: float
    nbytes: float = 0.0
    flops: float = 0.0


@dataclass(frozen=True)
class Hop:
    uses: tuple[Use, ...]


@dataclass(frozen=True)
class Effect:
    store: str
    op: Literal["read", "write", "free"]
    nbytes: float


@dataclass(frozen=True)
class Route:
    name: str
    hops: tuple[Hop, ...]
    chunks: int = 1
    after: tuple[int, ...] = ()  # routes of the same stage that must end first
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class StepPlan:
    load: tuple[Route, ...]
    compute: tuple[Route, ...]
    store: tuple[Route, ...]

    @property
    def stages(self) -> tuple[tuple[str, tuple[Route, ...]], ...]:
        return (("load", self.load), ("compute", self.compute), ("store", self.store))
