"""Functional mode: a compressed model's decode attention computed by the simulated attention engines.

`engine_attention(q, cache, ...)` takes one decode query (all query heads, real-valued, as the model's q_proj +
RoPE produce it) and the layer's KV4 cache in the project's format (`quant.formats.kv.QuantKV`: K per channel over
64-token groups, V per token over 64-channel groups, int4 codes + fp16 scales), quantizes the query to int8 with
one scale per token (A8, as `CompressionScheme.act_bits = 8`), lets the sequencer's host side
(`engine.host.prepare_head`: Λ selection, scale folding) build each head's integer inputs, and runs every
head through `EngineModel` in functional mode. Query head h reads KV head ``h // (H / Hkv)`` (GQA).

The result carries the engine's int16 outputs (bit-exact with `engine.datapath.run_engine`, which a test checks
on SmolLM2's real K/V), their real values, and the cycles of each head on the engine. The engine takes int4 KV
only: tokens of the dense fp16 recent window are out of scope here (give a cache whose tokens are all compressed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from base.errors import SpecError
from engine.host import prepare_head
from engine.params import TILE
from hwsim.cyclesim.attention_engine import EngineModel, head_work

__all__ = ["EngineAttention", "engine_attention", "quantize_query"]


@dataclass(frozen=True)
class EngineAttention:
    """o_int: int64 [H, D] engine outputs (int16 values); out: float64 [H, D] real outputs; cycles: [H] per head
    (stall-free, engine/cycles.py convention); heads: the EngineHead inputs (for comparison with the golden model)."""

    o_int: np.ndarray
    out: np.ndarray
    cycles: tuple[int, ...]
    heads: tuple


def quantize_query(q: np.ndarray) -> tuple[np.ndarray, float]:
    """Symmetric int8 of one token's query (all heads) with one scale: (int8 [H, D], scale)."""
    q = np.asarray(q, dtype=np.float64)
    amax = float(np.abs(q).max())
    scale = amax / 127.0 if amax > 0 else 1.0
    return np.clip(np.rint(q / scale), -127, 127).astype(np.int64), scale


def engine_attention(q: np.ndarray, cache, *, lanes: int, sink: int = 0, window: int | None = None) -> EngineAttention:
    """Decode attention of one token. q: float [H, D]; cache: QuantKV with every token compressed."""
    q = np.asarray(q)
    H, D = q.shape
    if cache.head_dim != D or H % cache.num_heads:
        raise SpecError(
            f"query of {H} heads x {D} does not fit a KV cache of {cache.num_heads} heads x "
            f"{cache.head_dim}; the cache must come from the same layer"
        )
    if cache.n_compressed != cache.n_tokens:
        raise SpecError(
            f"the attention engine takes int4 KV only; {cache.n_tokens - cache.n_compressed} tokens "
            "of this cache are in the fp16 recent window. Compress all tokens (n_compressed=n_tokens)"
        )
    if cache.bits != 4:
        raise SpecError(f"the attention engine takes int4 KV, got {cache.bits}-bit")
    if cache.group_size % TILE:
        raise SpecError(
            f"the engine folds scales per {TILE}-token block; KV group_size {cache.group_size} must "
            f"be a multiple of {TILE}"
        )
    qi, qs = quantize_query(q)
    kc = cache.k_codes()  # [Hkv, C, D, 64]
    vc = cache.v_codes()  # [Hkv, C, 64, D]
    hkv, C = kc.shape[0], kc.shape[1]
    T = C * kc.shape[3]  # tokens per chunk
    k_int = kc.transpose(0, 1, 3, 2).reshape(hkv, T, D)
    v_int = vc.reshape(hkv, T, D)
    k_scale = np.asarray(cache.ks, dtype=np.float64)[..., 0]  # [Hkv, C, D]: one group of TILE tokens per chunk
    v_scale = np.asarray(cache.vs, dtype=np.float64).reshape(hkv, T, -1)  # [Hkv, T, D/group]
    eng = EngineModel(D, lanes)
    rep = H // hkv
    outs, reals, cycles, heads = [], [], [], []
    for h in range(H):
        kv = h // rep
        head = prepare_head(
            qi[h], qs, k_int[kv], k_scale[kv], v_int[kv], v_scale[kv], sink=sink, window=window, k_group_size=TILE
        )
        run = eng.run(head_work(head), engine_head=head, functional=True)
        outs.append(run.output)
        reals.append(run.output.astype(np.float64) * head.out_scale)
        cycles.append(run.cycles)
        heads.append(head)
    return EngineAttention(np.stack(outs), np.stack(reals), tuple(cycles), tuple(heads))
