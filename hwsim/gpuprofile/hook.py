"""`ProfileHook`: prices `hwsim.ops.Op`s from a GPU operator profile, as `hwsim.ops.op_time`'s hook.

`op_time` asks ``hw.gpu_profile.op_time(op)`` first; a number (or, for decode attention over many steps, an array)
is the measured time of one instance, None sends the op to the roofline mechanisms. The hook answers for what the
profile measured: fp16 weights and activations, dense fp16 KV. Mapping of the operator list onto the profile
(`hwsim.gpuprofile.compose` lists the same calls for the reference forward pass):

* linear (q/k/v/o, FFN): the linear table of (k, n), over tokens; a linear with quantized weights or activations as
  the measured fp16 GEMM over the same weight bytes, floored by its arithmetic (`_quantized_linear`); weight-sparse
  linears go to the roofline;
* attention: decode_attention(batch, attended context) per decode step, prefill_attention(batch, prompt); the
  fused kernel includes the softmax, so the softmax op costs 0 where attention was profiled. Decode attention over
  a compressed or sparse KV cache is priced as dense attention over the same bytes (a memory-bound kernel whose
  launch floor the profile measured); prefill attention over compressed KV goes to the roofline;
* kv_append: kv_append(batch) in decode, kv_write(tokens) in prefill;
* elementwise (one per layer): two norms, two residual adds, the activation, RoPE of the query and KV heads, plus
  the layer's share of the once-per-pass embedding and RoPE table (or learned-position lookup and add); the op
  list does not itemise these, nor the norm's and activation's kind: the profiled kind of that width is taken;
* lm_head: the LM head linear plus the final norm, argmax and one CUDA-graph launch of the pass.

Shapes the profile never measured are scaled from the nearest measured one; points outside the measured axes fall
back to the roofline. Both are collected and returned by `take_notes`, which the estimate calls once per result.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from hwsim.gpuprofile.profile import GpuProfile, profile_for, roofline_s

if TYPE_CHECKING:
    from hwsim.hardware import HardwareSpec
    from hwsim.ops import Op

__all__ = ["ProfileHook"]


class ProfileHook:
    """Measured operator times of `hw` (its profile, or another device's transferred by spec sheets)."""

    def __init__(self, hw: HardwareSpec):
        self.hw = hw
        self._notes: dict[str, set[str]] = self._no_notes()

    @staticmethod
    def _no_notes() -> dict[str, set[str]]:
        return {"scaled": set(), "fallback": set(), "equivalent": set()}

    @cached_property
    def profile(self) -> GpuProfile:
        prof = profile_for(self.hw)
        assert prof is not None
        return prof

    @cached_property
    def source_hw(self) -> HardwareSpec | None:
        """The spec the profile was measured on, when it is not `hw` (spec-sheet transfer)."""
        if self.hw.profile_hardware is None or self.hw.profile_hardware == self.hw.name:
            return None
        from hwsim.hardware import get_hardware

        return get_hardware(self.hw.profile_hardware)

    # ---- one profile call ----------------------------------------------------------------------------------------
    def call(self, op: str, key: dict[str, Any], point: tuple[int, ...]) -> float | None:
        """Seconds of one call of profile operator `op`, transferred when the profile is another device's."""
        t, how = self.profile.lookup(op, key, point, self.hw)
        label = f"{op} " + ",".join(f"{k}={v}" for k, v in key.items())
        if t is None:
            self._notes["fallback"].add(f"{label} at {point}")
            return None
        if how == "scaled":
            self._notes["scaled"].add(label)
        src = self.source_hw
        if src is not None:
            t0 = min(float(self.profile.overhead["graph_tiny_kernel_s"]), t)
            t = t0 + (t - t0) * roofline_s(self.hw, op, key, point) / roofline_s(src, op, key, point)
        return t

    def _sum(self, parts: list[tuple[str, dict[str, Any], tuple[int, ...], float]]) -> float | None:
        total = 0.0
        for op, key, point, n in parts:
            t = self.call(op, key, point)
            if t is None:
                return None
            total += n * t
        return total

    # ---- hwsim.ops hook ------------------------------------------------------------------------------------------
    def op_time(self, op: Op) -> Any:
        """Seconds of one instance of `op` from the profile, or None (roofline)."""
        if op.kind == "linear":
            return self._linear(op)
        if op.kind == "attention":
            return self._attention(op)
        if op.kind == "softmax":  # fused into the attention kernel wherever attention is priced from the profile
            return 0.0 * np.asarray(op.flops) if self._attention_priced(op) else None
        if op.kind == "kv_append":
            if not self._fp16_kv(op):
                return None
            kv = {"kv_heads": op.kv_heads, "head_dim": op.head_dim}
            if op.phase == "decode":
                return self.call("kv_append", kv, (op.batch,))
            return self.call("kv_write", kv, (op.tokens,))
        if op.kind == "elementwise":
            return self._elementwise(op)
        return None

    @staticmethod
    def _fp16_kv(op: Op) -> bool:
        return op.kv_bits >= 16 and op.act_bits >= 16 and op.q_heads > 0 and op.head_dim > 0

    def _attention_priced(self, op: Op) -> bool:
        if op.q_heads <= 0 or op.head_dim <= 0:
            return False
        return op.phase == "decode" or self._fp16_kv(op)

    def _linear_key(self, k: int, n: int, bias: bool) -> dict[str, Any]:
        """The profiled table of this shape: with the op's bias if measured, else the shape without/with one."""
        for b in (bias, not bias):
            key = {"in": k, "out": n, "bias": b}
            if self.profile.table("linear", key) is not None:
                return key
        return {"in": k, "out": n, "bias": bias}

    def _linear(self, op: Op) -> float | None:
        if op.sparsity != "none" or op.density < 1.0:
            self._notes["fallback"].add(f"linear with {op.sparsity} weight sparsity (dense fp16 profiled)")
            return None
        fp16 = op.weight_bits >= 16 and op.act_bits >= 16  # the profiled kernel, whatever bytes the scheme counts
        t = (
            self.call("linear", self._linear_key(op.k, op.n, op.bias), (op.tokens,))
            if fp16
            else self._quantized_linear(op)
        )
        if t is None or op.name != "lm_head":
            return t
        edge = self._sum(
            [("norm", self._norm_key(op.k), (op.tokens,), 1.0), ("argmax", {"vocab": op.n}, (op.batch,), 1.0)]
        )
        return None if edge is None else t + edge + self.profile.graph_launch_s

    def _quantized_linear(self, op: Op) -> float | None:
        """A linear with quantized weights (and/or activations), which the fp16 profile did not measure, priced from
        what it did measure: bound by its weight bytes, it takes the measured fp16 GEMM over the same bytes (the
        same rows k, out features n x weight bytes / fp16 bytes: the achieved bandwidth and launch floor of a
        weight stream that size); bound by its arithmetic, its FLOPs at the profile's measured large-GEMM rate times
        the spec's ratio of this precision's peak to fp16's (int8 tensor cores at twice the fp16 rate; a W4A16
        kernel multiplies in fp16). The larger of the two; assumed: quantized kernels reach the fp16 kernels'
        efficiency (no dequantisation cost beyond that), which no measurement here has checked."""
        n_eq = max(1, round(op.weight_bytes / (2.0 * op.k)))
        t_bytes = self.call("linear", self._linear_key(op.k, n_eq, op.bias), (op.tokens,))
        if t_bytes is None:
            return None
        hw = self.hw
        rate16 = self.profile.gemm_flops_per_s or hw.peak_ops_per_s(16, 16) * hw.compute.matrix_efficiency
        if self.source_hw is not None:  # a transferred profile: the target's arithmetic by spec sheets
            rate16 *= hw.peak_ops_per_s(16, 16) / self.source_hw.peak_ops_per_s(16, 16)
        t_cmp = op.flops / (rate16 * hw.peak_ops_per_s(op.weight_bits, op.act_bits) / hw.peak_ops_per_s(16, 16))
        self._notes["equivalent"].add(f"linear at w{op.weight_bits}a{op.act_bits}")
        return max(t_bytes, t_cmp)

    def _attention(self, op: Op) -> Any:
        if not self._attention_priced(op):
            return None
        key = {"q_heads": op.q_heads, "kv_heads": op.kv_heads, "head_dim": op.head_dim}
        if op.phase == "prefill":
            prompt = max(1, round(op.tokens / max(op.batch, 1)))
            return self.call("prefill_attention", key, (op.batch, prompt))
        ctx = np.asarray(op.context, dtype=float)
        per_token = 4.0 * op.batch * op.kv_heads * op.head_dim  # fp16 K and V of one attended token, all sequences
        kv_bytes = np.broadcast_to(np.asarray(op.bytes, dtype=float), ctx.shape)
        if not (op.kv_bits >= 16 and np.allclose(kv_bytes, per_token * ctx, rtol=0.02)):
            # A compressed or sparse cache: decode attention is memory bound, so its kernel is priced as the measured
            # dense kernel over the same bytes (its launch floor included; decompression arithmetic hidden under
            # the reads, as in Mustafar's and KIVI's GPU kernels).
            ctx = kv_bytes / per_token
            self._notes["equivalent"].add(f"decode_attention at {op.kv_bits}-bit / sparse KV")
        out = np.empty(ctx.shape)
        for i, c in np.ndenumerate(ctx):
            t = self.call("decode_attention", key, (op.batch, max(1, int(round(c)))))
            if t is None:
                return None
            out[i] = t
        return out if out.shape else float(out)

    def _norm_key(self, width: int) -> dict[str, Any]:
        for kind in ("rms", "layer"):
            key = {"kind": kind, "width": width}
            if self.profile.table("norm", key) is not None:
                return key
        return {"kind": "rms", "width": width}

    def _elementwise(self, op: Op) -> float | None:
        from hwsim.ops import ELEMENTWISE_OPS_PER_FFN, ELEMENTWISE_OPS_PER_HIDDEN

        T, h = op.tokens, op.k
        ffn = round((op.flops / max(T, 1) - ELEMENTWISE_OPS_PER_HIDDEN * h) / ELEMENTWISE_OPS_PER_FFN)
        act = next(
            (t.key for t in self.profile.tables["activation"].values() if t.key["width"] == ffn),
            {"kind": "swiglu", "width": max(ffn, 1)},
        )
        parts = [
            ("norm", self._norm_key(h), (T,), 2.0),
            ("add", {"width": h}, (T,), 2.0),
            ("activation", act, (T,), 1.0),
            ("embed", {"width": h}, (T,), 1.0 / max(op.count, 1)),
        ]
        share = 1.0 / max(op.count, 1)
        if op.q_heads and op.head_dim:  # RoPE (hwsim.ops.elementwise_op sets the heads for RoPE models only)
            parts += [
                ("rope", {"heads": op.q_heads, "head_dim": op.head_dim}, (T,), 1.0),
                ("rope", {"heads": op.kv_heads, "head_dim": op.head_dim}, (T,), 1.0),
                ("rope_table", {"head_dim": op.head_dim}, (T,), share),
            ]
        else:  # learned positions: a second embedding lookup and its add, once per pass
            parts += [("embed", {"width": h}, (T,), share), ("add", {"width": h}, (T,), share)]
        return self._sum(parts)

    def take_notes(self) -> list[str]:
        """Notes on what left the profile since the last call (and forget them)."""
        out = []
        if self._notes["scaled"]:
            out.append(
                f"GPU profile {self.profile.source}: shapes not profiled, scaled from the nearest profiled "
                "shape by roofline ratio: " + "; ".join(sorted(self._notes["scaled"]))
            )
        if self._notes["equivalent"]:
            out.append(
                "GPU profile: compressed operators priced as the measured dense-fp16 kernel over the same bytes "
                "(floored by their arithmetic at the spec's precision ratio), assuming their kernels reach fp16 "
                "efficiency: " + "; ".join(sorted(self._notes["equivalent"]))
            )
        if self._notes["fallback"]:
            out.append(
                f"GPU profile: outside the measured range, roofline with {self.hw.name}'s efficiencies "
                "instead: "
                + "; ".join(sorted(self._notes["fallback"])[:12])
                + (" ..." if len(self._notes["fallback"]) > 12 else "")
            )
        if self.source_hw is not None:
            out.append(
                f"GPU profile measured on {self.source_hw.name} ({self.profile.device_name}), transferred "
                f"to {self.hw.name} by spec-sheet roofline ratios: unvalidated"
            )
        self._notes = self._no_notes()
        return out
