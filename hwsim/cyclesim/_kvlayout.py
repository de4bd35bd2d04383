"""KV-cache layout as the attention engines read it: blocks of 64 tokens at absolute positions (the K tile grid).

A block's bytes come from the scheme (`CompressionScheme.kv_token_bytes_per_head`: the compressed format's
per-token average -- exact for dense KV4 with group 64, where the K and V halves of a chunk are equal -- and fp16
for the dense recent window). Tokens of the dense recent window enter the engine as a dense block (quantized on the
fly by the sequencer; stated modelling choice, the RTL takes int4 only). Sparse (bitmap) KV: per-tile value counts
are the nominal ones of per-token magnitude pruning (K tile: kept fraction of the 64 tokens of the tile, masked
tokens' kept values included; V tile: the token's kept values spread evenly over its D/64 tiles), or measured per
layer from an artifact's profile. Λ attention selects the sink and window segments; a block shared by both is one
block.
"""

from __future__ import annotations

import math

from engine.params import TILE
from models.spec import ModelSpec
from quant.scheme import CompressionScheme, kept_per_token

__all__ = ["KVLayout"]


class KVLayout:
    """The engine blocks of one head at each context, memoised (a pure function of the context and sparsity)."""

    def __init__(self, model: ModelSpec, scheme: CompressionScheme) -> None:
        self.model, self.s = model, scheme
        self._cache: dict[tuple[int, float], tuple[tuple[int, int, int, int], ...]] = {}

    def blocks(self, context: int, sparsity: float) -> tuple[tuple[int, int, int, int], ...]:
        """(selected tokens, values per K tile, values per V tile, bytes per KV head) of each block sent, in order,
        at `context` tokens (the new token included)."""
        key = (context, sparsity)
        got = self._cache.get(key)
        if got is None:
            got = self._cache[key] = self._blocks(context, sparsity)
        return got

    def _blocks(self, context: int, sparsity: float) -> tuple[tuple[int, int, int, int], ...]:
        s, D = self.s, self.model.head_dim
        G = D // TILE
        sink, window = s.attn_sink, s.attn_window
        stored = s.kv_stored_tokens(self.model, context)
        _, dense = s.kv_split(stored)
        if window is None and self.model.sliding_window is None:
            segments = [(0, context)]
        else:
            w = stored if window is None else min(window, stored)
            lo = context - w
            sk = min(sink, lo) if window is not None else 0
            segments = [(0, sk), (lo, context)] if sk else [(lo, context)]
        fp16_from = context - dense  # the newest `dense` tokens are fp16
        kept = kept_per_token(D, sparsity)
        ls = s if sparsity == s.kv_sparsity else s.replace(kv_sparsity=sparsity)  # measured per-layer sparsity
        half = ls.kv_token_bytes_per_head(D, compressed=True) / 2 if ls.kv_compressed else 0.0
        dense_token = ls.kv_token_bytes_per_head(D, compressed=False)
        blocks: list[tuple[int, int, int, int, int]] = []
        for a, e in segments:
            for b0 in range(a // TILE * TILE, e, TILE):
                b1 = min(b0 + TILE, context)
                n_sel = min(b1, e) - max(b0, a)
                if blocks and blocks[-1][4] == b0:  # a block shared by the sink and window segments
                    prev = blocks.pop()
                    n_sel += prev[0]
                n_fp16 = max(0, min(b1, e) - max(b0, fp16_from, a))
                n_comp = n_sel - n_fp16
                if sparsity > 0 and n_fp16 == 0:
                    kv, vv, k_part = round((b1 - b0) * kept / D), round(kept / G), b1 - b0
                else:
                    kv, vv, k_part = n_sel, TILE, n_comp
                nbytes = math.ceil(half * (k_part + n_comp) + n_fp16 * dense_token)
                blocks.append((n_sel, kv, vv, nbytes, b0))
        return tuple(b[:4] for b in blocks)
