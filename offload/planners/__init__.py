"""The policies' loops as planners: one class per paper, chosen by the policy's kind.

The registry is built from the classes themselves (each names the kind it plans), so adding a policy is adding a
`Planner` subclass here; memory footprints are methods of the planners, not branches on the kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offload.planners.base import Planner
from offload.planners.flexgen import FlexGenPlanner
from offload.planners.instinfer import InstInferPlanner
from offload.planners.leoam import LeoAMPlanner

if TYPE_CHECKING:
    from offload.channels import ChannelSpec
    from offload.platform import Platform
    from offload.policy import Policy
    from offload.workload import Workload

__all__ = ["Planner", "FlexGenPlanner", "LeoAMPlanner", "InstInferPlanner", "PLANNERS", "make_planner"]

PLANNERS: dict[str, type[Planner]] = {cls.kind: cls for cls in (FlexGenPlanner, LeoAMPlanner, InstInferPlanner)}


def make_planner(
    platform: Platform, workload: Workload, policy: Policy, ch: dict[str, ChannelSpec] | None = None
) -> Planner:
    """The planner of `policy`'s kind; `ch` (the platform's channels) may be passed in to save recomputing it."""
    return PLANNERS[policy.kind](platform, workload, policy, ch)
