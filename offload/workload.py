"""Workload: what is run (model, compression scheme, batch, prompt and generation lengths), and its byte/FLOP sizes.

Sizes come from `ModelSpec` (dimensions) and `CompressionScheme` (THE byte costs); nothing here recomputes a format's
size a second way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from base.specio import rng
from models.spec import ModelSpec, get_model
from quant.scheme import CompressionScheme, get_scheme

__all__ = ["Workload", "read_workload"]


@dataclass(frozen=True)
class Workload:
    """Offline batched generation: `batch` sequences of `prompt_len` tokens, each generating `gen_len` tokens.

    The prefill step produces token 1; decode steps 2..gen_len each read the cache and append one token's K/V, so
    the cache ends holding ``prompt_len + gen_len - 1`` tokens per sequence.
    """

    model: ModelSpec
    scheme: CompressionScheme
    batch: int = field(metadata=rng(ge=1))
    prompt_len: int = field(metadata=rng(ge=1))
    gen_len: int = field(metadata=rng(ge=1))

    @classmethod
    def make(
        cls, model: str | ModelSpec, batch: int, prompt_len: int, gen_len: int, scheme: str | CompressionScheme = "fp16"
    ) -> Workload:
        from base.errors import SpecError

        m = get_model(model) if not isinstance(model, ModelSpec) else model
        s = get_scheme(scheme) if not isinstance(scheme, CompressionScheme) else scheme
        for key, val in (("batch", batch), ("prompt_len", prompt_len), ("gen_len", gen_len)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise SpecError(f"workload {key} must be an integer >= 1, got {val!r}")
        return cls(model=m, scheme=s, batch=batch, prompt_len=prompt_len, gen_len=gen_len)

    # ---- token counts ---------------------------------------------------------------------------------------
    @property
    def final_context(self) -> int:
        """Tokens in each sequence's cache at the end."""
        return self.prompt_len + self.gen_len - 1

    def decode_context(self, token: int) -> int:
        """Tokens in the cache when decode step `token` (1..gen_len-1; prefill is token 0) starts."""
        return self.prompt_len + token - 1

    @property
    def tokens_generated(self) -> int:
        return self.batch * self.gen_len

    # ---- bytes (CompressionScheme is the only place formats are sized) -------------------------------------------
    @cached_property
    def _weights(self):
        return self.scheme.weight_bytes(self.model)

    @property
    def layer_weight_bytes(self) -> float:
        """One transformer block's weights (linears, biases, norms) in the scheme's format."""
        return self._weights.blocks / self.model.num_layers

    @cached_property
    def _weights_fp16(self):
        return CompressionScheme(name="fp16").weight_bytes(self.model)

    @property
    def weights_compressed(self) -> bool:
        """Weights stored group-quantized (decompressed to fp16 before use by an offloading runtime)."""
        return self.scheme.weight_bits < 16

    @property
    def kv_compressed(self) -> bool:
        return self.scheme.kv_compressed

    @property
    def layer_weight_fp16_bytes(self) -> float:
        """One block's weights once decompressed to fp16."""
        return self._weights_fp16.blocks / self.model.num_layers

    @property
    def qkv_weight_fp16_bytes(self) -> float:
        per = self._weights_fp16.per_linear
        return float(sum(per[n] for n in ("q_proj", "k_proj", "v_proj")))

    def layer_kv_fp16_bytes(self, tokens: int, batch: int | None = None) -> float:
        """`layer_kv_bytes` once decompressed to fp16 (attended tokens only when the scheme evicts)."""
        b = self.batch if batch is None else batch
        kept = self.scheme.kv_stored_tokens(self.model, tokens)
        return CompressionScheme(name="fp16").kv_cache_bytes(self.model, kept, b) / self.model.num_layers

    @property
    def qkv_weight_bytes(self) -> float:
        per = self._weights.per_linear
        return float(sum(per[n] for n in ("q_proj", "k_proj", "v_proj")))

    @property
    def resident_weight_bytes(self) -> float:
        """Weights that always stay on the GPU: embeddings, final norm and LM head."""
        return float(self._weights.total - self._weights.blocks)

    @property
    def total_weight_bytes(self) -> float:
        return float(self._weights.total)

    def layer_kv_bytes(self, tokens: int, batch: int | None = None) -> float:
        """K and V of one layer for `batch` sequences holding `tokens` tokens each (after eviction)."""
        b = self.batch if batch is None else batch
        return self.scheme.kv_cache_bytes(self.model, tokens, b) / self.model.num_layers

    def layer_kv_key_bytes(self, tokens: int, batch: int | None = None) -> float:
        """The K half of `layer_kv_bytes` (K and V have the same size in every supported format)."""
        return self.layer_kv_bytes(tokens, batch) / 2

    def kv_total_bytes(self, tokens: int) -> float:
        return self.scheme.kv_cache_bytes(self.model, tokens, self.batch)

    def hidden_bytes(self, n_tokens: int) -> float:
        """Activations [n_tokens, hidden] between two layers."""
        return float(self.scheme.act_bytes(n_tokens, self.model.hidden_size))

    def fp16_vector_bytes(self, n_vectors: int, width: int) -> float:
        """fp16 vectors (queries, fresh K/V rows, attention outputs) as they cross PCIe."""
        return float(CompressionScheme().act_bytes(n_vectors, width))

    # ---- FLOPs (2 per multiply-accumulate) ------------------------------------------------------------------
    def layer_linear_flops(self, n_tokens: int, names: tuple[str, ...] | None = None) -> float:
        lins = self.model.block_linears
        if names is not None:
            lins = tuple(l for l in lins if l.name in names)
        return 2.0 * n_tokens * sum(l.weight_elems for l in lins)

    def decode_attention_flops(self, batch: int, attended: float) -> float:
        """QK^T and PV of one layer for one new token per sequence against `attended` cached tokens."""
        return 4.0 * batch * self.model.num_heads * self.model.head_dim * attended

    def prefill_attention_flops(self, batch: int, prompt: int) -> float:
        """Causal QK^T and PV over the prompt, one layer."""
        return 4.0 * batch * self.model.num_heads * self.model.head_dim * prompt * (prompt + 1) / 2

    def lm_head_flops(self, n_tokens: int) -> float:
        return 2.0 * n_tokens * self.model.lm_head.weight_elems


def read_workload(path) -> Workload:
    """A Workload from YAML: ``model`` (name or path), ``batch``, ``prompt_len``, ``gen_len``, optional ``scheme``
    (preset name or path; default fp16). Unknown keys are rejected."""
    from base.errors import SpecError
    from base.specio import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of workload keys")
    allowed = ("model", "batch", "prompt_len", "gen_len", "scheme")
    for key in data:
        if key not in allowed:
            raise SpecError(f"{path}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    for key in allowed[:4]:
        if key not in data:
            raise SpecError(f"{path}: missing key {key!r}; add it")
    try:
        return Workload.make(
            data["model"], data["batch"], data["prompt_len"], data["gen_len"], data.get("scheme", "fp16")
        )
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
