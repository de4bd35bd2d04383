"""The GPU's SM clock, board power and clock-event reasons, sampled by NVML while something runs.

A GPU at its power limit lowers its clock (NVML clock-event reason 0x4, software power cap): operators timed in short
bursts run at the boost clock, a long compute-bound pass does not. The profiler and the validation record what the
clock and power were while each table or step was measured, so that a profile says in which state it was taken.
`ClockSampler.maybe()` is a sampler, or a null one where NVML is not there (CPU runs, no pynvml).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from typing import Any

__all__ = ["ClockSampler", "NullSampler", "POWER_CAP_REASON"]

POWER_CAP_REASON = 0x4  # nvmlClocksEventReasonSwPowerCap


class ClockSampler:
    """SM clock (MHz), board power (W) and clock-event reasons sampled by NVML in a thread."""

    def __init__(self, index: int = 0, period_s: float = 1e-3):
        import pynvml

        self.nv = pynvml
        pynvml.nvmlInit()
        self.h = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.period = period_s
        self.samples: list[tuple[float, int, float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _reasons(self) -> int:
        nv = self.nv
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            fn = getattr(nv, name, None)
            if fn is not None:
                with contextlib.suppress(nv.NVMLError):
                    return int(fn(self.h))
        return -1

    def _run(self) -> None:
        nv, t0 = self.nv, time.perf_counter()
        while not self._stop.is_set():
            sm = nv.nvmlDeviceGetClockInfo(self.h, nv.NVML_CLOCK_SM)
            pw = nv.nvmlDeviceGetPowerUsage(self.h) / 1e3
            self.samples.append((time.perf_counter() - t0, sm, pw, self._reasons()))
            time.sleep(self.period)

    def __enter__(self) -> ClockSampler:
        self.samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @classmethod
    def maybe(cls, index: int = 0, period_s: float = 2e-3) -> ClockSampler | NullSampler:
        """A sampler of device `index`, or a null sampler where NVML cannot be used."""
        try:
            return cls(index, period_s)
        except Exception:  # no pynvml, no driver, no device: the measurement goes on without clocks
            return NullSampler()

    def summary(self) -> dict[str, Any]:
        """Mean/min/max SM clock and power over the samples; `power_capped`: the fraction of samples whose
        clock-event reasons include the software power cap."""
        if not self.samples:
            return {}
        sm = [s[1] for s in self.samples]
        pw = [s[2] for s in self.samples]
        reasons: dict[str, int] = {}
        for s in self.samples:
            reasons[hex(s[3])] = reasons.get(hex(s[3]), 0) + 1
        return {
            "n": len(sm),
            "sm_mhz_mean": statistics.mean(sm),
            "sm_mhz_min": min(sm),
            "sm_mhz_max": max(sm),
            "power_w_mean": statistics.mean(pw),
            "power_w_max": max(pw),
            "reasons": reasons,
            "power_capped": sum(1 for s in self.samples if s[3] >= 0 and s[3] & POWER_CAP_REASON) / len(sm),
        }

    def record(self) -> dict[str, Any]:
        """`summary` without the reason histogram: what a profile table or validation row stores as its clock."""
        return {k: v for k, v in self.summary().items() if k != "reasons"}


class NullSampler:
    """Stands in for `ClockSampler` where NVML is not available: samples nothing, summarises to {}."""

    def __enter__(self) -> NullSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def summary(self) -> dict[str, Any]:
        return {}

    def record(self) -> dict[str, Any]:
        return {}
