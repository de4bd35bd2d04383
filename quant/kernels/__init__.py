"""CPU reference kernels on the packed formats of quant.formats (vectorized numpy / torch CPU), each with a plain
float64 reference implementation for tests.

* `w_a8_gemm` / `w_a8_gemv`: W(2..8)A8 linear, dense group-quantized or 2:4, integer accumulation then dequantize.
* `decode_attention(q, cache, scheme)`: one decode step over a DenseKV / QuantKV / BitmapKV cache, Λ mask, GQA;
  `window_attention(q, k, v, scheme)`: the same for every token of a sequence at once (the evaluation path).
"""

from quant.kernels.attention import (
    attended_mask,
    decode_attention,
    plan_bytes,
    reference_decode_attention,
    window_attention,
)
from quant.kernels.gemm import group_accumulate, reference_linear, w_a8_gemm, w_a8_gemv

__all__ = [
    "decode_attention",
    "window_attention",
    "reference_decode_attention",
    "attended_mask",
    "plan_bytes",
    "w_a8_gemm",
    "w_a8_gemv",
    "group_accumulate",
    "reference_linear",
]
