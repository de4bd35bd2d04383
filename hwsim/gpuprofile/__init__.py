"""GPU operator profiles: measure the operators of an fp16 forward pass on a CUDA device, and price estimates with them.

* `hwsim.gpuprofile.measure` (torch, CUDA) times every operator of `hwsim.gpuprofile.kernels` over the grid of
  `hwsim.gpuprofile.grid` and writes one JSON profile with provenance (`hwsim profile --out PATH`);
* `hwsim.gpuprofile.validate` (torch, CUDA) times whole decode steps and prefills of model shapes, by the same
  protocol, as validation data;
* `hwsim.gpuprofile.profile` (pure Python) loads a profile, checks it, and looks operator times up (log-log
  interpolation between measured shapes; shapes outside the grid fall back to the roofline, with a note);
* `hwsim.gpuprofile.compose` (pure Python) lists a model's operators and sums their profiled times into decode
  steps and TTFT.

Only `measure`, `validate` and `kernels` import torch; nothing here imports them at package import.
"""

from __future__ import annotations

__all__ = ["GpuProfile", "load_profile", "profile_for", "predict_decode_step", "predict_prefill"]

_LAZY = {
    "GpuProfile": "hwsim.gpuprofile.profile",
    "load_profile": "hwsim.gpuprofile.profile",
    "profile_for": "hwsim.gpuprofile.profile",
    "predict_decode_step": "hwsim.gpuprofile.compose",
    "predict_prefill": "hwsim.gpuprofile.compose",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hwsim.gpuprofile' has no attribute {name!r}")
