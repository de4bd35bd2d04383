"""W(2)A8 linear kernels on packed formats: integer accumulation per weight group, then dequantization.

y[n, o] = s_x[n] * sum_g s_w[o, g] * acc[n, o, g]
acc[n, o, g] = sum_{i in group g, kept} x_q[n, i] * (w_q[o, i] - z[o, g])

x_q are int8 per-token activation codes (Int8Activation), w_q the unsigned weight codes with zero point z and fp16
scale s_w per group of `group_size` input columns (GroupQuantWeight, or the kept half of Sparse24Weight).
`acc` is an exact integer (int64). The integer dot products are evaluated with float64 BLAS / bincount on integer
operands: every product and partial sum is an integer below 127 * 255 * in_features < 2**53, so float64 represents
each exactly and the result equals int64 accumulation bit for bit (tests compare against an int64 path).
"""

from __future__ import annotations

import numpy as np

from base.errors import SpecError
from quant.formats.activations import Int8Activation
from quant.formats.weights import GroupQuantWeight, Sparse24Weight

__all__ = ["w_a8_gemm", "w_a8_gemv", "group_accumulate", "reference_linear"]


def _as_act(x: np.ndarray | Int8Activation) -> Int8Activation:
    return x if isinstance(x, Int8Activation) else Int8Activation.from_float(np.asarray(x))


def _check(xa: Int8Activation, w: GroupQuantWeight | Sparse24Weight) -> None:
    if not isinstance(w, (GroupQuantWeight, Sparse24Weight)):
        raise SpecError(f"w_a8 kernels take GroupQuantWeight or Sparse24Weight, got {type(w).__name__}")
    if w.bits == 16:
        raise SpecError("w_a8 kernels need integer weights (bits < 16); fp16 2:4 weights have no integer path")
    if xa.width != w.in_features:
        raise SpecError(f"activation width {xa.width} does not match the weight's in_features {w.in_features}")


def group_accumulate(xa: Int8Activation, w: GroupQuantWeight | Sparse24Weight) -> np.ndarray:
    """Exact integer accumulators acc[n, o, g] (int64), zero points applied."""
    _check(xa, w)
    xq = xa.values.astype(np.float64)  # [N, in] integers
    n, cols, gs = xa.n_tokens, w.in_features, w.group_size
    g = w.n_groups
    z = w.zeros().astype(np.int64)  # [out, G]
    if isinstance(w, GroupQuantWeight):
        pad = g * gs - cols
        xg = np.pad(xq, ((0, 0), (0, pad))).reshape(n, g, gs).transpose(1, 0, 2)  # [G, N, gs]
        wg = np.pad(w.codes().astype(np.float64), ((0, 0), (0, pad))).reshape(w.out_features, g, gs)
        dot = np.rint(xg @ wg.transpose(1, 2, 0)).astype(np.int64)  # [G, N, out], exact (see module doc)
        xsum = np.rint(xg.sum(axis=2)).astype(np.int64)  # [G, N]
        acc = dot - z.T[:, None, :] * xsum[:, :, None]  # [G, N, out]
        return acc.transpose(1, 2, 0)
    # 2:4: only the kept half of the columns is touched: gather x at each kept value's dense column
    colk = w.kept_columns()  # [out, K]
    grp = colk // gs  # [out, K]
    wz = w.kept_codes().astype(np.int64) - np.take_along_axis(z, grp, axis=1)  # [out, K]
    prod = xq[:, colk] * wz.astype(np.float64)  # [N, out, K]
    flat = (np.arange(w.out_features)[:, None] * g + grp).reshape(-1)  # bin (o, g)
    bins = (np.arange(n)[:, None] * (w.out_features * g) + flat[None, :]).reshape(-1)
    acc = np.bincount(bins, weights=prod.reshape(-1), minlength=n * w.out_features * g)
    return np.rint(acc).astype(np.int64).reshape(n, w.out_features, g)


def w_a8_gemm(x: np.ndarray | Int8Activation, w: GroupQuantWeight | Sparse24Weight) -> np.ndarray:
    """Y[n, out] (float64) = X[n, in] @ W^T with X quantized to int8 per token (if given as floats) and W packed
    (dense group-quantized or 2:4). Integer accumulation per group, then dequantization with the fp16 scales."""
    xa = _as_act(x)
    acc = group_accumulate(xa, w).astype(np.float64)  # [N, out, G], exact integers
    y = (acc * w.scales.astype(np.float64)[None]).sum(axis=2)
    return y * xa.scales.astype(np.float64)[:, None]


def w_a8_gemv(x: np.ndarray, w: GroupQuantWeight | Sparse24Weight) -> np.ndarray:
    """y[out] = W @ x for one token x[in] (see `w_a8_gemm`)."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise SpecError(f"w_a8_gemv takes one token x[in_features], got shape {x.shape}; use w_a8_gemm")
    return w_a8_gemm(x[None, :], w)[0]


def reference_linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Plain float64 Y = X @ W^T (for tests: feed it the dequantized operands)."""
    return np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
