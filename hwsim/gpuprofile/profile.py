"""A measured GPU operator profile: load, check, look operator times up.

A profile (JSON, written by `hwsim profile`) holds, per operator of `hwsim.gpuprofile.grid.OPERATORS`, tables: one
per key (a shape, e.g. a linear layer's (in, out, bias)) with times over one or two axes (tokens; batch x context).

Lookup of (operator, key, axis point):
* the key was measured and the point lies inside its axes: log-log interpolation between the measured neighbours
  (bilinear in log space for two axes; exact at measured points);
* the key was not measured: the nearest measured key of the operator (in log size), its interpolated time scaled by
  the ratio of the two shapes' roofline times on the spec (same efficiency, other size);
* the point lies outside the measured axes (or in a hole of a 2-D table, e.g. a KV cache above the profiling cap):
  no profile time; the caller falls back to the roofline with the spec's efficiencies and says so.

A spec may borrow the profile of another device (``profile_hardware``): times are then transferred by spec sheets,
t' = t0 + (t - t0) * roof'/roof, with t0 the profile's measured time of one tiny kernel (a launch-latency floor that
does not scale with bandwidth or FLOP/s) and roof, roof' the shape's roofline times on the two specs. That transfer is
unvalidated until a profile of the target device says otherwise.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from base.errors import FormatError, SpecError
from hwsim.gpuprofile.grid import OPERATORS

if TYPE_CHECKING:
    from hwsim.hardware import HardwareSpec

__all__ = ["GpuProfile", "Table", "load_profile", "profile_for", "roofline_s", "FORMAT", "VERSION"]

FORMAT = "hwsim-gpu-profile"
VERSION = 1
FP16 = 2
# Vector-unit operations per element of the elementwise operators (counts of the arithmetic, for the roofline
# fallback only; profiled times do not use them).
_VEC_OPS = {"norm": 5, "rope": 6, "activation": 5, "add": 1, "argmax": 1}
Key = tuple[tuple[str, Any], ...]


def _k(key: dict[str, Any]) -> Key:
    return tuple(sorted(key.items()))


def work(op: str, key: dict[str, Any], point: tuple[int, ...]) -> tuple[float, float, bool]:
    """(flops, bytes, on the matrix units) of one call of `op` at `key`, `point`: the ideal traffic (each input read
    once, each output written once, fp16) that the roofline prices."""
    if op == "linear":
        (T,) = point
        i, o = key["in"], key["out"]
        return 2.0 * T * i * o, FP16 * (i * o + T * (i + o) + (o if key["bias"] else 0)), True
    if op == "decode_attention":
        B, C = point
        Hq, Hkv, D = key["q_heads"], key["kv_heads"], key["head_dim"]
        return 4.0 * B * Hq * C * D, FP16 * (2 * B * Hkv * C * D + 2 * B * Hq * D), True
    if op == "prefill_attention":
        B, P = point
        Hq, Hkv, D = key["q_heads"], key["kv_heads"], key["head_dim"]
        return 4.0 * B * Hq * D * P * (P + 1) / 2, FP16 * B * P * (2 * Hq * D + 2 * Hkv * D), True
    (n,) = point
    if op == "norm":
        return 5.0 * n * key["width"], FP16 * (2 * n * key["width"] + key["width"]), False
    if op == "rope_table":
        return 0.0, FP16 * 2 * n * key["head_dim"], False
    if op == "rope":
        e = n * key["heads"] * key["head_dim"]
        return 6.0 * e, FP16 * (2 * e + n * key["head_dim"]), False
    if op == "activation":
        e = n * key["width"]
        return (5.0 * e, FP16 * 3 * e, False) if key["kind"] == "swiglu" else (2.0 * e, FP16 * 2 * e, False)
    if op == "add":
        return 1.0 * n * key["width"], FP16 * 3 * n * key["width"], False
    if op == "embed":
        return 0.0, FP16 * 2 * n * key["width"], False
    if op in ("kv_append", "kv_write"):
        return 0.0, FP16 * 4 * n * key["kv_heads"] * key["head_dim"], False
    if op == "argmax":
        return 1.0 * n * key["vocab"], FP16 * n * key["vocab"], False
    raise SpecError(f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}")


def roofline_s(hw: HardwareSpec, op: str, key: dict[str, Any], point: tuple[int, ...]) -> float:
    """Roofline time of one call with the spec's efficiencies: max(bytes / (bandwidth x memory.efficiency),
    flops / rate), rate = fp16 peak x matrix_efficiency on the matrix units, else vector_ops_per_s."""
    flops, nbytes, matrix = work(op, key, point)
    rate = hw.peak_ops_per_s(16, 16) * hw.compute.matrix_efficiency if matrix else hw.compute.vector_ops_per_s
    return max(nbytes / hw.memory.effective_bandwidth_bytes_per_s, flops / rate)


@dataclass(frozen=True)
class Table:
    """Times of one operator at one key over its axes (``times`` 1-D, or rows x columns for two axes)."""

    op: str
    key: dict[str, Any]
    axes: tuple[tuple[int, ...], ...]
    times: tuple  # floats or None, nested per axis
    logs: tuple[tuple[float, ...], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "logs", tuple(tuple(math.log(v) for v in ax) for ax in self.axes))

    @property
    def min_time(self) -> float:
        flat = self.times if len(self.axes) == 1 else [t for row in self.times for t in row]
        return min(t for t in flat if t is not None)

    def _bracket(self, axis: int, value: int) -> tuple[int, int, float] | None:
        ax, lg = self.axes[axis], self.logs[axis]
        if value < ax[0] or value > ax[-1]:
            return None
        j = bisect.bisect_left(ax, value)
        if ax[j] == value:
            return j, j, 0.0
        return j - 1, j, (math.log(value) - lg[j - 1]) / (lg[j] - lg[j - 1])

    def at(self, point: tuple[int, ...]) -> float | None:
        """Interpolated seconds at `point`, or None outside the measured region."""
        if len(self.axes) == 1:
            b = self._bracket(0, point[0])
            if b is None:
                return None
            i0, i1, f = b
            t0, t1 = self.times[i0], self.times[i1]
            if t0 is None or t1 is None:
                return None
            if i0 == i1:
                return t0
            return math.exp((1 - f) * math.log(t0) + f * math.log(t1))
        ba, bb = self._bracket(0, point[0]), self._bracket(1, point[1])
        if ba is None or bb is None:
            return None
        (a0, a1, fa), (b0, b1, fb) = ba, bb
        corners = [self.times[a][b] for a in (a0, a1) for b in (b0, b1)]
        if any(c is None for c in corners):
            return None
        l00, l01, l10, l11 = (math.log(c) for c in corners)
        return math.exp((1 - fa) * ((1 - fb) * l00 + fb * l01) + fa * ((1 - fb) * l10 + fb * l11))


def _distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    d = 0.0
    for name, va in a.items():
        vb = b.get(name)
        if isinstance(va, bool) or isinstance(va, str) or isinstance(vb, (bool, str)):
            d += 0.0 if va == vb else 100.0
        else:
            d += abs(math.log(va / vb))
    return d


@dataclass(frozen=True)
class GpuProfile:
    """A checked profile. `hardware` is the hwsim spec name it was measured for; `source` the file."""

    hardware: str
    source: str
    provenance: dict[str, Any]
    overhead: dict[str, float]
    tables: dict[str, dict[Key, Table]]
    complete: bool
    gemm_flops_per_s: float | None = None  # the calibration's large fp16 GEMM (the measured arithmetic ceiling)

    @property
    def device_name(self) -> str:
        return str(self.provenance.get("device_name", "?"))

    def table(self, op: str, key: dict[str, Any]) -> Table | None:
        return self.tables[op].get(_k(key))

    def nearest(self, op: str, key: dict[str, Any]) -> Table:
        return min(self.tables[op].values(), key=lambda t: _distance(key, t.key))

    def lookup(
        self, op: str, key: dict[str, Any], point: tuple[int, ...], hw: HardwareSpec
    ) -> tuple[float | None, str]:
        """(seconds or None, how): how is 'profile', 'scaled' (nearest key, roofline ratio) or 'outside'.

        The ratio of the two shapes' roofline times is taken on the spec the profile was measured on where that spec
        is shipped (the measured time is that device's), else on `hw`; so a what-if on `hw`'s bandwidth or rates does
        not move a profiled time through the shape ratio."""
        tab = self.table(op, key)
        if tab is not None:
            t = tab.at(point)
            return (t, "profile") if t is not None else (None, "outside")
        near = self.nearest(op, key)
        t = near.at(point)
        if t is None:
            return None, "outside"
        ref = self.measured_on or hw
        return t * roofline_s(ref, op, key, point) / roofline_s(ref, op, near.key, point), "scaled"

    @cached_property
    def measured_on(self) -> HardwareSpec | None:
        """The shipped spec named by the profile's ``hardware``, or None (a user's own device name)."""
        from hwsim.hardware import get_hardware, list_hardware

        return get_hardware(self.hardware) if self.hardware in list_hardware() else None

    @property
    def graph_launch_s(self) -> float:
        return float(self.overhead["graph_launch_s"])


def _fail(path: str, what: str) -> FormatError:
    return FormatError(f"{path}: {what}; re-measure it with `hwsim profile --out {Path(path).name}` on the GPU")


def _pos_ints(path: str, where: str, values: Any) -> tuple[int, ...]:
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
        or sorted(set(values)) != values
    ):
        raise _fail(path, f"{where}: axis must be a non-empty ascending list of positive integers")
    return tuple(values)


def _time(path: str, where: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise _fail(path, f"{where}: time {v!r} is not a positive number of seconds (or null)")
    return float(v)


def parse_profile(doc: Any, path: str) -> GpuProfile:
    """Check a decoded profile document and build the `GpuProfile` (FormatError naming the problem)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _fail(path, f'not a hwsim GPU profile (no "format": "{FORMAT}")')
    if doc.get("version") != VERSION:
        raise _fail(
            path, f"profile format version {doc.get('version')!r} is not supported (this hwsim reads version {VERSION})"
        )
    for name, typ in (("hardware", str), ("provenance", dict), ("overhead", dict), ("ops", dict)):
        if not isinstance(doc.get(name), typ):
            raise _fail(path, f"field {name!r} is missing or not a {typ.__name__}")
    ov = doc["overhead"]
    for name in ("graph_launch_s", "graph_tiny_kernel_s", "eager_launch_s"):
        v = ov.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise _fail(path, f"overhead.{name} is missing or not a number of seconds >= 0")
    tables: dict[str, dict[Key, Table]] = {}
    for op, (key_fields, axis_names) in OPERATORS.items():
        raw = doc["ops"].get(op)
        if not isinstance(raw, list) or not raw:
            raise _fail(
                path, f"the profile misses operator {op!r} (its grid must cover every operator: {', '.join(OPERATORS)})"
            )
        tables[op] = {}
        for n, t in enumerate(raw):
            where = f"ops.{op}[{n}]"
            if not isinstance(t, dict) or not isinstance(t.get("key"), dict) or not isinstance(t.get("axes"), dict):
                raise _fail(path, f"{where}: a table needs 'key', 'axes' and 'time_s'")
            if sorted(t["key"]) != sorted(key_fields):
                raise _fail(path, f"{where}: key fields {sorted(t['key'])} are not {sorted(key_fields)}")
            if list(t["axes"]) != list(axis_names):
                raise _fail(path, f"{where}: axes {list(t['axes'])} are not {list(axis_names)}")
            axes = tuple(_pos_ints(path, f"{where}.axes.{a}", t["axes"][a]) for a in axis_names)
            ts = t.get("time_s")
            if len(axes) == 1:
                if not isinstance(ts, list) or len(ts) != len(axes[0]):
                    raise _fail(path, f"{where}: time_s must have one entry per axis value")
                times: tuple = tuple(_time(path, where, v) for v in ts)
                measured = [v for v in times if v is not None]
            else:
                if (
                    not isinstance(ts, list)
                    or len(ts) != len(axes[0])
                    or not all(isinstance(r, list) and len(r) == len(axes[1]) for r in ts)
                ):
                    raise _fail(path, f"{where}: time_s must be {len(axes[0])} rows of {len(axes[1])} entries")
                times = tuple(tuple(_time(path, where, v) for v in r) for r in ts)
                measured = [v for r in times for v in r if v is not None]
            if not measured:
                continue
            tab = Table(op, dict(t["key"]), axes, times)
            tables[op][_k(tab.key)] = tab
        if not tables[op]:
            raise _fail(path, f"operator {op!r} has no measured time")
    return GpuProfile(
        hardware=doc["hardware"],
        source=path,
        provenance=doc["provenance"],
        overhead=dict(ov),
        tables=tables,
        complete=bool(doc.get("complete", False)),
        gemm_flops_per_s=_gemm_rate(doc.get("calibration")),
    )


