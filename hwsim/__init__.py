"""hwsim: performance models of LLM inference hardware, and the CLI of the whole stack.

The public API is loaded lazily so that `hwsim estimate` starts fast.
"""

from __future__ import annotations

from base.errors import FormatError, HwsimError, SpecError

__all__ = [
    "HwsimError",
    "SpecError",
    "FormatError",
    "HardwareSpec",
    "get_hardware",
    "Workload",
    "Estimate",
    "estimate",
]

_LAZY = {
    "HardwareSpec": "hwsim.hardware",
    "get_hardware": "hwsim.hardware",
    "Workload": "hwsim.workload",
    "Estimate": "hwsim.estimate",
    "estimate": "hwsim.estimate",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hwsim' has no attribute {name!r}")
