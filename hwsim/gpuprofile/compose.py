"""Compose a model's step time from its operators' profiled times.

The operator list mirrors the reference forward pass of `hwsim.gpuprofile.validate.RefModel` (built from
`hwsim.gpuprofile.kernels`), call for call:

decode step (B sequences, one token each, attending C tokens; T = B)::

    embed(T) [+ embed(T) + add(T) for learned positions] [+ rope_table(T)]
    per layer: norm, q/k/v linears, [rope(q heads), rope(kv heads)], kv_append(B), decode_attention(B, C),
               o linear, add, norm, FFN linears + activation, add
    norm(B), lm_head linear(B), argmax(B), plus one CUDA-graph launch

prefill (B sequences of P tokens; T = B*P): the same with kv_write(T) for kv_append and prefill_attention(B, P)
for decode_attention; the final norm, LM head and argmax run on the B last tokens.

Each call's time comes from the profile (`GpuProfile.lookup`); where the profile has no time for it (outside the
measured axes) the roofline with the spec's efficiencies stands in, and the result's notes say which operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hwsim.gpuprofile.profile import GpuProfile, roofline_s

if TYPE_CHECKING:
    from hwsim.hardware import HardwareSpec
    from models.spec import ModelSpec

__all__ = [
    "OpCall",
    "Priced",
    "decode_calls",
    "prefill_calls",
    "price",
    "predict_decode_step",
    "predict_prefill",
    "FFN_LINEARS",
]

FFN_LINEARS = ("gate_proj", "up_proj", "down_proj", "fc1", "fc2")


@dataclass(frozen=True)
class OpCall:
    """`count` calls of operator `op` at shape `key` and axis point `point`; `cls` is the Estimate op class."""

    op: str
    key: tuple[tuple[str, Any], ...]
    point: tuple[int, ...]
    count: int
    cls: str

    @property
    def key_dict(self) -> dict[str, Any]:
        return dict(self.key)


def _call(op: str, key: dict[str, Any], point: tuple[int, ...], count: int, cls: str) -> OpCall:
    return OpCall(op, tuple(sorted(key.items())), point, count, cls)


def _block_calls(m: ModelSpec, T: int, L: int) -> list[OpCall]:
    """Per-layer operators other than attention/KV, for T tokens, each `L` times."""
    calls = [
        _call(
            "norm",
            {"kind": "rms" if m.norm == "rmsnorm" else "layer", "width": m.hidden_size},
            (T,),
            2 * L,
            "elementwise",
        ),
        _call("add", {"width": m.hidden_size}, (T,), 2 * L, "elementwise"),
        _call("activation", {"kind": m.ffn_type, "width": m.ffn_hidden_size}, (T,), L, "elementwise"),
    ]
    for lin in m.block_linears:
        cls = "ffn" if lin.name in FFN_LINEARS else "attn_linear"
        calls.append(
            _call("linear", {"in": lin.in_features, "out": lin.out_features, "bias": bool(lin.bias)}, (T,), L, cls)
        )
    if m.positional == "rope":
        calls.append(_call("rope", {"heads": m.num_heads, "head_dim": m.head_dim}, (T,), L, "elementwise"))
        calls.append(_call("rope", {"heads": m.num_kv_heads, "head_dim": m.head_dim}, (T,), L, "elementwise"))
    return calls


def _edge_calls(m: ModelSpec, T: int, B: int) -> list[OpCall]:
    """Embedding of T tokens; final norm, LM head and argmax of B rows."""
    calls = [_call("embed", {"width": m.hidden_size}, (T,), 1, "elementwise")]
    if m.positional == "learned":
        calls += [
            _call("embed", {"width": m.hidden_size}, (T,), 1, "elementwise"),
            _call("add", {"width": m.hidden_size}, (T,), 1, "elementwise"),
        ]
    else:
        calls.append(_call("rope_table", {"head_dim": m.head_dim}, (T,), 1, "elementwise"))
    calls += [
        _call(
            "norm", {"kind": "rms" if m.norm == "rmsnorm" else "layer", "width": m.hidden_size}, (B,), 1, "elementwise"
        ),
        _call("linear", {"in": m.hidden_size, "out": m.vocab_size, "bias": False}, (B,), 1, "lm_head"),
        _call("argmax", {"vocab": m.vocab_size}, (B,), 1, "elementwise"),
    ]
    return calls


def attended(m: ModelSpec, context: int) -> int:
    """Tokens a decode step at `context` attends (the model's sliding window bounds it)."""
    return min(context, m.sliding_window) if m.sliding_window else context


def decode_calls(m: ModelSpec, batch: int, context: int) -> list[OpCall]:
    """Operators of one decode step: `batch` new tokens, each attending `context` tokens (before any window)."""
    L, att = m.num_layers, {"q_heads": m.num_heads, "kv_heads": m.num_kv_heads, "head_dim": m.head_dim}
    return (
        _edge_calls(m, batch, batch)
        + _block_calls(m, batch, L)
        + [
            _call("kv_append", {"kv_heads": m.num_kv_heads, "head_dim": m.head_dim}, (batch,), L, "kv_append"),
            _call("decode_attention", att, (batch, attended(m, context)), L, "attention"),
        ]
    )


def prefill_calls(m: ModelSpec, batch: int, prompt: int) -> list[OpCall]:
    """Operators of the prefill of `batch` prompts of `prompt` tokens (full causal attention)."""
    L, T = m.num_layers, batch * prompt
    att = {"q_heads": m.num_heads, "kv_heads": m.num_kv_heads, "head_dim": m.head_dim}
    return (
        _edge_calls(m, T, batch)
        + _block_calls(m, T, L)
        + [
            _call("kv_write", {"kv_heads": m.num_kv_heads, "head_dim": m.head_dim}, (T,), L, "kv_append"),
            _call("prefill_attention", att, (batch, prompt), L, "attention"),
        ]
    )


@dataclass
class Priced:
    """Seconds of a list of calls: total, per op class, and which calls left the profile."""

    total_s: float = 0.0
    by_class: dict[str, float] = field(default_factory=dict)
    fallback: set[str] = field(default_factory=set)  # "op key point" of roofline fallbacks
    scaled: set[str] = field(default_factory=set)  # ops priced from the nearest profiled shape
    calls: list[tuple[OpCall, float, str]] = field(default_factory=list)

    def notes(self, hw: HardwareSpec) -> list[str]:
        out = []
        if self.scaled:
            out.append(
                "GPU profile: shapes not profiled, scaled from the nearest profiled shape by roofline ratio: "
                + "; ".join(sorted(self.scaled))
            )
        if self.fallback:
            out.append(
                f"GPU profile: outside the measured range, roofline with {hw.name}'s efficiencies instead: "
                + "; ".join(sorted(self.fallback))
            )
        return out


def price(
    calls: list[OpCall], hw: HardwareSpec, prof: GpuProfile, overhead_s: float = 0.0, into: Priced | None = None
) -> Priced:
    """Sum the calls' times (profile, else roofline) plus `overhead_s`."""
    res = into or Priced()
    for c in calls:
        key = c.key_dict
        t, how = prof.lookup(c.op, key, c.point, hw)
        if t is None:
            t = roofline_s(hw, c.op, key, c.point)
            res.fallback.add(f"{c.op} {_fmt(key)} at {c.point}")
        elif how == "scaled":
            res.scaled.add(f"{c.op} {_fmt(key)}")
        res.total_s += t * c.count
        res.by_class[c.cls] = res.by_class.get(c.cls, 0.0) + t * c.count
        res.calls.append((c, t, how))
    if overhead_s:
        res.total_s += overhead_s
        res.by_class["overhead"] = res.by_class.get("overhead", 0.0) + overhead_s
    return res


def _fmt(key: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in key.items())


def predict_decode_step(m: ModelSpec, hw: HardwareSpec, prof: GpuProfile, batch: int, context: int) -> Priced:
    """One fp16 decode step replayed as a CUDA graph: operator times plus one graph launch."""
    return price(decode_calls(m, batch, context), hw, prof, prof.graph_launch_s)


def predict_prefill(m: ModelSpec, hw: HardwareSpec, prof: GpuProfile, batch: int, prompt: int) -> Priced:
    """The fp16 prefill (TTFT) of `batch` prompts of `prompt` tokens replayed as a CUDA graph."""
    return price(prefill_calls(m, batch, prompt), hw, prof, prof.graph_launch_s)
