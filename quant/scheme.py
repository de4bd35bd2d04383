"""CompressionScheme: how a model is compressed, and THE one place where every format's byte cost is computed.

Formats (bit-level layouts are documented in quant/formats; sizes here and there agree by test):

* weights, ``weight_bits`` < 16: asymmetric unsigned integers, group-wise along the input dimension
  (``weight_group_size`` dense input columns share one fp16 scale and one zero point stored at the weight width).
  Each output row is packed separately and padded to a whole byte (values, zero points and 2:4 indices alike).
* 2:4 pruning: per 4 dense columns 2 values are kept, each with a 2-bit position index.
* unstructured pruning: rows are cut into tiles of 64 dense columns; each tile is a 64-bit bitmap followed by its
  kept values, padded to a whole byte.
* activations, ``act_bits`` = 8: symmetric int8 per token, one fp16 scale per token.
* KV cache, ``kv_bits`` < 16: symmetric signed integers with fp16 scales; K grouped per channel over
  ``kv_group_size`` consecutive tokens, V grouped per token over ``kv_group_size`` consecutive channels (KIVI).
* KV bitmap sparsity (Mustafar): per token, each head's K vector and V vector keep their
  ``head_dim - round(kv_sparsity * head_dim)`` largest-magnitude elements. K tiles are 64 tokens of one channel,
  V tiles 64 channels of one token; a tile is a 64-bit bitmap plus its kept values (fp16 or int) padded to a byte.
* Tokens are compressed in chunks of 64 (one K group / K tile); the newest ``kv_dense_recent`` tokens plus the
  not-yet-full chunk stay dense fp16 (KIVI's residual, Mustafar's dense recent window). A K group never spans two
  chunks, so ``kv_group_size`` > 64 acts as 64 for K.
* Symmetric int2 KV codes are ternary ({-1, 0, 1}, codes ±(2^(b-1)-1)); int4 is the intended KV width.
* Λ attention (LM-Infinite): ``attn_sink`` first tokens + ``attn_window`` newest tokens are attended and kept;
  everything else is never read and is evicted from the cache.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from base.errors import SpecError
from base.specio import from_mapping, read_yaml, rng

if TYPE_CHECKING:
    from models.spec import LinearShape, ModelSpec

__all__ = ["CompressionScheme", "WeightBytes", "PRESETS", "get_scheme", "list_schemes",
           "BITMAP_TILE", "CHUNK_TOKENS", "FP16_BYTES", "packed_bytes", "bitmap_tile_bytes", "kept_per_token"]

BITMAP_TILE = 64  # elements per bitmap tile (Mustafar, arXiv 2505.22913 Sec. 4)
CHUNK_TOKENS = 64  # tokens per K quantization group / K bitmap tile: the unit in which the cache is compressed
FP16_BYTES = 2
BITMAP_BYTES = BITMAP_TILE // 8

WEIGHT_BITS = (2, 3, 4, 8, 16)
KV_BITS = (2, 4, 8, 16)
ACT_BITS = (8, 16)


def packed_bytes(n_values: int, bits: int) -> int:
    """Bytes of `n_values` integers packed at `bits` each, padded to a whole byte."""
    return -(-n_values * bits // 8)


def bitmap_tile_bytes(nnz: int, value_bits: int) -> int:
    """Bytes of one bitmap tile holding `nnz` kept values of `value_bits` each: 8-byte bitmap + packed values."""
    if not 0 <= nnz <= BITMAP_TILE:
        raise SpecError(f"a bitmap tile holds 0..{BITMAP_TILE} values, got {nnz}")
    return BITMAP_BYTES + packed_bytes(nnz, value_bits)


def kept_per_token(head_dim: int, sparsity: float) -> int:
    """Elements of one head's K (or V) vector that per-token magnitude pruning keeps."""
    return head_dim - round(sparsity * head_dim)


@dataclass(frozen=True)
class WeightBytes:
    """Bytes of a model's weights in a scheme's formats."""

    blocks: int  # all transformer blocks (linears, biases, norms)
    embedding: int  # token (+ learned position) embedding tables, fp16
    lm_head: int  # the LM head if stored separately (0 when tied and kept fp16)
    final_norm: int
    per_linear: dict[str, int]  # one block's linears by name (bias included)

    @property
    def total(self) -> int:
        return self.blocks + self.embedding + self.lm_head + self.final_norm

    @property
    def read_per_decode_step(self) -> int:
        """Weight bytes streamed from memory for one decode step: every block, the final norm and the LM head
        (the tied embedding table when the head is tied and fp16); embedding lookups read a few rows only."""
        head = self.lm_head if self.lm_head else self.embedding
        return self.blocks + self.final_norm + head


