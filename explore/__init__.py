"""Co-design exploration: sweep and search the joint space of compression, hardware and workload.

``load_space(PATH)`` reads a space file (explore/space.py documents it); ``run_space(space, executor, out)`` evaluates
it exhaustively or with NSGA-II through an executor of base.executor (this process, local workers, or Ray), streams
every record to ``out/points.jsonl`` and returns the Pareto front. The CLI is ``hwsim explore``.
"""

from explore.pareto import compare_fronts, pareto_front
from explore.run import ExploreResult, choose_method, run_space
from explore.space import OBJECTIVES, Space, SpaceSpec, load_space, resolve_space

__all__ = [
    "OBJECTIVES",
    "Space",
    "SpaceSpec",
    "load_space",
    "resolve_space",
    "run_space",
    "ExploreResult",
    "choose_method",
    "pareto_front",
    "compare_fronts",
]
