"""Entry points shared by `hwsim profile` and `python3 -m hwsim.gpuprofile`: check the device, then measure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from base.errors import SpecError

__all__ = ["profile_command", "validate_command", "quick_grid", "export_command"]


def _device(name: str):
    try:
        import torch
    except ImportError:
        raise SpecError(
            "profiling needs PyTorch with CUDA; install torch (the [quant] extra) on a GPU machine"
        ) from None
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(
            "no CUDA device is visible (torch.cuda.is_available() is False); run `hwsim profile` on "
            "a machine with an NVIDIA GPU and a CUDA build of torch"
        )
    return torch.device(name)


_KNOWN = (("H200", "h200-sxm"), ("H100", "h100-sxm"), ("A100", "a100-80gb"), ("A6000", "a6000"))


def resolve_hardware(name: str) -> str:
    """`name`, or for "auto" the shipped spec name of the visible CUDA device (H100 -> h100-sxm, ...)."""
    if name != "auto":
        return name
    import torch

    dev = torch.cuda.get_device_name()
    for marker, spec in _KNOWN:
        if marker in dev:
            return spec
    raise SpecError(f"--hardware auto: no shipped spec for device {dev!r}; name the hardware spec with --hardware")


def _out(path: str) -> Path:
    out = Path(path)
    if not out.parent.is_dir():
        raise SpecError(f"--out {path}: directory {out.parent} does not exist; create it or pick another path")
    return out


def quick_grid() -> dict[str, Any]:
    """A tiny grid over SmolLM2-135M's shapes with short axes (tests of the harness, not a usable profile)."""
    from hwsim.gpuprofile.grid import grid_for_models
    from models.spec import get_model

    g = grid_for_models([get_model("smollm2-135m")])
    g["axes"] = {"tokens": [1, 4, 16], "batch": [1, 2], "context": [16, 64], "seq": [16, 32], "prefill_batch": [1, 2]}
    return g


def _read_json(path: str, what: str) -> Any:
    from base.specio import read_json  # the hardened reader: regular file, size cap, UTF-8, duplicate keys

    try:
        return read_json(path)
    except SpecError as exc:
        raise SpecError(f"{what} {exc}; give a file written by `python3 -m hwsim.gpuprofile export`") from None


def profile_command(
    out: str,
    hardware: str,
    device: str,
    quick: bool,
    only: list[str] | None,
    command: list[str],
    deadline_s: float | None = None,
    grid_file: str | None = None,
) -> dict[str, Any]:
    """Measure a profile (the full default grid, the quick one, or one read from `grid_file`) into `out`."""
    path = _out(out)
    dev = _device(device)
    from hwsim.gpuprofile.grid import OPERATORS, default_grid
    from hwsim.gpuprofile.measure import run_profile

    if only:
        bad = [o for o in only if o not in OPERATORS]
        if bad:
            raise SpecError(f"unknown operator(s) {', '.join(bad)}; use some of {', '.join(OPERATORS)}")
    grid = _read_json(grid_file, "grid") if grid_file else quick_grid() if quick else default_grid()
    return run_profile(grid, path, dev, resolve_hardware(hardware), command=command, only=only, deadline_s=deadline_s)


def validate_command(
    out: str,
    hardware: str,
    device: str,
    quick: bool,
    models: list[str] | None,
    deadline_s: float | None,
    command: list[str],
    shapes_file: str | None = None,
) -> dict[str, Any]:
    """Measure end-to-end decode steps and prefills of shipped models (or of the shapes in `shapes_file`)."""
    from types import SimpleNamespace

    path = _out(out)
    dev = _device(device)
    from hwsim.gpuprofile.validate import DEFAULT_MODELS, run_validation

    if shapes_file:
        shapes = _read_json(shapes_file, "model shapes")
        specs = [SimpleNamespace(**shapes[n]) for n in (models or list(shapes))]
    else:
        from models.spec import get_model

        specs = [get_model(n) for n in (models or DEFAULT_MODELS)]
    if quick:
        return run_validation(
            specs,
            path,
            dev,
            resolve_hardware(hardware),
            decode_points=((1, 32), (2, 64)),
            prefill_points=((1, 32), (2, 16)),
            command=command,
            deadline_s=deadline_s,
        )
    return run_validation(specs, path, dev, resolve_hardware(hardware), command=command, deadline_s=deadline_s)


def export_command(out_dir: str) -> None:
    """Write grid.json (the default grid) and shapes.json (every shipped model's shape) into `out_dir`, for a GPU
    machine that has torch but not this project's dependencies (PyYAML)."""
    import json

    from hwsim.gpuprofile.grid import default_grid, shape_of
    from models.spec import get_model, list_models

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "grid.json").write_text(json.dumps(default_grid(), indent=1))
    (d / "shapes.json").write_text(json.dumps({n: shape_of(get_model(n)) for n in list_models()}, indent=1))
