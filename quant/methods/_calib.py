"""Running calibration windows through a model block by block, with statistics of linear-layer inputs."""

from __future__ import annotations

from collections.abc import Callable

import torch

from base.errors import SpecError

__all__ = ["require_calibration", "block_inputs", "InputStats", "run_block", "collect"]

_SAME_INPUT = {"k_proj": ("q_proj",), "v_proj": ("q_proj", "k_proj"), "up_proj": ("gate_proj",)}


def require_calibration(calibration, method: str):
    if calibration is None or not calibration.windows:
        raise SpecError(f"{method} needs calibration text: pass calibration=Calibration.wiki_leads(tokenizer, ...)")
    lens = {len(w) for w in calibration.windows}
    if len(lens) != 1:
        raise SpecError("calibration windows must all have the same length")
    return torch.tensor(calibration.windows, dtype=torch.long)


class InputStats:
    """Accumulates H = sum_t x_t x_t^T / n (and hence the per-channel sum of squares) of a layer's inputs."""

    def __init__(self, n_in: int) -> None:
        self.n_in = n_in
        self.h: torch.Tensor | None = None
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        x2 = x.reshape(-1, x.shape[-1]).float()
        if self.h is None:
            self.h = torch.zeros(self.n_in, self.n_in, dtype=torch.float64, device=x2.device)
        self.h += (x2.T @ x2).double()  # fp32 product per batch, fp64 accumulation
        self.n += x2.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        """Mean outer product [in, in] (fp32)."""
        return (self.h / max(1, self.n)).float()

    @property
    def col_norm(self) -> torch.Tensor:
        """||X_j||_2 over all tokens, per input channel [in] (Wanda's activation norm)."""
        return torch.diagonal(self.h).sqrt().float()


def run_block(blk, x: torch.Tensor, cos, sin, batch: int) -> torch.Tensor:
    """blk applied to x [N, T, C] in batches of `batch` windows."""
    return torch.cat([blk(x[i : i + batch], cos, sin) for i in range(0, x.shape[0], batch)])


def block_inputs(model, ids: torch.Tensor):
    """(hidden states entering block 0 [N, T, C], cos, sin)."""
    x = model.embed_tokens(ids)
    cos, sin = model.rope(ids.shape[1], ids.device, x.dtype)
    return x, cos, sin


def collect(blk, names: list[str], x: torch.Tensor, cos, sin, batch: int) -> dict[str, InputStats]:
    """Input statistics of the block's projections `names` on x; projections sharing an input share one object."""
    lins = blk.linears()
    stats: dict[str, InputStats] = {}
    hooks = []

    def make_hook(st: InputStats) -> Callable:
        def hook(mod, inp):
            st.add(inp[0])

        return hook

    for n in names:
        alias = next((a for a in _SAME_INPUT.get(n, ()) if a in stats), None)
        if alias is not None:  # q/k/v (and gate/up) see the same input: share one statistics object
            stats[n] = stats[alias]
            continue
        st = InputStats(lins[n].weight.shape[1])
        stats[n] = st
        hooks.append(lins[n].register_forward_pre_hook(make_hook(st)))
    try:
        with torch.no_grad():
            run_block(blk, x, cos, sin, batch)
    finally:
        for h in hooks:
            h.remove()
    return stats
