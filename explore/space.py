"""The design space of `hwsim explore`: a YAML file read strictly into `SpaceSpec`, resolved into a `Space`.

A space names its axes, objectives, constraints and search::

    name: u280-accllm
    hardware: u280-accllm                  # the base HardwareSpec (shipped name, or a YAML/report path)
    models: [llama-2-7b]
    schemes: [fp16, w4a16, {scheme: w2a8kv4, eval: evals/w2a8kv4.json}, artifacts/accllm-dir]
    hardware_axes:                         # any numeric HardwareSpec field by its dotted path
      fpga.attention_lanes: [16, 32, 64]
      memory.bandwidth_bytes_per_s: {start: 230e9, stop: 460e9, num: 3}
      freq_hz: {start: 150e6, stop: 300e6, step: 75e6}
    workload: {batch: [1], prompt_len: [1024], gen_len: [512]}
    fidelity: [analytical]
    objectives: [decode_tokens_per_s, tokens_per_j, lut]
    constraints: {fits_memory: true, fits_part: true}
    search: {method: auto}

Paths in the file are relative to the file. Every problem (unknown key or field path, a value out of the field's
range, an empty or contradictory range, a scheme without quality data where perplexity is an objective) is a
`SpecError` raised here, before any point is evaluated.

Rates that a spec stores and that follow the clock are kept consistent when an axis moves ``freq_hz`` (the rule of
fpga/_report.hardware_from_build): ``compute.vector_ops_per_s`` and a GPU's ``compute.peak_ops_per_s`` scale
linearly with it, unless they are axes themselves. An FPGA's matrix rates are derived by hwsim from its engines
and clock, so axes over lanes, engines, DSPs or clock move them without help.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from base.errors import SpecError
from base.specio import check_range, from_mapping, read_yaml, rng, to_plain

__all__ = [
    "SpaceSpec",
    "RangeSpec",
    "SchemeRef",
    "WorkloadAxes",
    "ConstraintSpec",
    "SearchSpec",
    "Space",
    "Variant",
    "OBJECTIVES",
    "load_space",
    "resolve_space",
    "hardware_field",
    "expand_axis",
]

# objective name -> (direction, unit/description); "max" objectives are maximised
OBJECTIVES: dict[str, tuple[str, str]] = {
    "decode_tokens_per_s": ("max", "decode throughput, tokens/s of the whole batch"),
    "ttft_s": ("min", "time to first token (prefill of the batch), s"),
    "tokens_per_j": ("max", "decode tokens per joule (board power x time per token)"),
    "ppl_ratio": ("min", "perplexity / perplexity of the uncompressed model (measured)"),
    "lut": ("min", "LUTs of the attention engines (fpga/resource_model)"),
    "ff": ("min", "flip-flops of the attention engines (fpga/resource_model)"),
    "dsp": ("min", "DSPs: attention engines (fpga/resource_model) + the linear engine's fpga.engine_dsps"),
    "bram": ("min", "block RAM bytes of the attention engines (fpga/resource_model)"),
    "memory_bytes": ("min", "weights + final KV cache + peak activations, bytes"),
}
RESOURCE_OBJECTIVES = ("lut", "ff", "dsp", "bram")
MAX_AXIS_VALUES = 100_000


@dataclass(frozen=True)
class RangeSpec:
    """An axis as a range: ``start..stop`` inclusive, by ``step`` or in ``num`` values (geometric with ``log``)."""

    start: float
    stop: float
    step: float | None = field(default=None, metadata=rng(gt=0))
    num: int | None = field(default=None, metadata=rng(ge=1))
    log: bool = False


@dataclass(frozen=True)
class SchemeRef:
    """A scheme with its measured quality: ``scheme`` is a preset, a scheme YAML or an artifact directory; ``eval``
    a stored ``hwsim eval --json`` result of that compressed model."""

    scheme: str
    eval: str | None = None


@dataclass(frozen=True)
class WorkloadAxes:
    """Workload axes, crossed: sequences per batch, prompt tokens, generated tokens."""

    batch: tuple[int, ...] = field(default=(1,), metadata=rng(ge=1))
    prompt_len: tuple[int, ...] = field(default=(1024,), metadata=rng(ge=1))
    gen_len: tuple[int, ...] = field(default=(1024,), metadata=rng(ge=1))


@dataclass(frozen=True)
class ConstraintSpec:
    """Which designs are feasible: the model fits the memory; the attention engines fit the FPGA part (resource
    model); the clock (``freq_hz``) is at most the Fmax the resource model predicts for the design."""

    fits_memory: bool = True
    fits_part: bool = False
    meets_clock: bool = False


@dataclass(frozen=True)
class SearchSpec:
    """How the space is searched. ``auto``: exhaustive up to ``max_exhaustive`` points, NSGA-II beyond."""

    method: Literal["auto", "exhaustive", "nsga2"] = "auto"
    max_exhaustive: int = field(default=200_000, metadata=rng(ge=1))  # every record is kept in memory
    trials: int = field(default=2000, metadata=rng(ge=1))  # NSGA-II trials (repeated points evaluated once)
    population: int = field(default=50, metadata=rng(ge=2))  # NSGA-II: trials per generation
    seed: int = field(default=0, metadata=rng(ge=0))
    chunk: int = field(default=2048, metadata=rng(ge=1))  # points per job sent to a worker


@dataclass(frozen=True)
class SpaceSpec:
    """The space file, as written (see the module docstring)."""

    name: str
    hardware: str
    schemes: tuple[str | SchemeRef, ...]
    objectives: tuple[str, ...]
    models: tuple[str, ...] = ()
    hardware_axes: dict[str, tuple[float, ...] | RangeSpec] = field(default_factory=dict)
    workload: WorkloadAxes = WorkloadAxes()
    fidelity: tuple[Literal["analytical", "cycle"], ...] = ("analytical",)
    constraints: ConstraintSpec = ConstraintSpec()
    search: SearchSpec = SearchSpec()
    baseline_eval: str | None = None  # `hwsim eval --json` of the uncompressed model: the perplexity ratio's base
    resource_model: str | None = None  # sweep data JSON for fpga.resource_model (default: the committed sweep)
    description: str = ""


# ---- hardware field paths ---------------------------------------------------------------------------------------
def _dataclass_of(tp: Any) -> Any:
    """The spec dataclass in `tp` (itself, or the one of ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _numeric_type(tp: Any) -> type | None:
    if tp in (int, float):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1 and args[0] in (int, float):
        return args[0]
    return None


def hardware_field(hw: Any, path: str) -> tuple[type, dict]:
    """(int or float, range metadata) of the numeric HardwareSpec field at dotted `path` (a key of a mapping field
    and an index into a shape are path parts too: ``compute.peak_ops_per_s.w8a8``, ``fpga.decode_engine.shape.0``);
    SpecError naming the allowed names when a part of the path is not a field (or not numeric, or absent from `hw`)."""
    from hwsim.hardware import HardwareSpec

    cls: Any = HardwareSpec
    obj: Any = hw
    parts = path.split(".")
    meta: Any = {}
    for i, name in enumerate(parts):
        where = ".".join(parts[:i]) or "HardwareSpec"
        if cls is dict:  # a key of a mapping field, e.g. compute.peak_ops_per_s.w8a8
            if not isinstance(obj, dict) or name not in obj:
                keys = ", ".join(sorted(obj)) if isinstance(obj, dict) else "none"
                raise SpecError(f"hardware axis {path!r}: {where} has no key {name!r} in {hw.name}; keys: {keys}")
            if i != len(parts) - 1:
                raise SpecError(f"hardware axis {path!r}: {where}.{name} is a number, not a section")
            return float, dict(meta)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            raise SpecError(f"hardware axis {path!r}: {where} has no field {name!r}; fields: {', '.join(fields)}")
        f = fields[name]
        hints = typing.get_type_hints(cls)
        tp = hints[name]
        obj = getattr(obj, name) if obj is not None else None
        last = i == len(parts) - 1
        num = _numeric_type(tp)
        if last:
            if num is None:
                raise SpecError(
                    f"hardware axis {path!r} is not a numeric field (it is {tp}); name a number such as "
                    "freq_hz, memory.bandwidth_bytes_per_s or fpga.attention_lanes"
                )
            return num, dict(f.metadata)
        if typing.get_origin(tp) is dict:
            cls, meta = dict, f.metadata
            continue
        if typing.get_origin(tp) is tuple:  # an element of a shape, e.g. fpga.decode_engine.shape.0
            elem = _numeric_type(typing.get_args(tp)[0])
            rest = parts[i + 1 :]
            if elem is None or len(rest) != 1 or not rest[0].isdigit():
                raise SpecError(
                    f"hardware axis {path!r}: {where}.{name} is a list; name one numeric element by its index, "
                    f"e.g. {'.'.join(parts[: i + 1])}.0"
                )
            if obj is None or int(rest[0]) >= len(obj):
                raise SpecError(
                    f"hardware axis {path!r}: {hw.name}'s {name} has {0 if obj is None else len(obj)} elements"
                )
            return elem, dict(f.metadata) or {"ge": 1}  # a shape's extent
        sub = _dataclass_of(tp)
        if sub is None:
            raise SpecError(f"hardware axis {path!r}: {where}.{name} is a number, not a section")
        if obj is None:
            raise SpecError(
                f"hardware axis {path!r}: {hw.name} has no {name!r} section to vary; use a hardware spec that has one"
            )
        cls = sub
    raise SpecError(f"hardware axis {path!r} names a section, not a number")  # pragma: no cover - loop returns


def expand_axis(name: str, axis: tuple[float, ...] | RangeSpec, tp: type, meta: dict) -> tuple[float, ...]:
    """The values of one axis, checked against the field's type and range; SpecError for an empty or contradictory
    range or a repeated value."""
    if isinstance(axis, RangeSpec):
        a, b = axis.start, axis.stop
        if (axis.step is None) == (axis.num is None):
            raise SpecError(f"axis {name!r}: give exactly one of step or num for the range {a:g}..{b:g}")
        if b < a:
            raise SpecError(f"axis {name!r}: range stop {b:g} is below start {a:g}; swap them")
        if axis.log and a <= 0:
            raise SpecError(f"axis {name!r}: a log range needs start > 0, got {a:g}")
        if axis.num is not None:
            n = axis.num
            if n == 1 and b != a:
                raise SpecError(f"axis {name!r}: num 1 cannot span {a:g}..{b:g}; give num >= 2 or start == stop")
            if axis.log:
                values = [a * (b / a) ** (k / (n - 1)) if n > 1 else a for k in range(n)]
            else:
                values = [a + (b - a) * k / (n - 1) if n > 1 else a for k in range(n)]
        else:
            if axis.log:
                raise SpecError(f"axis {name!r}: log ranges take num, not step")
            n = int(math.floor((b - a) / axis.step * (1 + 1e-12))) + 1
            if n > MAX_AXIS_VALUES:
                raise SpecError(f"axis {name!r}: {n:,} values; use a larger step (at most {MAX_AXIS_VALUES:,})")
            values = [a + k * axis.step for k in range(n)]
    else:
        values = list(axis)
    if not values:
        raise SpecError(f"axis {name!r} is empty; give at least one value")
    out = []
    for v in values:
        if tp is int:
            r = round(v)
            if abs(v - r) > 1e-9 * max(1.0, abs(v)):
                raise SpecError(f"axis {name!r}: {v:g} is not an integer, and the field is one")
            v = int(r)
        else:
            v = float(v)
        check_range(v, meta, f"axis {name!r}")
        out.append(v)
    if len(set(out)) != len(out):
        dup = next(x for x in out if out.count(x) > 1)
        raise SpecError(f"axis {name!r}: value {dup:g} is given twice; list each value once")
    return tuple(out)


def _set_path(obj: Any, parts: list[str], value: Any) -> Any:
    if isinstance(obj, dict):
        return {**obj, parts[0]: value}
    if isinstance(obj, tuple):
        k = int(parts[0])
        return obj[:k] + (value,) + obj[k + 1 :]
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    return dataclasses.replace(obj, **{parts[0]: _set_path(getattr(obj, parts[0]), parts[1:], value)})


def apply_hardware(base: Any, values: dict[str, float]) -> Any:
    """`base` with the axis values set, derived compute rates kept consistent (see the module docstring), and
    a name that says which design point it is. Raises SpecError for an inconsistent combination."""
    label = ",".join(f"{p}={v:g}" for p, v in values.items())
    hw = dataclasses.replace(base, name=f"{base.name}[{label}]") if label else base
    if "freq_hz" in values and values["freq_hz"] != base.freq_hz:
        scale = values["freq_hz"] / base.freq_hz
        c = base.compute
        c = dataclasses.replace(
            c,
            peak_ops_per_s={k: v * scale for k, v in c.peak_ops_per_s.items()},
            vector_ops_per_s=c.vector_ops_per_s * scale,
        )
        hw = dataclasses.replace(hw, compute=c)
    for path, v in values.items():
        hw = _set_path(hw, path.split("."), v)
    return hw


# ---- the resolved space -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """A (model, compression) pair of the space; `profile` holds an artifact's measured sizes, `ppl` and
    `ppl_ratio` its measured quality (None: not measured)."""

    model: Any  # ModelSpec
    scheme: Any  # CompressionScheme
    label: str
    profile: Any = None  # MeasuredProfile
    ppl: float | None = None
    ppl_ratio: float | None = None
    quality_source: str = ""


@dataclass(frozen=True)
class Space:
    """A resolved space: every axis expanded and checked. Points are numbered in mixed radix, hardware fastest:
    ``id = ((variant * W + workload) * F + fidelity) * H + hardware``."""

    spec: SpaceSpec
    base_hw: Any
    variants: tuple[Variant, ...]
    hw_axes: tuple[tuple[str, tuple[float, ...]], ...]
    workloads: tuple[Any, ...]  # Workload
    fidelities: tuple[str, ...]
    resource_model: Any = None  # fpga.resource_model.ResourceModel when an FPGA objective/constraint needs it
    source: str = ""

    @property
    def n_hw(self) -> int:
        return math.prod(len(v) for _, v in self.hw_axes)

    @property
    def n_points(self) -> int:
        return len(self.variants) * len(self.workloads) * len(self.fidelities) * self.n_hw

    def decode(self, pid: int) -> tuple[int, int, int, int]:
        """(variant, workload, fidelity, hardware) indices of point `pid`."""
        rest, h = divmod(pid, self.n_hw)
        rest, f = divmod(rest, len(self.fidelities))
        v, w = divmod(rest, len(self.workloads))
        return v, w, f, h

    def encode(self, v: int, w: int, f: int, h: int) -> int:
        return ((v * len(self.workloads) + w) * len(self.fidelities) + f) * self.n_hw + h

    def hw_values(self, h: int) -> dict[str, float]:
        out = {}
        for path, values in reversed(self.hw_axes):
            h, k = divmod(h, len(values))
            out[path] = values[k]
        return dict(reversed(list(out.items())))

    def hw_index(self, values: dict[str, float]) -> int:
        h = 0
        for path, vals in self.hw_axes:
            h = h * len(vals) + vals.index(values[path])
        return h

    def hardware(self, h: int) -> Any:
        return apply_hardware(self.base_hw, self.hw_values(h))

    def coordinates(self, pid: int) -> dict[str, Any]:
        v, w, f, h = self.decode(pid)
        wl = self.workloads[w]
        return {
            "model": self.variants[v].model.name,
            "scheme": self.variants[v].label,
            **self.hw_values(h),
            "batch": wl.batch,
            "prompt_len": wl.prompt_len,
            "gen_len": wl.gen_len,
            "fidelity": self.fidelities[f],
        }

    def fingerprint(self) -> str:
        """Hash of everything that decides the points and their values (resume refuses a different space)."""
        data = {
            "spec": to_plain(self.spec),
            "hw": to_plain(self.base_hw),
            "axes": self.hw_axes,
            "variants": [
                (to_plain(v.model), to_plain(v.scheme), v.label, to_plain(v.profile), v.ppl_ratio)
                for v in self.variants
            ],
            "resource_model": None if self.resource_model is None else self.resource_model.fingerprint(),
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_space(path: str | Path) -> Space:
    """Read and resolve a space file (see the module docstring)."""
    path = Path(path)
    spec = from_mapping(SpaceSpec, read_yaml(path), str(path))
    return resolve_space(spec, base_dir=path.parent, source=str(path))


def _rel(base_dir: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else base_dir / q


def resolve_space(spec: SpaceSpec, base_dir: Path = Path("."), source: str = "") -> Space:
    """Check and expand every axis of `spec`; SpecError before any work (see the module docstring)."""
    from explore.quality import resolve_variants
    from hwsim.hardware import get_hardware
    from hwsim.workload import Workload

    where = source or spec.name
    for o in spec.objectives:
        if o not in OBJECTIVES:
            raise SpecError(f"{where}: unknown objective {o!r}; use some of {', '.join(OBJECTIVES)}")
    if not spec.objectives:
        raise SpecError(f"{where}: objectives is empty; name at least one of {', '.join(OBJECTIVES)}")
    if len(set(spec.objectives)) != len(spec.objectives):
        raise SpecError(f"{where}: an objective is listed twice; list each once")
    if not spec.schemes:
        raise SpecError(f"{where}: schemes is empty; give at least one preset, scheme YAML or artifact")
    if not spec.fidelity or len(set(spec.fidelity)) != len(spec.fidelity):
        raise SpecError(f"{where}: fidelity must list analytical and/or cycle, each once")
    hw_ref = spec.hardware
    if hw_ref.endswith((".yaml", ".yml", ".json")):
        hw_ref = str(_rel(base_dir, hw_ref))
    base_hw = get_hardware(hw_ref)
    if spec.hardware_axes and getattr(base_hw, "profile", None) is not None:
        raise SpecError(
            f"{where}: {base_hw.name} prices operators from a measured profile ({base_hw.profile}), which hardware "
            "axes cannot change; vary a spec without a profile"
        )
    axes = []
    for path, axis in spec.hardware_axes.items():
        tp, meta = hardware_field(base_hw, path)
        axes.append((path, expand_axis(path, axis, tp, meta)))
    wl_axes = spec.workload
    for name in ("batch", "prompt_len", "gen_len"):
        vals = getattr(wl_axes, name)
        if not vals:
            raise SpecError(f"{where}: workload.{name} is empty; give at least one value")
        if len(set(vals)) != len(vals):
            raise SpecError(f"{where}: workload.{name} lists a value twice")
    workloads = tuple(
        Workload(batch=b, prompt_len=p, gen_len=g)
        for b in wl_axes.batch
        for p in wl_axes.prompt_len
        for g in wl_axes.gen_len
    )
    variants = resolve_variants(spec, base_dir, where)
    needs_fpga = (
        spec.constraints.fits_part
        or spec.constraints.meets_clock
        or any(o in RESOURCE_OBJECTIVES for o in spec.objectives)
    )
    model = None
    if needs_fpga:
        if base_hw.fpga is None:
            raise SpecError(
                f"{where}: FPGA resources or fits_part/meets_clock need an FPGA hardware spec; "
                f"{base_hw.name} is a {base_hw.kind}"
            )
        from fpga.resource_model import load_resource_model

        model = load_resource_model(None if spec.resource_model is None else _rel(base_dir, spec.resource_model))
        if spec.constraints.meets_clock:
            model.check_part(base_hw.fpga.part, "meets_clock")
        for v in variants:
            model.check_head_dim(v.model.head_dim, v.model.name)
    space = Space(
        spec=spec,
        base_hw=base_hw,
        variants=variants,
        hw_axes=tuple(axes),
        workloads=workloads,
        fidelities=tuple(spec.fidelity),
        resource_model=model,
        source=where,
    )
    return space
