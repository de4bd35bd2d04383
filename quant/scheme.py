"""CompressionScheme: how a model is compressed, and THE one place where every format's byte cost is computed.

Formats (bit-level layouts are documented in quant/formats; sizes here and there agree by test):

* weights, ``weight_bits`` < 16: asymmetric unsigned integers, group-wise along the input dimension
  (``weight_group_size`` dense input columns share one fp16 scale and one zero point stored at the weight width).
  Each output row is packed separately and padded to a whole byte (values, zero points and 2:4 indices alike).
* N:M pruning (``weight_pruning: "N:M"``, any 0 < N < M, e.g. 2:4, 1:4, 4:8): per M dense columns N values are
  kept plus one pattern code of ceil(log2 C(M, N)) bits naming which (2:4: 3 bits for the 6 patterns, so 2:4 W2 is
  7 bits per 4 weights against dense W2's 8); the engine multiplies kept values only (MACs x N/M).
  ``weight_nm_index: positions`` instead stores ceil(log2 M) bits per kept value, its column within the group (2:4:
  two 2-bit positions, 4 bits per 4 weights, as NVIDIA's sparse tensor cores store 2:4 metadata): a hardware decoder
  uses them as multiplexer selects directly, with no pattern table.
* block pruning (``"block"``): rows are cut into blocks of ``weight_block_size`` dense columns that are kept or dropped
  whole (``weight_sparsity`` = dropped fraction); one bitmap bit per block, kept blocks' values packed.
* unstructured pruning: rows are cut into tiles of 64 dense columns; each tile is a 64-bit bitmap followed by its
  kept values, padded to a whole byte.
* per-operator and per-layer precision (``overrides``): a mapping from an operator selector to the fields that differ
  for it. Selectors: an operator name (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, fc1, fc2,
  lm_head, attention), a group (``attn_linear``, ``ffn``), each optionally restricted to layers with ``@``
  (``ffn@0-3,30``). The most specific selector wins (name@layers > name > group@layers > group). ``attention``
  takes ``act_bits`` (the query / probability width of q·K and p·V); the KV cache format stays global.
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
from functools import lru_cache
from typing import TYPE_CHECKING

from base.errors import SpecError
from base.specio import from_mapping, read_yaml, rng

if TYPE_CHECKING:
    from models.spec import LinearShape, ModelSpec

__all__ = [
    "CompressionScheme",
    "OpOverride",
    "WeightBytes",
    "PRESETS",
    "get_scheme",
    "list_schemes",
    "BITMAP_TILE",
    "CHUNK_TOKENS",
    "FP16_BYTES",
    "packed_bytes",
    "bitmap_tile_bytes",
    "kept_per_token",
    "parse_nm",
    "OP_GROUPS",
]

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


NM_INDEX_FORMATS = ("pattern", "positions")


def nm_index_bytes(cols: int, n: int, m: int, index_format: str = "pattern") -> int:
    """Bytes of one row's N:M metadata over `cols` dense columns (a whole byte per row).

    ``pattern``: one ceil(log2 C(M, N))-bit code per group of M naming which N are kept (2:4: 3 bits for 6 patterns).
    ``positions``: ceil(log2 M) bits per kept value, its column within the group (2:4: 2 x 2 bits per group).
    """
    groups = cols // m
    if index_format == "positions":
        return packed_bytes(groups * n, max(1, (m - 1).bit_length()))
    return packed_bytes(groups, max(1, (math.comb(m, n) - 1).bit_length()))


def parse_nm(mode: str) -> tuple[int, int] | None:
    """(N, M) of an ``"N:M"`` pruning mode, None for other modes; SpecError when N >= M or either is < 1."""
    if ":" not in mode:
        return None
    try:
        n, m = (int(x) for x in mode.split(":"))
    except ValueError:
        raise SpecError(f"weight_pruning {mode!r} is not N:M with integers; write e.g. 2:4") from None
    if not 0 < n < m:
        raise SpecError(f"weight_pruning {mode!r}: N:M pruning needs 0 < N < M (N kept of every M); e.g. 2:4")
    return n, m


OP_GROUPS = {
    "q_proj": "attn_linear",
    "k_proj": "attn_linear",
    "v_proj": "attn_linear",
    "o_proj": "attn_linear",
    "out_proj": "attn_linear",
    "qkv_proj": "attn_linear",
    "gate_proj": "ffn",
    "up_proj": "ffn",
    "down_proj": "ffn",
    "fc1": "ffn",
    "fc2": "ffn",
    "lm_head": "lm_head",
    "attention": "attention",
}
_OVERRIDE_FIELDS = (
    "weight_bits",
    "weight_group_size",
    "weight_pruning",
    "weight_sparsity",
    "weight_block_size",
    "act_bits",
)


def _parse_layers(text: str, where: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-"))
            else:
                a = b = int(part)
        except ValueError:
            raise SpecError(f"{where}: layer list {text[:80]!r} is malformed; write e.g. 0-3,30") from None
        if not 0 <= a <= b < 10_000:  # ModelSpec.num_layers <= 10,000: bounds the set built here
            raise SpecError(f"{where}: layer range {part[:40]!r} must run upwards within 0..9999; write e.g. 0-3,30")
        out.update(range(a, b + 1))
    return frozenset(out)


@dataclass(frozen=True)
class OpOverride:
    """Fields of one operator (or group, or layers of it) that differ from the scheme's global ones (None: global)."""

    weight_bits: int | None = None
    weight_group_size: int | None = field(default=None, metadata=rng(ge=1))
    weight_pruning: str | None = None
    weight_sparsity: float | None = field(default=None, metadata=rng(ge=0, lt=1))
    weight_block_size: int | None = field(default=None, metadata=rng(ge=1))
    act_bits: int | None = None

    def changes(self) -> dict:
        return {k: getattr(self, k) for k in _OVERRIDE_FIELDS if getattr(self, k) is not None}


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
    weight_pruning: str = "none"  # "none" | "N:M" (e.g. "2:4") | "block" | "unstructured"
    weight_sparsity: float = field(default=0.0, metadata=rng(ge=0, lt=1))  # block / unstructured: dropped fraction
    weight_block_size: int = field(default=16, metadata=rng(ge=1))  # block pruning: dense columns per block
    weight_nm_index: str = "pattern"  # N:M metadata: "pattern" (one code per group) | "positions" (one per kept value)
    lm_head_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16
    kv_group_size: int = field(default=64, metadata=rng(ge=1))
    kv_dense_recent: int = field(default=0, metadata=rng(ge=0))
    kv_sparsity: float = field(default=0.0, metadata=rng(ge=0, lt=1))
    attn_sink: int = field(default=0, metadata=rng(ge=0))
    attn_window: int | None = field(default=None, metadata=rng(ge=1))
    overrides: dict[str, OpOverride] = field(default_factory=dict, hash=False)
    source: str = ""

    def __post_init__(self) -> None:
        for key, allowed in (
            ("weight_bits", WEIGHT_BITS),
            ("lm_head_bits", WEIGHT_BITS),
            ("act_bits", ACT_BITS),
            ("kv_bits", KV_BITS),
        ):
            if getattr(self, key) not in allowed:
                raise SpecError(
                    f"scheme {self.name!r}: {key}={getattr(self, key)} is not supported; "
                    f"use one of {', '.join(map(str, allowed))}"
                )
        if self.weight_group_size < 1 or self.kv_group_size < 1:
            raise SpecError(f"scheme {self.name!r}: group sizes must be >= 1")
        if self.weight_pruning not in ("none", "block", "unstructured") and parse_nm(self.weight_pruning) is None:
            raise SpecError(
                f"scheme {self.name!r}: weight_pruning {self.weight_pruning!r} is not supported; use "
                "none, N:M (e.g. 2:4), block or unstructured"
            )
        if self.weight_pruning in ("block", "unstructured") and not 0 < self.weight_sparsity < 1:
            raise SpecError(
                f"scheme {self.name!r}: {self.weight_pruning} pruning needs 0 < weight_sparsity < 1, "
                f"got {self.weight_sparsity}"
            )
        if self.weight_pruning not in ("block", "unstructured") and self.weight_sparsity:
            raise SpecError(
                f"scheme {self.name!r}: weight_sparsity is only used with weight_pruning 'block' or "
                "'unstructured' (N:M keeps N/M); remove it or set weight_pruning"
            )
        if self.weight_nm_index not in NM_INDEX_FORMATS:
            raise SpecError(
                f"scheme {self.name!r}: weight_nm_index {self.weight_nm_index!r} is not supported; use "
                f"{' or '.join(NM_INDEX_FORMATS)}"
            )
        for sel, ov in self.overrides.items():
            name, _, layers = sel.partition("@")
            if name not in OP_GROUPS and name not in ("attn_linear", "ffn"):
                raise SpecError(
                    f"scheme {self.name!r}: overrides key {sel!r} names no operator; use one of "
                    f"{', '.join(sorted(set(OP_GROUPS) | {'attn_linear', 'ffn'}))} (optionally @layers)"
                )
            if layers:
                _parse_layers(layers, f"scheme {self.name!r}: overrides[{sel!r}]")
            if not isinstance(ov, OpOverride):
                raise SpecError(f"scheme {self.name!r}: overrides[{sel!r}] must be a mapping of scheme fields")
            if ov.changes():
                try:
                    dataclasses.replace(self, overrides={}, name=f"{self.name}[{sel}]", **_complete(ov.changes()))
                except SpecError as exc:
                    raise SpecError(f"scheme {self.name!r}: overrides[{sel!r}]: {exc}") from None
        if not 0 <= self.kv_sparsity < 1:
            raise SpecError(f"scheme {self.name!r}: kv_sparsity must be in [0, 1), got {self.kv_sparsity}")
        if self.attn_sink and self.attn_window is None:
            raise SpecError(f"scheme {self.name!r}: attn_sink needs attn_window (Λ attention = sink + window)")
        if self.attn_window is not None and self.attn_window < 1:
            raise SpecError(f"scheme {self.name!r}: attn_window must be >= 1, got {self.attn_window}")

    # ---- convenience ----------------------------------------------------------------------------------------
    def replace(self, **changes) -> CompressionScheme:
        """A copy with fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def for_op(self, op: str, layer: int | None = None) -> CompressionScheme:
        """The scheme as it applies to operator `op` (see OP_GROUPS) in `layer`: overrides resolved, none left."""
        if not self.overrides:
            return self
        return _resolve(self, op, layer)

    def layer_dependent(self) -> bool:
        """Whether any override is restricted to some layers."""
        return any("@" in k for k in self.overrides)

    @property
    def sparsity_mode(self) -> str:
        """``none``, ``N:M`` (the mode string), ``block`` or ``unstructured``."""
        return self.weight_pruning

    @property
    def weight_density(self) -> float:
        """Fraction of the dense weights that are kept (the MACs an engine that skips zeros executes)."""
        nm = parse_nm(self.weight_pruning)
        if nm is not None:
            return nm[0] / nm[1]
        if self.weight_pruning in ("block", "unstructured"):
            return 1.0 - self.weight_sparsity
        return 1.0

    @property
    def label(self) -> str:
        """Short human label, e.g. ``W2g64 A8 KV4 2:4 Λ4+2048``."""
        parts = [
            f"W{self.weight_bits}" + (f"g{self.weight_group_size}" if self.weight_bits < 16 else ""),
            f"A{self.act_bits}",
            f"KV{self.kv_bits}",
        ]
        if parse_nm(self.weight_pruning) is not None:
            parts.append(self.weight_pruning)
        elif self.weight_pruning == "block":
            parts.append(f"block{self.weight_block_size}-{self.weight_sparsity:.0%}")
        elif self.weight_pruning == "unstructured":
            parts.append(f"sparse{self.weight_sparsity:.0%}")
        if self.overrides:
            parts.append("+" + ",".join(sorted(self.overrides)))
        if self.kv_sparsity:
            parts.append(f"KVbitmap{self.kv_sparsity:.0%}")
        if self.attn_window is not None:
            parts.append(f"Λ{self.attn_sink}+{self.attn_window}")
        return " ".join(parts)

    # ---- weights --------------------------------------------------------------------------------------------
    def matrix_bytes(
        self, in_features: int, out_features: int, bits: int | None = None, nnz_per_tile: list[int] | None = None
    ) -> int:
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
        nm = parse_nm(self.weight_pruning)
        if nm is not None:
            n, m = nm
            if cols % m:
                raise SpecError(f"{n}:{m} pruning needs in_features divisible by {m}, got {cols}")
            kept = cols // m * n
            return rows * (packed_bytes(kept, bits) + nm_index_bytes(cols, n, m, self.weight_nm_index)) + meta
        if self.weight_pruning == "block":
            n_blocks = -(-cols // self.weight_block_size)
            kept_cols = round(cols * (1.0 - self.weight_sparsity))
            return rows * (packed_bytes(n_blocks, 1) + packed_bytes(kept_cols, bits)) + meta
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

    def linear_bytes(self, lin: LinearShape, bits: int | None = None) -> int:
        """Bytes of one linear layer: weight matrix in this scheme's format plus an fp16 bias if it has one."""
        return self.matrix_bytes(lin.in_features, lin.out_features, bits) + (
            lin.out_features * FP16_BYTES if lin.bias else 0
        )

    def layer_linear_bytes(self, model: ModelSpec, layer: int | None = None) -> dict[str, int]:
        """Bytes of each linear of one block (`layer`; None = a layer no layer-restricted override touches)."""
        return {lin.name: self.for_op(lin.name, layer).linear_bytes(lin) for lin in model.block_linears}

    @property
    def head_bits(self) -> int:
        """Value width of the LM head: ``lm_head_bits``, or an ``lm_head`` override's weight_bits."""
        ov = self.overrides.get("lm_head")
        return ov.weight_bits if ov is not None and ov.weight_bits is not None else self.lm_head_bits

    def weight_bytes(self, model: ModelSpec) -> WeightBytes:
        """Bytes of all of `model`'s weights. Embeddings and norms stay fp16; the LM head uses `lm_head_bits`
        (stored as a separate quantized copy when the embeddings are tied and lm_head_bits < 16)."""
        per_linear = self.layer_linear_bytes(model)
        norm = model.hidden_size * (2 if model.norm == "layernorm" else 1) * FP16_BYTES
        if self.layer_dependent():
            lin_total = sum(sum(self.layer_linear_bytes(model, l).values()) for l in range(model.num_layers))
        else:
            lin_total = model.num_layers * sum(per_linear.values())
        blocks = lin_total + model.num_layers * 2 * norm
        embedding = model.embedding_params * FP16_BYTES
        hb = self.head_bits
        if model.tied_embeddings and hb == 16:
            lm_head = 0
        else:
            head = model.lm_head
            hs = self.for_op("lm_head")
            lm_head = (
                hs.matrix_bytes(head.in_features, head.out_features, hb) if hb < 16 else head.weight_elems * FP16_BYTES
            )
        return WeightBytes(blocks=blocks, embedding=embedding, lm_head=lm_head, final_norm=norm, per_linear=per_linear)

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

    def kv_stored_tokens(self, model: ModelSpec, n_tokens: int) -> int:
        """Tokens whose K/V the cache holds after `n_tokens` tokens: Λ attention and sliding windows evict."""
        keep = n_tokens
        if self.attn_window is not None:
            keep = min(keep, self.attn_sink + self.attn_window)
        if model.sliding_window is not None:
            keep = min(keep, model.sliding_window)
        return keep

    def kv_attended_tokens(self, model: ModelSpec, context: int) -> int:
        """Tokens one decode step at `context` tokens reads from the cache (= those stored)."""
        return self.kv_stored_tokens(model, context)

    def kv_split(self, n_tokens: int) -> tuple[int, int]:
        """(compressed, dense) tokens of a cache of `n_tokens`: whole chunks beyond the dense recent window."""
        if not self.kv_compressed:
            return 0, n_tokens
        compressed = max(0, n_tokens - self.kv_dense_recent) // CHUNK_TOKENS * CHUNK_TOKENS
        return compressed, n_tokens - compressed

    def kv_cache_bytes(self, model: ModelSpec, n_tokens: int, batch: int = 1) -> float:
        """Bytes of the KV cache (all layers, K and V) holding `n_tokens` tokens of each of `batch` sequences,
        after Λ/sliding-window eviction."""
        return batch * self.kv_bytes_for_tokens(model, self.kv_stored_tokens(model, n_tokens))

    def kv_bytes_for_tokens(self, model: ModelSpec, tokens: int) -> float:
        """Bytes of `tokens` cached tokens of one sequence, all layers, K and V (no eviction applied)."""
        compressed, dense = self.kv_split(tokens)
        heads = model.num_layers * model.num_kv_heads
        per_head = (compressed // CHUNK_TOKENS) * self.kv_chunk_bytes_per_head(model.head_dim)
        per_head += dense * 2 * model.head_dim * FP16_BYTES
        return heads * per_head

    def kv_token_bytes_per_head(self, head_dim: int, compressed: bool) -> float:
        """Bytes of one token's K and V in one KV head: compressed format (chunk average) or dense fp16."""
        if compressed and self.kv_compressed:
            return self.kv_chunk_bytes_per_head(head_dim) / CHUNK_TOKENS
        return 2 * head_dim * FP16_BYTES

    def kv_append_bytes(self, model: ModelSpec, tokens: int = 1) -> int:
        """Bytes one layer writes to the cache for `tokens` new tokens: K and V, fp16, into the dense recent window
        (compression of a full chunk happens later, off the decode step's critical path)."""
        return tokens * 2 * model.kv_dim * FP16_BYTES

    def kv_head_bytes(self, tokens: int, head_dim: int, k_tile_nnz=None, v_tile_nnz=None) -> int:
        """Exact bytes of `tokens` compressed tokens (whole chunks) of one KV head, K and V.

        With bitmap sparsity, `k_tile_nnz` / `v_tile_nnz` give the measured kept count of every K tile (64 tokens
        of one channel) and V tile (64 channels of one token); scales as for the dense format."""
        b = self.kv_bits
        if self.kv_sparsity > 0:
            if k_tile_nnz is None or v_tile_nnz is None:
                raise SpecError("bitmap-sparse KV bytes need the measured per-tile kept counts")
            val_bits = b if b < 16 else 16
            nbytes = sum(bitmap_tile_bytes(int(n), val_bits) for n in k_tile_nnz)
            nbytes += sum(bitmap_tile_bytes(int(n), val_bits) for n in v_tile_nnz)
        else:
            nbytes = 2 * tokens * packed_bytes(head_dim, b) if b < 16 else 2 * tokens * head_dim * FP16_BYTES
        if b < 16:
            nbytes += head_dim * -(-tokens // self.kv_group_size) * FP16_BYTES  # K scales
            nbytes += tokens * -(-head_dim // self.kv_group_size) * FP16_BYTES  # V scales
        return nbytes

    def kv_bytes_for_tokens_array(self, model: ModelSpec, tokens):
        """`kv_bytes_for_tokens` over a numpy array of token counts (float64 result, same formula)."""
        import numpy as np

        t = np.asarray(tokens, dtype=np.float64)
        if self.kv_compressed:
            compressed = np.floor(np.maximum(0.0, t - self.kv_dense_recent) / CHUNK_TOKENS) * CHUNK_TOKENS
        else:
            compressed = np.zeros_like(t)
        dense = t - compressed
        heads = model.num_layers * model.num_kv_heads
        per_chunk = self.kv_chunk_bytes_per_head(model.head_dim) if self.kv_compressed else 0.0
        return heads * (compressed / CHUNK_TOKENS * per_chunk + dense * 2 * model.head_dim * FP16_BYTES)

    def kv_attended_cap(self, model: ModelSpec) -> float:
        """Most tokens a decode step attends (Λ window + sinks, or the model's sliding window); inf if unbounded."""
        cap = math.inf
        if self.attn_window is not None:
            cap = self.attn_sink + self.attn_window
        if model.sliding_window is not None:
            cap = min(cap, model.sliding_window)
        return cap

    def kv_bits_per_element(self, head_dim: int) -> float:
        """Average storage bits per K/V element in the compressed part (scales, bitmaps included)."""
        return self.kv_chunk_bytes_per_head(head_dim) * 8 / (2 * CHUNK_TOKENS * head_dim)


@lru_cache(maxsize=4096)
def _resolve(s: CompressionScheme, op: str, layer: int | None) -> CompressionScheme:
    group = OP_GROUPS.get(op, op)
    best: tuple[int, dict] | None = None
    for sel, ov in s.overrides.items():
        name, _, layers = sel.partition("@")
        if name == op:
            rank = 2
        elif name == group and group != op:
            rank = 0
        else:
            continue
        if layers:
            if layer is None or layer not in _parse_layers(layers, sel):
                continue
            rank += 1
        if best is None or rank > best[0]:
            best = (rank, ov.changes())
    changes = _complete(best[1] if best is not None else {})
    return dataclasses.replace(s, overrides={}, **changes)


def _complete(changes: dict) -> dict:
    """An override that switches to a pruning mode without a sparsity fraction drops the global fraction."""
    if "weight_pruning" in changes and changes["weight_pruning"] not in ("block", "unstructured"):
        changes = {"weight_sparsity": 0.0, **changes}
    return changes


# ---- presets --------------------------------------------------------------------------------------------------
_PRESETS: dict[str, CompressionScheme] = {
    s.name: s
    for s in (
        CompressionScheme(name="fp16", source="uncompressed baseline"),
        CompressionScheme(
            name="w4a16",
            weight_bits=4,
            weight_group_size=128,
            source="GPTQ/AWQ-style 4-bit weight-only, g128 (Frantar et al. 2022)",
        ),
        CompressionScheme(
            name="w2a8kv4",
            weight_bits=2,
            weight_group_size=64,
            act_bits=8,
            kv_bits=4,
            kv_group_size=64,
            kv_dense_recent=32,
            source="AccLLM arXiv 2505.03745 (W2A8KV4); W2 group 64 and KV group 64 are our choices "
            "(not published); dense recent window 32 tokens as in Mustafar",
        ),
        CompressionScheme(
            name="accllm",
            weight_bits=2,
            weight_group_size=64,
            weight_pruning="2:4",
            weight_nm_index="positions",
            act_bits=8,
            kv_bits=4,
            kv_group_size=64,
            kv_dense_recent=32,
            attn_sink=4,
            attn_window=2048,
            source="AccLLM arXiv 2505.03745: 2:4 + W2A8KV4 + Λ attention. 2:4 metadata as 2-bit positions "
            "per kept value (the hardware convention of NVIDIA's sparse tensor cores; AccLLM does not publish its "
            "index format, and a DSP-array decoder uses positions as multiplexer selects). Window sizes are not "
            "published (shared/ANCHORS.md): 4 sink tokens as StreamingLLM (Xiao et al. 2023), "
            "2048-token local window = half of Llama-2's 4096 pretraining context",
        ),
        CompressionScheme(
            name="mustafar70",
            kv_sparsity=0.7,
            kv_dense_recent=32,
            source="Mustafar arXiv 2505.22913: 70% per-token magnitude KV pruning, bitmap tiles of "
            "64, newest 32 tokens dense",
        ),
        CompressionScheme(
            name="flightllm",
            weight_bits=8,
            weight_group_size=16384,
            lm_head_bits=8,
            act_bits=8,
            kv_bits=8,
            kv_group_size=64,
            overrides={
                "q_proj": OpOverride(weight_pruning="block", weight_sparsity=0.3, weight_block_size=16),
                "k_proj": OpOverride(weight_pruning="block", weight_sparsity=0.3, weight_block_size=16),
            },
            source="FlightLLM FPGA'24 as its public demo describes Llama-2-7B "
            "(github.com/FlightLLM/flightllm_test_demo, profile/.compiler_output/ir_output): "
            "int8 weights, activations, KV cache and LM head (IR dtype int8); q_proj and k_proj "
            "block-sparse with sparse_ratio 0.7 (30% of blocks pruned), the other linears dense; "
            "blocks of 16 (profile/config.yaml FSB_BLOCK_SIZE). Our assumptions: one fp16 scale "
            "per output row (group >= every in_features), KV scales per 64 (as our KV4); the "
            "demo's block-sparse attention masks are not modelled (dense attention)",
        ),
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
    raise SpecError(
        f"unknown scheme {name_or_path!r}; use one of {', '.join(list_schemes())} or a path to a scheme YAML"
    )