def _gemm_rate(cal: Any) -> float | None:
    """The calibration's GEMM rate when it is a positive finite number (older or partial profiles may lack it)."""
    v = cal.get("gemm_flops_per_s") if isinstance(cal, dict) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        return None
    return float(v)


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> GpuProfile:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _fail(path, "not UTF-8 text (a GPU profile is JSON)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"malformed or truncated JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_profile(doc, path)


def load_profile(path: str | Path) -> GpuProfile:
    """Read and check a profile file (cached per path and modification time)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(
            f"GPU profile {p} does not exist; measure one with `hwsim profile --out {p}` or remove "
            "the spec's 'profile' field"
        )
    return _load(str(p), p.stat().st_mtime_ns)


def profile_for(hw: HardwareSpec) -> GpuProfile | None:
    """The profile a spec names (None if it names none), checked against the spec: a profile measured for another
    hardware than the spec (or than its ``profile_hardware``) is refused."""
    if hw.profile is None:
        return None
    prof = load_profile(hw.profile)
    want = hw.profile_hardware or hw.name
    if prof.hardware != want:
        raise SpecError(
            f"hardware {hw.name!r} names GPU profile {hw.profile}, which was measured for "
            f"{prof.hardware!r} ({prof.device_name}), not {want!r}; point 'profile' at a profile of "
            f"{want!r}, or set 'profile_hardware: {prof.hardware}' to transfer it by spec sheets"
        )
    return prof
