"""THE operator list of one transformer inference phase, and THE function that prices an operator: `op_time`.

Both performance models consume this list: the analytical model prices every `Op` with `op_time`; the cycle-level
simulator (hwsim/cyclesim) builds its tile streams from the linear ops' shapes, precisions and byte counts.

An `Op` carries everything a measured operator profile needs to price it: its kind, its full shape (tokens M,
reduction K, output N, batch, query and KV heads, attended context, head_dim), its precisions and sparsity, and
the flops and off-chip bytes the scheme's formats imply (bytes come from quant/scheme.py only).

Profile hook: `op_time(op, hw)` first asks ``hw.gpu_profile`` (when the hardware spec names a profile) for a measured
time, ``hw.gpu_profile.op_time(op) -> float | numpy array | None``; None falls back to the mechanisms below. Decode
attention ops carry numpy arrays in ``context``, ``flops`` and ``bytes`` (one entry per decode step priced at once); a
profile must then return an array of the same length (or None).

Mechanisms of `op_time` (each a physical parameter of the HardwareSpec, no free scale factor):

* data: ``bytes / (active channels x channel bandwidth x memory.efficiency)`` -- only the channels the design's
  dies are wired to carry data;
* load latency: with ``fpga.outstanding_loads = Q`` loads in flight per die, each load of a tile costs
  ``max(transfer, (latency + row miss + transfer) / Q)`` (Little's law); Q = 0 hides the latency;
* compute: MACs at the engine's derived peak for the operator's precision and phase, times
  ``compute.matrix_efficiency``; weight sparsity the engines skip runs at ``density / fpga.sparse_efficiency``;
* instruction issue: ``instructions x fpga.instruction_cycles`` per die, overlapped with data and compute
  (the operator takes the longest of the three);
* not overlapped: ``fpga.sync_cycles`` per dependent operator, the die-to-die exchange of the operator's output
  activations over ``fpga.die_link_bytes_per_cycle``, read/write turnarounds (``memory.turnaround_ns``) around
  each write, HBM round trips of activations when ``fpga.activations_on_chip`` is false, and per-token host control
  (``fpga.host_s_per_token``, an op of its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from quant.scheme import FP16_BYTES, OP_GROUPS

if TYPE_CHECKING:
    from hwsim.hardware import HardwareSpec
    from models.spec import LinearShape, ModelSpec
    from quant.measured import MeasuredProfile
    from quant.scheme import CompressionScheme

__all__ = [
    "Op",
    "OpTime",
    "op_time",
    "linear_ops",
    "head_op",
    "elementwise_op",
    "attention_ops",
    "host_op",
    "attention_ops_per_s",
    "memo_by_identity",
    "SOFTMAX_OPS_PER_SCORE",
    "ELEMENTWISE_OPS_PER_HIDDEN",
    "ELEMENTWISE_OPS_PER_FFN",
    "MECHANISMS",
]

# Vector-unit operation counts per element (documented estimates of the arithmetic, not efficiencies):
SOFTMAX_OPS_PER_SCORE = 5  # max, subtract, exp, add to sum, scale
ELEMENTWISE_OPS_PER_HIDDEN = 12  # two norms (~4 each), two residual adds, RoPE share
ELEMENTWISE_OPS_PER_FFN = 4  # SiLU/GELU/ReLU + gating multiply

MECHANISMS = (
    "memory",
    "load_latency",
    "compute",
    "instruction_issue",
    "sync",
    "die_link",
    "turnaround",
    "activation_io",
    "host",
    "measured",
)


@dataclass(frozen=True)
class Op:
    """One operator instance (or `count` identical ones: the layers sharing it).

    Shape: ``tokens`` (M, activation rows = batch x tokens of the phase), ``k`` (reduction), ``n`` (output
    features); attention: ``q_heads``, ``kv_heads``, ``head_dim`` and ``context`` (attended tokens per query,
    a numpy array over decode steps for decode attention; in prefill the mean over the prompt's queries).
    """

    kind: str  # "linear" | "attention" | "softmax" | "elementwise" | "kv_append" | "host"
    name: str  # q_proj ... down_proj, lm_head, attention, softmax, elementwise, kv_append, host
    cls: str  # reporting class: attn_linear, ffn, lm_head, attention, softmax, elementwise, kv_append, host
    phase: str  # "prefill" | "decode"
    unit: str  # what executes it: "matrix" | "attention" | "vector" | "memory" | "host"
    count: int = 1
    tokens: int = 0
    k: int = 0
    n: int = 0
    batch: int = 1
    q_heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    context: Any = 0.0
    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16
    sparsity: str = "none"
    density: float = 1.0
    flops: Any = 0.0  # 2 x the MACs the scheme implies (zeros of pruned weights excluded)
    bytes: Any = 0.0  # off-chip bytes read and written
    write_bytes: float = 0.0  # of which written
    weight_bytes: float = 0.0  # of which weights (streamed in tiles)
    fixed_s: float = 0.0  # host ops: seconds
    bias: bool = False  # linear: adds a bias vector (a GPU GEMM's epilogue; its own kernel shape in a profile)
    layers: tuple[int, ...] = field(default=(), compare=False)  # layers this op stands for (empty = all/none)


@dataclass(frozen=True)
class OpTime:
    """Seconds of ONE instance of an op (array for decode attention), its bound and the time by mechanism."""

    seconds: Any
    bound: str
    parts: dict[str, Any]


def attention_ops_per_s(hw: HardwareSpec, kv_bits: int, act_bits: int) -> tuple[float, str | None]:
    """(achievable ops/s, precision key or None) of attention (q·K and p·V) for KV at `kv_bits`, queries at
    `act_bits`: the RTL attention engines (2 ops per lane per cycle) for int KV on an FPGA that has them, else the
    decode matrix engine at its efficiency."""
    if hw.fpga is not None and hw.fpga.attention_lanes and kv_bits <= 8:
        return 2.0 * hw.fpga.attention_lanes * hw.fpga.attention_engines * hw.freq_hz, None
    rate, key = hw.matrix_rate(kv_bits, act_bits, "decode")
    return rate * hw.compute.matrix_efficiency, key


def _tile_loads(op: Op, hw: HardwareSpec) -> float:
    """Weight tiles (loads) of one instance: weight bytes over the tile buffer (one load per tile)."""
    f = hw.fpga
    if f is None or not op.weight_bytes:
        return 0.0
    tile = f.weight_buffer_bytes or op.weight_bytes
    return math.ceil(op.weight_bytes / tile)


def op_time(op: Op, hw: HardwareSpec) -> OpTime:
    """Seconds of one instance of `op` on `hw` (see the module docstring); THE pricing function of hwsim."""
    prof = getattr(hw, "gpu_profile", None)  # hwsim.gpuprofile.hook.ProfileHook when the spec names a profile
    if prof is not None:
        got = prof.op_time(op)
        if got is not None:
            return OpTime(got, "measured", {"measured": got})
    if op.kind == "host":
        return OpTime(op.fixed_s, "host", {"host": op.fixed_s})
    f, mem = hw.fpga, hw.memory
    parts: dict[str, Any] = {}
    # ---- data ----
    t_data = op.bytes / hw.stream_bandwidth_bytes_per_s
    t_lat = 0.0
    loads = _tile_loads(op, hw)
    if f is not None and f.outstanding_loads and loads:
        loads_per_die = loads / f.n_dies  # each die streams its share of the tiles over its own channels
        transfer = t_data / loads_per_die
        per_channel = op.weight_bytes / loads / hw.active_channels
        miss = min(1.0, per_channel / mem.page_bytes) if mem.page_bytes else 0.0
        lat = (mem.latency_ns + miss * mem.row_miss_ns) * 1e-9
        t_lat = max(0.0, loads_per_die * max(transfer, (lat + transfer) / f.outstanding_loads) - t_data)
    t_mem = t_data + t_lat
    # ---- compute ----
    if op.unit == "matrix":
        rate, _ = hw.matrix_rate(op.weight_bits, op.act_bits, op.phase)
        dense_flops = op.flops / op.density if op.density else op.flops
        t_cmp = dense_flops * hw.sparse_speedup(op.sparsity, op.density) / (rate * hw.compute.matrix_efficiency)
    elif op.unit == "attention":
        rate, _ = attention_ops_per_s(hw, op.kv_bits, op.act_bits)
        t_cmp = op.flops / rate
    elif op.unit == "vector":
        t_cmp = op.flops / hw.compute.vector_ops_per_s
    else:
        t_cmp = 0.0 * op.flops
    # ---- control ----
    t_issue = 0.0
    extra = 0.0
    if f is not None and op.unit != "memory":
        if f.instruction_cycles and f.instructions_per_tile and loads:
            t_issue = loads / f.n_dies * f.instructions_per_tile * f.instruction_cycles / hw.freq_hz
        if f.sync_cycles:
            parts["sync"] = f.sync_cycles / hw.freq_hz
        if f.die_link_bytes_per_cycle and f.n_dies > 1 and op.unit == "matrix":
            out = op.tokens * op.n * (1 if op.act_bits <= 8 else 2)
            parts["die_link"] = out * (f.n_dies - 1) / f.n_dies / f.die_link_bytes_per_cycle / hw.freq_hz
        if not f.activations_on_chip and op.unit in ("matrix", "vector") and op.phase == "decode":
            io = op.tokens * (op.k + op.n) * (1 if op.act_bits <= 8 else 2)
            parts["activation_io"] = io / hw.stream_bandwidth_bytes_per_s + (
                mem.latency_ns * 1e-9 + 2 * mem.turnaround_ns * 1e-9
            )
    if op.write_bytes and mem.turnaround_ns:
        parts["turnaround"] = 2 * mem.turnaround_ns * 1e-9
    extra = sum(parts.values())
    if not isinstance(t_mem, np.ndarray) and not isinstance(t_cmp, np.ndarray):
        core = max(t_mem, t_cmp, t_issue)
        if t_issue >= max(t_mem, t_cmp) and t_issue > 0:
            bound, main = "instruction_issue", {"instruction_issue": t_issue}
        elif t_cmp > t_mem:
            bound, main = "compute", {"compute": t_cmp}
        else:
            bound = "memory"
            main = {"memory": t_data, "load_latency": t_lat} if t_lat else {"memory": t_data}
    else:  # decode attention over many steps at once: attribute per step
        t_mem_a, t_cmp_a = np.asarray(t_mem, dtype=float), np.asarray(t_cmp, dtype=float)
        core = np.maximum(np.maximum(t_mem_a, t_cmp_a), t_issue)
        cmp_wins = t_cmp_a > t_mem_a
        bound = "compute" if cmp_wins.all() else ("memory" if not cmp_wins.any() else "mixed")
        main = {"compute": np.where(cmp_wins, t_cmp_a, 0.0), "memory": np.where(cmp_wins, 0.0, t_mem_a)}
    return OpTime(core + extra, bound, {**main, **parts})


# ---- building the operator list ------------------------------------------------------------------------------
def _is_ffn(name: str) -> bool:
    return OP_GROUPS.get(name) == "ffn"


_CACHE: dict[tuple, tuple] = {}


def memo_by_identity(fn):
    """Memoise a pure function of immutable specs on the identity of its spec arguments (numbers and strings by
    value); the cache keeps the arguments alive, so an id is never reused while its entry exists. Bounded: cleared
    when full."""

    def wrapper(*args):
        key = (name,) + tuple(a if isinstance(a, (int, float, str)) or a is None else id(a) for a in args)
        got = _CACHE.get(key)
        if got is not None:
            return got[0]
        if len(_CACHE) > 4096:
            _CACHE.clear()
        out = fn(*args)
        _CACHE[key] = (out, args)
        return out

    name = f"{fn.__module__}.{fn.__qualname__}"
    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn
    return wrapper


def linear_ops(
    model: ModelSpec,
    hw: HardwareSpec,
    s: CompressionScheme,
    tokens: int,
    phase: str,
    profile: MeasuredProfile | None = None,
    batch: int = 1,
) -> list[Op]:
    return list(_linear_ops(model, hw, s, tokens, phase, profile, batch))


@memo_by_identity
def _linear_ops(
    model: ModelSpec,
    hw: HardwareSpec,
    s: CompressionScheme,
    tokens: int,
    phase: str,
    profile: MeasuredProfile | None = None,
    batch: int = 1,
) -> tuple[Op, ...]:
    """The blocks' linear layers for `tokens` activation rows, grouped over layers that share precision and size.

    With a profile, each block's weight bytes are scaled to the measured size; with per-layer overrides in the
    scheme, each layer's precision and sparsity are its own."""
    L = model.num_layers
    if profile is not None:
        nominal = sum(s.layer_linear_bytes(model).values())
        factors = [b / nominal for b in profile.layer_weight_bytes]
    else:
        factors = [1.0] * L
    layered = s.layer_dependent()
    groups: dict[tuple, list[int]] = {}
    for layer in range(L):
        key = (factors[layer], tuple(s.for_op(lin.name, layer if layered else None) for lin in model.block_linears))
        groups.setdefault(key, []).append(layer)
    ops: list[Op] = []
    for (factor, schemes), layers in groups.items():
        for lin, ls in zip(model.block_linears, schemes):
            ops.append(_linear(lin, ls, hw, tokens, phase, batch, factor, len(layers), tuple(layers)))
    return tuple(ops)


def _linear(
    lin: LinearShape,
    ls: CompressionScheme,
    hw: HardwareSpec,
    tokens: int,
    phase: str,
    batch: int,
    factor: float,
    count: int,
    layers: tuple[int, ...],
) -> Op:
    wbytes = ls.linear_bytes(lin) * factor
    act_in, act_out = ls.act_bytes(tokens, lin.in_features), ls.act_bytes(tokens, lin.out_features)
    cls = "ffn" if _is_ffn(lin.name) else "attn_linear"
    return Op(
        "linear",
        lin.name,
        cls,
        phase,
        "matrix",
        count,
        tokens,
        lin.in_features,
        lin.out_features,
        batch,
        weight_bits=min(ls.weight_bits, 16),
        act_bits=ls.act_bits,
        sparsity=ls.weight_pruning,
        density=ls.weight_density,
        flops=2.0 * tokens * lin.weight_elems * ls.weight_density,
        bytes=wbytes + act_in + act_out,
        write_bytes=0.0,
        weight_bytes=wbytes,
        layers=layers,
        bias=bool(lin.bias),
    )


@memo_by_identity
def head_op(
    model: ModelSpec,
    hw: HardwareSpec,
    s: CompressionScheme,
    tokens: int,
    phase: str,
    profile: MeasuredProfile | None = None,
    batch: int = 1,
) -> Op:
    """The LM head over `tokens` rows (the last token of each sequence)."""
    wb = s.weight_bytes(model)
    head_bytes = wb.lm_head if wb.lm_head else wb.embedding
    if profile is not None and profile.lm_head_bytes is not None:
        head_bytes = profile.lm_head_bytes
    hs = s.for_op("lm_head")
    bits = s.head_bits
    act = hs.act_bits if bits < 16 else 16
    density = hs.weight_density if bits < 16 and (wb.lm_head or not model.tied_embeddings) else 1.0
    mode = hs.weight_pruning if density < 1.0 else "none"
    lin = model.lm_head
    nbytes = head_bytes + s.act_bytes(tokens, model.hidden_size) + tokens * model.vocab_size * FP16_BYTES
    return Op(
        "linear",
        "lm_head",
        "lm_head",
        phase,
        "matrix",
        1,
        tokens,
        lin.in_features,
        lin.out_features,
        batch,
        weight_bits=min(bits, 16),
        act_bits=act,
        sparsity=mode,
        density=density,
        flops=2.0 * tokens * lin.weight_elems * density,
        bytes=nbytes,
        weight_bytes=head_bytes,
    )


@memo_by_identity
def elementwise_op(model: ModelSpec, tokens: int, phase: str, batch: int = 1) -> Op:
    """Norms, RoPE, activation function and residuals of one block (vector unit); the residual stream is read and
    written twice per block in fp16."""
    flops = tokens * (ELEMENTWISE_OPS_PER_HIDDEN * model.hidden_size + ELEMENTWISE_OPS_PER_FFN * model.ffn_hidden_size)
    # heads (RoPE models only): a GPU profile prices the rotary embedding of the query and KV heads
    rope = (
        dict(q_heads=model.num_heads, kv_heads=model.num_kv_heads, head_dim=model.head_dim)
        if model.positional == "rope"
        else {}
    )
    return Op(
        "elementwise",
        "elementwise",
        "elementwise",
        phase,
        "vector",
        model.num_layers,
        tokens,
        model.hidden_size,
        model.hidden_size,
        batch,
        flops=flops,
        bytes=4 * tokens * model.hidden_size * FP16_BYTES,
        **rope,
    )


def attention_ops(
    model: ModelSpec,
    s: CompressionScheme,
    phase: str,
    batch: int,
    context: Any,
    attended_sum: Any,
    kv_read_bytes: Any,
    kv_write_bytes: float,
    count: int,
    tokens: int = 1,
) -> list[Op]:
    """Attention of one layer: q·K and p·V over `attended_sum` (query, key) pairs per sequence, softmax on the
    vector unit, and the KV append. `context` is the attended tokens per query (array over decode steps)."""
    pairs = batch * model.num_heads * attended_sum
    at = s.for_op("attention")
    common = dict(
        phase=phase,
        count=count,
        tokens=tokens,
        batch=batch,
        q_heads=model.num_heads,
        kv_heads=model.num_kv_heads,
        head_dim=model.head_dim,
        context=context,
        kv_bits=s.kv_bits,
        act_bits=at.act_bits,
    )
    return [
        Op(
            "attention",
            "attention",
            "attention",
            unit="attention",
            k=model.head_dim,
            flops=4.0 * model.head_dim * pairs,
            bytes=kv_read_bytes,
            **common,
        ),
        Op(
            "softmax",
            "softmax",
            "softmax",
            unit="vector",
            flops=SOFTMAX_OPS_PER_SCORE * pairs,
            bytes=0.0 * pairs,
            **common,
        ),
        Op(
            "kv_append",
            "kv_append",
            "kv_append",
            unit="memory",
            bytes=kv_write_bytes,
            write_bytes=kv_write_bytes,
            **common,
        ),
    ]


@memo_by_identity
def host_op(hw: HardwareSpec, phase: str = "decode") -> Op | None:
    """Per-token host control (FPGA designs driven by a host per decode step), or None."""
    if hw.fpga is None or not hw.fpga.host_s_per_token:
        return None
    return Op("host", "host", "host", phase, "host", fixed_s=hw.fpga.host_s_per_token)