@dataclass(frozen=True)
class CompressionScheme:
    """A complete compression configuration. Sizes in elements/tokens; fractions in [0, 1)."""

    name: str = "custom"
    weight_bits: int = 16
    weight_group_size: int = field(default=128, metadata=rng(ge=1))
    weight_pruning: Literal["none", "2:4", "unstructured"] = "none"
    weight_sparsity: float = field(default=0.0, metadata=rng(ge=0, lt=1))
    lm_head_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16
    kv_group_size: int = field(default=64, metadata=rng(ge=1))
    kv_dense_recent: int = field(default=0, metadata=rng(ge=0))
    kv_sparsity: float = field(default=0.0, metadata=rng(ge=0, lt=1))
    attn_sink: int = field(default=0, metadata=rng(ge=0))
    attn_window: int | None = field(default=None, metadata=rng(ge=1))
    source: str = ""

    def __post_init__(self) -> None:
        for key, allowed in (("weight_bits", WEIGHT_BITS), ("lm_head_bits", WEIGHT_BITS),
                             ("act_bits", ACT_BITS), ("kv_bits", KV_BITS)):
            if getattr(self, key) not in allowed:
                raise SpecError(f"scheme {self.name!r}: {key}={getattr(self, key)} is not supported; "
                                f"use one of {', '.join(map(str, allowed))}")
        if self.weight_group_size < 1 or self.kv_group_size < 1:
            raise SpecError(f"scheme {self.name!r}: group sizes must be >= 1")
        if self.weight_pruning == "unstructured" and not 0 < self.weight_sparsity < 1:
            raise SpecError(f"scheme {self.name!r}: unstructured pruning needs 0 < weight_sparsity < 1, "
                            f"got {self.weight_sparsity}")
        if self.weight_pruning != "unstructured" and self.weight_sparsity:
            raise SpecError(f"scheme {self.name!r}: weight_sparsity is only used with weight_pruning "
                            "'unstructured' (2:4 is always 50%); remove it or set weight_pruning")
        if not 0 <= self.kv_sparsity < 1:
            raise SpecError(f"scheme {self.name!r}: kv_sparsity must be in [0, 1), got {self.kv_sparsity}")
        if self.attn_sink and self.attn_window is None:
            raise SpecError(f"scheme {self.name!r}: attn_sink needs attn_window (Λ attention = sink + window)")
        if self.attn_window is not None and self.attn_window < 1:
            raise SpecError(f"scheme {self.name!r}: attn_window must be >= 1, got {self.attn_window}")

    # ---- convenience ----------------------------------------------------------------------------------------
    def replace(self, **changes) -> "CompressionScheme":
        """A copy with fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def label(self) -> str:
        """Short human label, e.g. ``W2g64 A8 KV4 2:4 Λ4+2048``."""
        parts = [f"W{self.weight_bits}" + (f"g{self.weight_group_size}" if self.weight_bits < 16 else ""),
                 f"A{self.act_bits}", f"KV{self.kv_bits}"]
        if self.weight_pruning == "2:4":
            parts.append("2:4")
        elif self.weight_pruning == "unstructured":
            parts.append(f"sparse{self.weight_sparsity:.0%}")
        if self.kv_sparsity:
            parts.append(f"KVbitmap{self.kv_sparsity:.0%}")
        if self.attn_window is not None:
            parts.append(f"Λ{self.attn_sink}+{self.attn_window}")
        return " ".join(parts)

    # ---- weights --------------------------------------------------------------------------------------------
    def matrix_bytes(self, in_features: int, out_features: int, bits: int | None = None,
                     nnz_per_tile: "list[int] | None" = None) -> int:
        """Bytes of one weight matrix W[out, in] in this scheme's weight format (no bias).

        `bits` overrides the value width (used for the LM head). For unstructured pruning, `nnz_per_tile` gives the
        exact kept count of each 64-column tile (row-major, ceil(in/64) tiles per row); without it every tile holds
        the expected ``64 - round(64 * weight_sparsity)`` values (the last partial tile in proportion).
        """
        bits = self.weight_bits if bits is None else bits
        rows, cols = out_features, in_features
        quantized = bits < 16
        n_groups = -(-cols // self.weight_group_size)
        meta = 0
        if quantized:
            meta = rows * (n_groups * FP16_BYTES + packed_bytes(n_groups, bits))  # scales + zero points
        if self.weight_pruning == "2:4":
            if cols % 4:
                raise SpecError(f"2:4 pruning needs in_features divisible by 4, got {cols}")
            kept = cols // 2
            return rows * (packed_bytes(kept, bits) + packed_bytes(kept, 2)) + meta
        if self.weight_pruning == "unstructured":
            n_tiles = -(-cols // BITMAP_TILE)
            if nnz_per_tile is None:
                full, last = divmod(cols, BITMAP_TILE)
                keep = BITMAP_TILE - round(BITMAP_TILE * self.weight_sparsity)
                per_row = full * bitmap_tile_bytes(keep, bits)
                if last:
                    per_row += bitmap_tile_bytes(last - round(last * self.weight_sparsity), bits)
                return rows * per_row + meta
            if len(nnz_per_tile) != rows * n_tiles:
                raise SpecError(f"nnz_per_tile has {len(nnz_per_tile)} entries, expected {rows * n_tiles}")
            return sum(bitmap_tile_bytes(int(n), bits) for n in nnz_per_tile) + meta
        return rows * packed_bytes(cols, bits) + meta

    def linear_bytes(self, lin: "LinearShape", bits: int | None = None) -> int:
        """Bytes of one linear layer: weight matrix in this scheme's format plus an fp16 bias if it has one."""
        return self.matrix_bytes(lin.in_features, lin.out_features, bits) + (
            lin.out_features * FP16_BYTES if lin.bias else 0)

    def weight_bytes(self, model: "ModelSpec") -> WeightBytes:
        """Bytes of all of `model`'s weights. Embeddings and norms stay fp16; the LM head uses `lm_head_bits`
        (stored as a separate quantized copy when the embeddings are tied and lm_head_bits < 16)."""
        per_linear = {lin.name: self.linear_bytes(lin) for lin in model.block_linears}
        norm = model.hidden_size * (2 if model.norm == "layernorm" else 1) * FP16_BYTES
        blocks = model.num_layers * (sum(per_linear.values()) + 2 * norm)
        embedding = model.embedding_params * FP16_BYTES
        if model.tied_embeddings and self.lm_head_bits == 16:
            lm_head = 0
        else:
            head = model.lm_head
            lm_head = (self.matrix_bytes(head.in_features, head.out_features, self.lm_head_bits)
                       if self.lm_head_bits < 16 else head.weight_elems * FP16_BYTES)
        return WeightBytes(blocks=blocks, embedding=embedding, lm_head=lm_head, final_norm=norm,
                           per_linear=per_linear)

    # ---- activations ----------------------------------------------------------------------------------------
    def act_bytes(self, n_tokens: int, width: int) -> int:
        """Bytes of an activation tensor [n_tokens, width]: fp16, or int8 + one fp16 scale per token."""
        if self.act_bits == 16:
            return n_tokens * width * FP16_BYTES
        return n_tokens * (packed_bytes(width, self.act_bits) + FP16_BYTES)

    # ---- KV cache -------------------------------------------------------------------------------------------
    @property
    def kv_compressed(self) -> bool:
        return self.kv_bits < 16 or self.kv_sparsity > 0

    def kv_chunk_bytes_per_head(self, head_dim: int) -> float:
        """Bytes of one compressed chunk (CHUNK_TOKENS tokens) of one KV head, K and V together.

        Exact for fp16 values and for even kept counts; with sparse int values the per-tile byte padding of K tiles
        depends on the data and is counted here as if absent (`bitmap_tile_bytes` gives the exact per-tile figure).
        """
        b, T = self.kv_bits, CHUNK_TOKENS
        scales_k = scales_v = 0
        if b < 16:
            scales_k = head_dim * -(-T // self.kv_group_size) * FP16_BYTES  # per channel per group of tokens
            scales_v = T * -(-head_dim // self.kv_group_size) * FP16_BYTES  # per token per group of channels
        if self.kv_sparsity == 0:
            return 2 * T * head_dim * b / 8 + scales_k + scales_v
        kept = kept_per_token(head_dim, self.kv_sparsity)
        k_bytes = head_dim * BITMAP_BYTES + T * kept * b / 8  # head_dim tiles of 64 tokens
        v_tiles = -(-head_dim // BITMAP_TILE)
        v_bytes = T * (v_tiles * BITMAP_BYTES + kept * b / 8)
        return k_bytes + v_bytes + scales_k + scales_v

    def kv_stored_tokens(self, model: "ModelSpec", n_tokens: int) -> int:
        """Tokens whose K/V the cache holds after `n_tokens` tokens: Λ attention and sliding windows evict."""
        keep = n_tokens
        if self.attn_window is not None:
            keep = min(keep, self.attn_sink + self.attn_window)
        if model.sliding_window is not None:
            keep = min(keep, model.sliding_window)
        return keep

    def kv_attended_tokens(self, model: "ModelSpec", context: int) -> int:
        """Tokens one decode step at `context` tokens reads from the cache (= those stored)."""
        return self.kv_stored_tokens(model, context)

    def kv_split(self, n_tokens: int) -> tuple[int, int]:
        """(compressed, dense) tokens of a cache of `n_tokens`: whole chunks beyond the dense recent window."""
        if not self.kv_compressed:
            return 0, n_tokens
        compressed = max(0, n_tokens - self.kv_dense_recent) // CHUNK_TOKENS * CHUNK_TOKENS
        return compressed, n_tokens - compressed

    def kv_cache_bytes(self, model: "ModelSpec", n_tokens: int, batch: int = 1) -> float:
        """Bytes of the KV cache (all layers, K and V) holding `n_tokens` tokens of each of `batch` sequences,
        after Λ/sliding-window eviction."""
        return batch * self.kv_bytes_for_tokens(model, self.kv_stored_tokens(model, n_tokens))

    def kv_bytes_for_tokens(self, model: "ModelSpec", tokens: int) -> float:
        """Bytes of `tokens` cached tokens of one sequence, all layers, K and V (no eviction applied)."""
        compressed, dense = self.kv_split(tokens)
        heads = model.num_layers * model.num_kv_heads
        per_head = (compressed // CHUNK_TOKENS) * self.kv_chunk_bytes_per_head(model.head_dim)
        per_head += dense * 2 * model.head_dim * FP16_BYTES
        return heads * per_head

    def kv_bits_per_element(self, head_dim: int) -> float:
        """Average storage bits per K/V element in the compressed part (scales, bitmaps included)."""
        return self.kv_chunk_bytes_per_head(head_dim) * 8 / (2 * CHUNK_TOKENS * head_dim)


# ---- presets --------------------------------------------------------------------------------------------------
_PRESETS: dict[str, CompressionScheme] = {
    s.name: s
    for s in (
        CompressionScheme(name="fp16", source="uncompressed baseline"),
        CompressionScheme(name="w4a16", weight_bits=4, weight_group_size=128,
                          source="GPTQ/AWQ-style 4-bit weight-only, g128 (Frantar et al. 2022)"),
        CompressionScheme(name="w2a8kv4", weight_bits=2, weight_group_size=64, act_bits=8, kv_bits=4,
                          kv_group_size=64, kv_dense_recent=32,
                          source="AccLLM arXiv 2505.03745 (W2A8KV4); W2 group 64 and KV group 64 are our choices "
                                 "(not published); dense recent window 32 tokens as in Mustafar"),
        CompressionScheme(name="accllm", weight_bits=2, weight_group_size=64, weight_pruning="2:4", act_bits=8,
                          kv_bits=4, kv_group_size=64, kv_dense_recent=32, attn_sink=4, attn_window=2048,
                          source="AccLLM arXiv 2505.03745: 2:4 + W2A8KV4 + Λ attention. Window sizes are not "
                                 "published (shared/ANCHORS.md): 4 sink tokens as StreamingLLM (Xiao et al. 2023), "
                                 "2048-token local window = half of Llama-2's 4096 pretraining context"),
        CompressionScheme(name="mustafar70", kv_sparsity=0.7, kv_dense_recent=32,
                          source="Mustafar arXiv 2505.22913: 70% per-token magnitude KV pruning, bitmap tiles of "
                                 "64, newest 32 tokens dense"),
        CompressionScheme(name="flightllm", weight_bits=4, weight_group_size=128, weight_pruning="2:4", act_bits=8,
                          source="FlightLLM-like (FPGA'24): N:M (here 2:4) sparse weights, low-bit weights (here "
                                 "W4 g128) and int8 activations, fp16 KV. FlightLLM's exact mixed precision is not "
                                 "reproduced; this is an approximation for comparison"),
    )
}
PRESETS = _PRESETS


def list_schemes() -> list[str]:
    return sorted(_PRESETS)


def get_scheme(name_or_path: str) -> CompressionScheme:
    """A preset by exact name, or a scheme from a YAML file of CompressionScheme fields."""
    if name_or_path in _PRESETS:
        return _PRESETS[name_or_path]
    if str(name_or_path).endswith((".yaml", ".yml")):
        return from_mapping(CompressionScheme, read_yaml(name_or_path), str(name_or_path))
    raise SpecError(f"unknown scheme {name_or_path!r}; use one of {', '.join(list_schemes())} "
                    "or a path to a scheme YAML")
