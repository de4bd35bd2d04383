"""Packed formats: the byte-exact layouts shared by the reference kernels, the fixed-point golden model and the RTL.

Every packed object is a frozen dataclass holding numpy arrays, with

* ``from_float(...)`` (quantize / prune) and ``dequantize()`` (float64, what kernels must compute with);
* ``to_bytes()`` / ``from_bytes(buf, meta)``: the byte layout below; ``len(to_bytes())`` equals the byte cost that
  quant.scheme.CompressionScheme computes for the same configuration (tested);
* ``to_arrays()`` -> (flat uint8 arrays by name, JSON-able meta) / ``from_arrays(arrays, meta)`` for safetensors;
  a tiled section ``x`` is stored as ``x.bitmaps`` + ``x.values``. Loading validates dtype, sizes, bitmap popcounts
  against value counts, and raises base.errors.FormatError naming the problem.

Conventions (TEAM.md "Bit-level layouts"):

* Bit packing is LSB-first: value i of a packed run occupies bits [i*b, (i+1)*b) of the little-endian bit
  stream, last byte zero-padded. So int4: element 2j in the low nibble of byte j, 2j+1 in the high nibble;
  int2: element 4j+i at bits [2i, 2i+1] of byte j. 16-bit values are little-endian fp16 bit patterns.
* Signed ints (KV) are two's complement at width b (int4 nibbles -8..7; symmetric quantization only produces
  -(2**(b-1)-1)..2**(b-1)-1). Weights are unsigned 0..2**b-1 with a zero point stored at width b.
* Scales are little-endian fp16. Multi-section objects store their sections back to back in the order listed.
* Bitmap tile: 64 elements; 8-byte little-endian uint64 bitmap, bit i set <=> element i kept; then the kept values
  in increasing element index, packed at the value width, padded to a whole byte. A stream of tiles is
  bitmap0 values0 bitmap1 values1 ... (tile lengths vary with the popcounts). Bits past the end of a partial tile
  (the last tile of a row / of a head_dim not divisible by 64) are clear.

Layouts (section order; shapes are row-major):

``GroupQuantWeight`` (W2/W3/W4/W8, asymmetric, groups of ``group_size`` input columns, G = ceil(in/group_size)):
    qweight [out][packed_bytes(in, b)] | scales fp16 [out][G] | qzeros [out][packed_bytes(G, b)]
    (each output row packed separately and byte-padded). w = (code - zero) * scale.
``Sparse24Weight`` (2:4; K = in/2 kept values per row, kept in increasing column order, two per block of 4):
    qvalues [out][packed_bytes(K, b)] | indices [out][packed_bytes(in/4, 3)] (per block of 4 a pattern code 0..5:
    the kept positions (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)) |
    scales fp16 [out][G] | qzeros [out][packed_bytes(G, b)]; b = 16 means fp16 values and no scales/zeros.
``BitmapSparseWeight`` (unstructured): tiles of 64 input columns, row-major [out][ceil(in/64)] tile stream |
    scales | qzeros (scales/zero points from the kept values only).
``Int8Activation``: values int8 [n_tokens][width] | scales fp16 [n_tokens]; x = code * scale (symmetric).
KV caches of one layer, K/V [H kv heads, T tokens, D head_dim]; the oldest n_compressed = 64*C tokens are compressed
in chunks of 64 tokens, the newest T - 64*C tokens stay dense (k_recent, v_recent fp16 [H][T-64C][D], last):
``DenseKV``: k fp16 [H][T][D] | v fp16 [H][T][D].
``QuantKV`` (symmetric int b in 2/4/8): kq [H][C][packed_bytes(64*D, b)] (K chunk channel-major: element
    (channel c, token t) at c*64 + t) | ks fp16 [H][C][D][ceil(64/group)] (per channel per token group) |
    vq [H][C][packed_bytes(64*D, b)] (V chunk token-major: (t, c) at t*D + c) | vs fp16 [H][C][64][ceil(D/group)]
    (per token per channel group) | k_recent | v_recent.
``BitmapKV`` (Mustafar; per-token top-`kept` magnitude pruning of each head's K and V vectors; values fp16 or
    int b, quantized after pruning with QuantKV's scales): K tile stream [H][C][D] (tile = the 64 tokens of a chunk
    in one channel) | ks | V tile stream [H][C][64][ceil(D/64)] (tile = 64 channels of one token) | vs |
    k_recent | v_recent. ks/vs are empty for fp16 values.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

from base.errors import FormatError
from quant.formats._base import Packed
from quant.formats.activations import Int8Activation
from quant.formats.kv import BitmapKV, DenseKV, KVCache, QuantKV, compress_kv
from quant.formats.weights import BitmapSparseWeight, GroupQuantWeight, Sparse24Weight, prune_2_4

__all__ = [
    "GroupQuantWeight",
    "Sparse24Weight",
    "BitmapSparseWeight",
    "prune_2_4",
    "Int8Activation",
    "KVCache",
    "DenseKV",
    "QuantKV",
    "BitmapKV",
    "compress_kv",
    "Packed",
    "FORMATS",
    "packed_from_arrays",
]

FORMATS: dict[str, type[Packed]] = {
    c.FORMAT: c
    for c in (GroupQuantWeight, Sparse24Weight, BitmapSparseWeight, Int8Activation, DenseKV, QuantKV, BitmapKV)
}


def packed_from_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Packed:
    """Rebuild any packed object from `to_arrays()` output, choosing the class by ``meta["format"]``."""
    fmt = meta.get("format") if isinstance(meta, Mapping) else None
    if fmt not in FORMATS:
        raise FormatError(f"unknown packed format {fmt!r}; known: {', '.join(sorted(FORMATS))}")
    return FORMATS[fmt].from_arrays(arrays, meta)
