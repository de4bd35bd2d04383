"""Evaluate points of a space: estimate (any fidelity), quality, FPGA resources, constraints, as one flat record.

`evaluate_job((fingerprint, space, point_ids))` is the unit of work an executor runs (a module-level function, so
that Ray can ship it). A record holds the point's coordinates, every objective figure (None where it does not apply,
e.g. tokens/J without a power figure), the constraint results and ``feasible``. A hardware combination the spec
forbids, or an estimate that refuses the point, gives a record with ``error`` set and ``feasible`` false.
"""

from __future__ import annotations

import math
from typing import Any

from base.errors import HwsimError
from explore._lean import LeanEvaluator

__all__ = ["evaluate_job", "evaluate_point", "RECORD_FIGURES"]

RECORD_FIGURES = (
    "decode_tokens_per_s",
    "ttft_s",
    "tokens_per_j",
    "ppl_ratio",
    "memory_bytes",
    "lut",
    "ff",
    "dsp",
    "bram",
    "fmax_mhz",
)
_HW_CACHE: dict[str, dict[int, Any]] = {}  # per worker process: space fingerprint -> hardware index -> spec
_HW_CACHE_MAX = 200_000
_LEAN = LeanEvaluator()
_RES_CACHE: dict = {}  # per worker process: (hardware index, head_dim) -> resource totals of one space


def _hardware(fp: str, space: Any, h: int) -> Any:
    cache = _HW_CACHE.get(fp)
    if cache is None:
        _HW_CACHE.clear()  # one space at a time per worker
        cache = _HW_CACHE[fp] = {}
    hw = cache.get(h)
    if hw is None:
        if len(cache) >= _HW_CACHE_MAX:
            cache.clear()
        try:
            hw = space.hardware(h)
        except HwsimError as exc:
            hw = exc
        cache[h] = hw
    return hw


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def evaluate_point(space: Any, pid: int, fp: str = "") -> dict[str, Any]:
    """The record of point `pid` of `space` (see the module docstring)."""
    from hwsim.estimate import estimate

    v, w, f, h = space.decode(pid)
    var, wl, fidelity = space.variants[v], space.workloads[w], space.fidelities[f]
    rec: dict[str, Any] = {"id": pid, **space.coordinates(pid)}
    rec.update(dict.fromkeys(RECORD_FIGURES))
    rec["ppl_ratio"] = var.ppl_ratio
    fp = fp or space.fingerprint()
    hw = _hardware(fp, space, h)
    cons = space.spec.constraints
    try:
        if isinstance(hw, Exception):
            raise hw
        if fidelity == "analytical":
            est, ttft, total, figures = _LEAN.times((fp, v, w), var.model, hw, var.scheme, wl, var.profile)
        else:
            est = estimate(var.model, hw, var.scheme, wl, fidelity=fidelity, profile=var.profile)
    except HwsimError as exc:
        rec.update(error=" ".join(str(exc).split()), feasible=False)
        return rec
    if est is not None:
        tpot, mem = est.tpot_s, est.memory_bytes
        power = est.power_w
    else:
        tpot = total / wl.gen_len
        mem = figures["weight_bytes"] + figures["kv_bytes_final"] + figures["activation_bytes_peak"]
        power = hw.power_w
        est_ttft = ttft
    fits = mem <= hw.memory.capacity_bytes
    rec.update(
        decode_tokens_per_s=_finite(wl.batch / tpot),
        ttft_s=_finite(est.ttft_s if est else est_ttft),
        tokens_per_j=None if power is None else _finite(wl.batch / (power * tpot)),
        memory_bytes=float(mem),
        fits_memory=fits,
    )
    feasible = fits or not cons.fits_memory
    if space.resource_model is not None:
        rkey = (h, var.model.head_dim)
        d = _RES_CACHE.get(rkey) if _RES_CACHE.get("fp") == fp else None
        if d is None:
            if _RES_CACHE.get("fp") != fp or len(_RES_CACHE) > _HW_CACHE_MAX:
                _RES_CACHE.clear()
                _RES_CACHE["fp"] = fp
            d = _RES_CACHE[rkey] = space.resource_model.design_totals(hw, var.model.head_dim)
        rec.update(
            lut=d["lut"],
            ff=d["ff"],
            dsp=d["dsp"],
            bram=d["bram"],
            fmax_mhz=d["fmax_mhz"],
            fits_part=d["fits_part"],
            resources_extrapolated=d["extrapolated"],
        )
        if cons.fits_part:
            feasible = feasible and d["fits_part"]
        if cons.meets_clock:
            meets = d["fmax_mhz"] is not None and d["fmax_mhz"] * 1e6 >= hw.freq_hz
            rec["meets_clock"] = meets
            feasible = feasible and meets
    missing = [o for o in space.spec.objectives if rec.get(o) is None]
    if missing:
        rec["error"] = f"no {', '.join(missing)} for this point (e.g. the hardware has no power_w)"
        feasible = False
    rec["feasible"] = feasible
    return rec


def evaluate_job(job: tuple[str, Any, Any]) -> list[dict[str, Any]]:
    """Records of the points `job[2]` of space `job[1]` (fingerprint `job[0]`), in that order."""
    fp, space, pids = job
    _LEAN.begin_job()
    return [evaluate_point(space, int(pid), fp) for pid in pids]
