"""A lean evaluation of the analytical model for exploration: the same operators priced by the same function.

`hwsim.estimate(..., fidelity="analytical")` returns a full `Estimate` (per-class tallies, breakdown by mechanism,
notes) that exploration does not read; most of its time goes there. `lean_times` composes the same operator list of
hwsim/ops.py, priced by the same `op_time`, in the order hwsim/analytical.py does, and returns only the time to the
first token and the decode total. It is trusted only where it agrees with `estimate`: `LeanEvaluator` checks it
against a full estimate on the first point of every (model, scheme, workload) group it sees, and evaluates that
whole group through `estimate` if the two differ by more than `TOLERANCE` (or if hwsim's composition is not the one
this module knows), so a change of the analytical model can slow exploration down but never change its numbers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["lean_ops", "lean_times", "LeanEvaluator", "TOLERANCE"]

TOLERANCE = 1e-9  # relative; the two paths add the same terms in a different order


def lean_ops(model: Any, hw: Any, s: Any, w: Any, profile: Any = None) -> tuple[list, list, list, Any]:
    """(prefill ops, decode fixed ops, decode attention ops, decode weights) by hwsim/analytical.py's composition.
    The builders take `hw` but do not read it (it keys their memo); `LeanEvaluator` checks that on every job."""
    import numpy as np

    from hwsim.analytical import _kv_layer_schemes, _prefill_attended_sum
    from hwsim.estimate import decode_samples
    from hwsim.ops import attention_ops, elementwise_op, head_op, host_op, linear_ops

    B, P, G, L = w.batch, w.prompt_len, w.gen_len, model.num_layers
    kv_groups = _kv_layer_schemes(model, s, profile)
    cap = s.kv_attended_cap(model)
    n = B * P
    attended_sum = _prefill_attended_sum(cap, P)
    pre_ops = linear_ops(model, hw, s, n, "prefill", profile, B) + [
        elementwise_op(model, n, "prefill", B),
        head_op(model, hw, s, B, "prefill", profile, B),
    ]
    for ks, count in kv_groups.items():
        kv_layer = B * ks.kv_bytes_for_tokens(model, ks.kv_stored_tokens(model, P)) / L
        pre_ops += attention_ops(model, s, "prefill", B, attended_sum / P, attended_sum, kv_layer, kv_layer, count, n)
    contexts, weights = decode_samples(P, G)
    fixed_ops = linear_ops(model, hw, s, B, "decode", profile, B) + [
        elementwise_op(model, B, "decode", B),
        head_op(model, hw, s, B, "decode", profile, B),
    ]
    host = host_op(hw)
    if host is not None:
        fixed_ops.append(host)
    attended = np.minimum(contexts, cap)
    att_ops = []
    for ks, count in kv_groups.items():
        kv_read = B * ks.kv_bytes_for_tokens_array(model, attended) / L
        att_ops += attention_ops(
            model, s, "decode", B, attended, attended, kv_read, B * s.kv_append_bytes(model), count, B
        )
    return pre_ops, fixed_ops, att_ops, weights


def lean_times(ops: tuple[list, list, list, Any], hw: Any) -> tuple[float, float]:
    """(ttft_s, decode_total_s) of `ops` (from `lean_ops`) priced on `hw` with hwsim.ops.op_time."""
    import numpy as np

    from hwsim.ops import op_time

    pre_ops, fixed_ops, att_ops, weights = ops
    ttft = sum(float(op_time(op, hw).seconds * op.count) for op in pre_ops)
    fixed_t = sum(float(op_time(op, hw).seconds * op.count) for op in fixed_ops)
    steps = fixed_t
    for op in att_ops:
        steps = steps + op_time(op, hw).seconds * op.count
    total = float(np.sum(steps)) if weights is None else float(np.dot(steps, weights))
    return ttft, total


class LeanEvaluator:
    """Per process: the operator lists of each (space, model, scheme, workload) group, whether the lean path is
    trusted for it, and the group's hardware-independent figures (memory) from a checking estimate.

    `begin_job()` marks a new job: the first two points of every group in each job are evaluated both ways, so every
    job checks the lean path on points whose hardware differs from the one the group's operators were built with."""

    CHECKS_PER_JOB = 2

    def __init__(self) -> None:
        self.groups: dict[tuple, dict] = {}
        self.checked: dict[tuple, int] = {}

    def begin_job(self) -> None:
        self.checked.clear()

    def times(self, key: tuple, model: Any, hw: Any, s: Any, w: Any, profile: Any) -> tuple[Any, float, float, dict]:
        """(estimate or None, ttft_s, decode_total_s, memory figures) of one point."""
        from hwsim.estimate import estimate

        g = self.groups.get(key)
        if g is not None and not g["ok"]:
            est = estimate(model, hw, s, w, profile=profile)
            return est, est.ttft_s, est.decode_total_s, {}
        if g is not None and self.checked.get(key, 0) >= self.CHECKS_PER_JOB:
            ttft, total = lean_times(g["ops"], hw)
            return None, ttft, total, g["figures"]
        est = estimate(model, hw, s, w, profile=profile)
        self.checked[key] = self.checked.get(key, 0) + 1
        try:
            ops = g["ops"] if g is not None else lean_ops(model, hw, s, w, profile)
            ttft, total = lean_times(ops, hw)
            ok = abs(ttft - est.ttft_s) <= TOLERANCE * abs(est.ttft_s) and abs(
                total - est.decode_total_s
            ) <= TOLERANCE * abs(est.decode_total_s)
        except (ImportError, AttributeError, TypeError, ValueError):  # hwsim's composition changed
            ops, ok = None, False
        if len(self.groups) > 1024:
            self.groups.clear()
        self.groups[key] = {
            "ok": ok,
            "ops": ops,
            "figures": {
                "weight_bytes": est.weight_bytes,
                "kv_bytes_final": est.kv_bytes_final,
                "activation_bytes_peak": est.activation_bytes_peak,
            },
        }
        return est, est.ttft_s, est.decode_total_s, {}
