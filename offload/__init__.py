"""offload: a simpy discrete-event model of GPU / host DRAM / SSD / computational-storage offloaded decoding.

Frozen specs (`Platform`, `Workload`, `Policy`) go in; `simulate` (simpy) and `analyze` (closed form) price the same
per-layer-step plans and return the same `OffloadResult`. `search_flexgen` is FlexGen's placement search (its LP,
solved by HiGHS). Plan types live in `offload.plan`, the policies' loops in `offload.planners`, the links and shared
wires in `offload.channels`, memory in `offload.footprint`.
"""

from offload.cost import analyze
from offload.defaults import default_policy
from offload.devices import Slowdown
from offload.footprint import check_fits, footprint
from offload.platform import Platform, get_platform, list_platforms
from offload.policy import POLICY_KINDS, Policy, flexgen_percent, read_policy
from offload.result import OffloadResult, StoreStats, TraceEvent
from offload.search import SearchResult, search_flexgen
from offload.sim import simulate
from offload.workload import Workload, read_workload

__all__ = [
    "Platform",
    "Workload",
    "Policy",
    "POLICY_KINDS",
    "OffloadResult",
    "StoreStats",
    "TraceEvent",
    "Slowdown",
    "SearchResult",
    "get_platform",
    "list_platforms",
    "simulate",
    "analyze",
    "search_flexgen",
    "default_policy",
    "check_fits",
    "footprint",
    "read_policy",
    "read_workload",
    "flexgen_percent",
]
