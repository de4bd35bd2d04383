"""Quantization primitives shared by the methods: group-wise asymmetric weight quantization, per-token int8
activations, symmetric int KV quantization, and the `QuantLinear` module that replaces a model's projections.

Conventions (TEAM.md, quant/scheme.py): weights are unsigned ints 0..2^b-1 with an fp16 scale and an integer zero
point per group of `group_size` consecutive input columns; w ≈ (q - z) * s. Scales are rounded to fp16 *before*
codes are chosen, so the fake-quantized weight equals exactly what a kernel dequantizing the stored fp16 scale
computes.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "weight_qparams",
    "quantize_codes",
    "dequantize_codes",
    "fake_quant_weight",
    "quant_act_int8",
    "quant_sym_int",
    "QuantLinear",
]


def weight_qparams(
    w: torch.Tensor, bits: int, *, clip_search: bool = True, grid: int = 20, min_shrink: float = 0.5, norm: float = 2.4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric scale and zero point of each row of w [rows, n] (one group per row).

    With clip_search the range [min, max] is shrunk by factors 1, ..., min_shrink and the factor with the smallest
    sum |w - deq(q(w))|^norm is kept per row (GPTQ's `mse` grid; norm 2.4 as in its reference code).
    Returns scale [rows] (fp32 holding fp16-representable values, > 0) and zero [rows] (integer-valued fp32).
    """
    qmax = 2**bits - 1
    wmin = w.min(dim=1).values.clamp(max=0)
    wmax = w.max(dim=1).values.clamp(min=0)
    best_s = best_z = None
    best_err = None
    shrinks = [1.0 - i * (1.0 - min_shrink) / grid for i in range(grid + 1)] if clip_search else [1.0]
    for p in shrinks:
        lo, hi = wmin * p, wmax * p
        s = ((hi - lo) / qmax).clamp(min=1e-8).half().float().clamp(min=2**-24)
        z = torch.round(-lo / s).clamp(0, qmax)
        q = torch.clamp(torch.round(w / s[:, None]) + z[:, None], 0, qmax)
        err = ((q - z[:, None]) * s[:, None] - w).abs().pow(norm).sum(1)
        if best_err is None:
            best_err, best_s, best_z = err, s, z
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_s = torch.where(better, s, best_s)
            best_z = torch.where(better, z, best_z)
    return best_s, best_z


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes 0..2^b-1 of w [rows, n] with per-row scale/zero [rows] (fp32 tensor of integers)."""
    return torch.clamp(torch.round(w / scale[:, None]) + zero[:, None], 0, 2**bits - 1)


def dequantize_codes(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (q - zero[:, None]) * scale[:, None]


def fake_quant_weight(
    w: torch.Tensor, bits: int, group_size: int, *, clip_search: bool = True, keep: torch.Tensor | None = None
):
    """Round-to-nearest group-wise quantization of W [out, in].

    Returns (dequantized W, codes uint8 [out, in], scale fp16 [out, G], zero uint8 [out, G]). `keep` (bool
    [out, in]) marks weights that survive pruning; pruned ones are zero in the dequantized weight (and their codes
    are don't-cares, set to the zero point). Group params are computed over all of a group's weights.
    """
    out_f, in_f = w.shape
    n_groups = -(-in_f // group_size)
    dev = w.device
    deq = torch.empty_like(w)
    codes = torch.empty(out_f, in_f, dtype=torch.uint8, device=dev)
    scales = torch.empty(out_f, n_groups, dtype=torch.float16, device=dev)
    zeros = torch.empty(out_f, n_groups, dtype=torch.uint8, device=dev)
    for g in range(n_groups):
        sl = slice(g * group_size, min(in_f, (g + 1) * group_size))
        wg = w[:, sl].float()
        kg = None if keep is None else keep[:, sl].to(dev)
        src = wg if kg is None else torch.where(kg, wg, torch.zeros_like(wg))
        s, z = weight_qparams(src, bits, clip_search=clip_search)
        q = quantize_codes(wg, s, z, bits)
        if kg is not None:
            q = torch.where(kg, q, z[:, None].expand_as(q))
        deq[:, sl] = dequantize_codes(q, s, z).to(w.dtype)
        codes[:, sl] = q.to(torch.uint8)
        scales[:, g] = s.half()
        zeros[:, g] = z.to(torch.uint8)
    return deq, codes.cpu(), scales.cpu(), zeros.cpu()


def quant_act_int8(x: torch.Tensor) -> torch.Tensor:
    """Per-token symmetric int8 fake quantization of x [..., C]: scale = max|x| / 127 stored fp16, q in -127..127."""
    s = (x.abs().amax(dim=-1, keepdim=True) / 127.0).half().float()
    s = torch.where(s == 0, torch.ones_like(s), s)  # all-zero token: scale 1.0, as quant.formats.Int8Activation
    return torch.clamp(torch.round(x / s), -127, 127) * s


def quant_sym_int(x: torch.Tensor, bits: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric signed quantization of x along `dim` (one scale per slice reduced over `dim`).

    scale = max|x| / (2^(b-1) - 1) stored fp16; q in -(2^(b-1)-1)..2^(b-1)-1 (the most negative code is unused).
    Returns (dequantized x, int8 codes, fp16 scales with `dim` kept as size 1).
    """
    qmax = 2 ** (bits - 1) - 1
    s = (x.abs().amax(dim=dim, keepdim=True) / qmax).half()
    s = torch.where(s == 0, torch.ones_like(s), s)  # all-zero group: scale 1.0, as quant.formats.kv
    q = torch.clamp(torch.round(x / s.float()), -qmax, qmax)
    return q * s.float(), q.to(torch.int8), s


class QuantLinear(nn.Module):
    """A linear layer y = A(x) @ Wq^T with a compressed weight and optionally int8 per-token input activations.

    `weight` is the dequantized (fake-quantized, pruned) weight used by the torch forward; `codes`, `scales`,
    `zeros`, `keep` are the integer state from which the packed formats are built (None where not applicable:
    bits == 16 means the weight is kept as fp16 values, keep None means dense).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        *,
        bits: int = 16,
        group_size: int = 0,
        codes: torch.Tensor | None = None,
        scales: torch.Tensor | None = None,
        zeros: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        pruning: str = "none",
        act_bits: int = 16,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bits, self.group_size, self.pruning, self.act_bits = bits, group_size, pruning, act_bits
        self.codes, self.scales, self.zeros, self.keep = codes, scales, zeros, keep

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @classmethod
    def wrap(cls, lin: nn.Module) -> QuantLinear:
        """A QuantLinear around an existing layer (returned unchanged if it already is one)."""
        if isinstance(lin, QuantLinear):
            return lin
        return cls(lin.weight.data)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits == 8:
            x = quant_act_int8(x)
        return torch.nn.functional.linear(x, self.weight)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, bits={self.bits}, g={self.group_size}, "
            f"pruning={self.pruning}, act_bits={self.act_bits}"
        )
