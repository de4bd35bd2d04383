"""ModelSpec: the architecture of a transformer LM, and the registry of shipped specs.

A spec is a frozen dataclass loaded from one YAML file per model (models/specs/NAME.yaml, each naming its source),
or converted from any Hugging Face ``config.json`` of the Llama, Mistral, OPT or GPT-2 families.
Derived quantities (parameter count, per-layer linear shapes, KV elements per token) are properties.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from base.errors import SpecError
from base.specio import from_mapping, read_json, read_yaml, rng

__all__ = ["ModelSpec", "LinearShape", "get_model", "list_models", "model_from_hf_config", "SPEC_DIR"]

SPEC_DIR = Path(__file__).with_name("specs")


@dataclass(frozen=True)
class LinearShape:
    """One linear layer of a transformer block: y[out] = W[out, in] @ x[in] (+ bias)."""

    name: str
    in_features: int
    out_features: int
    bias: bool

    @property
    def weight_elems(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a decoder-only transformer LM.

    Sizes are element counts; `head_dim` is per attention head. `learned_position_offset` is the number of extra
    rows in a learned position table (OPT reserves 2).
    """

    name: str
    family: Literal["llama", "mistral", "opt", "gpt2"]
    # upper bounds far beyond any published model keep per-layer and per-head work finite (issue 41)
    num_layers: int = field(metadata=rng(ge=1, le=10_000))
    hidden_size: int = field(metadata=rng(ge=1, le=2**20))
    num_heads: int = field(metadata=rng(ge=1, le=65_536))
    num_kv_heads: int = field(metadata=rng(ge=1, le=65_536))
    head_dim: int = field(metadata=rng(ge=1, le=65_536))
    ffn_hidden_size: int = field(metadata=rng(ge=1))
    ffn_type: Literal["swiglu", "gelu", "relu"]
    vocab_size: int = field(metadata=rng(ge=1))
    max_position_embeddings: int = field(metadata=rng(ge=1, le=2**24))
    norm: Literal["rmsnorm", "layernorm"]
    norm_eps: float = field(metadata=rng(gt=0, lt=1))
    positional: Literal["rope", "learned"]
    tied_embeddings: bool
    source: str
    rope_theta: float | None = field(default=None, metadata=rng(gt=0))
    attention_bias: bool = False
    mlp_bias: bool = False
    learned_position_offset: int = field(default=0, metadata=rng(ge=0))
    sliding_window: int | None = field(default=None, metadata=rng(ge=1))

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise SpecError(
                f"model {self.name!r}: num_heads {self.num_heads} is not a multiple of num_kv_heads "
                f"{self.num_kv_heads}; use a divisor of num_heads"
            )
        if self.positional == "rope" and self.rope_theta is None:
            raise SpecError(f"model {self.name!r}: rope positional encoding needs rope_theta; add it")
        if self.positional == "rope" and self.head_dim % 2:
            raise SpecError(f"model {self.name!r}: RoPE needs an even head_dim, got {self.head_dim}")

    # ---- derived -------------------------------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of K (and of V) per token per layer: num_kv_heads * head_dim (GQA-correct)."""
        return self.num_kv_heads * self.head_dim

    @property
    def gqa_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    @cached_property
    def block_linears(self) -> tuple[LinearShape, ...]:
        """The linear layers of one transformer block, in execution order."""
        h, ab, mb = self.hidden_size, self.attention_bias, self.mlp_bias
        attn = (
            LinearShape("q_proj", h, self.q_dim, ab),
            LinearShape("k_proj", h, self.kv_dim, ab),
            LinearShape("v_proj", h, self.kv_dim, ab),
            LinearShape("o_proj", self.q_dim, h, ab),
        )
        mlp: tuple[LinearShape, ...]
        if self.ffn_type == "swiglu":
            mlp = (
                LinearShape("gate_proj", h, self.ffn_hidden_size, mb),
                LinearShape("up_proj", h, self.ffn_hidden_size, mb),
                LinearShape("down_proj", self.ffn_hidden_size, h, mb),
            )
        else:
            mlp = (LinearShape("fc1", h, self.ffn_hidden_size, mb), LinearShape("fc2", self.ffn_hidden_size, h, mb))
        return attn + mlp

    @property
    def lm_head(self) -> LinearShape:
        return LinearShape("lm_head", self.hidden_size, self.vocab_size, False)

    @property
    def _norm_params(self) -> int:
        return self.hidden_size * (2 if self.norm == "layernorm" else 1)

    @property
    def block_params(self) -> int:
        """Parameters of one transformer block (linears, biases, two norms)."""
        lin = sum(l.weight_elems + (l.out_features if l.bias else 0) for l in self.block_linears)
        return lin + 2 * self._norm_params

    @property
    def embedding_params(self) -> int:
        pos = 0
        if self.positional == "learned":
            pos = (self.max_position_embeddings + self.learned_position_offset) * self.hidden_size
        return self.vocab_size * self.hidden_size + pos

    @property
    def param_count(self) -> int:
        """Total parameters, counting a tied LM head once."""
        head = 0 if self.tied_embeddings else self.lm_head.weight_elems
        return self.embedding_params + self.num_layers * self.block_params + self._norm_params + head

    @property
    def kv_elems_per_token(self) -> int:
        """K and V elements one token adds to the cache, all layers together."""
        return 2 * self.num_layers * self.kv_dim

    def linear_flops_per_token(self) -> int:
        """Multiply-add FLOPs (2 per MAC) of all linear layers, LM head included, for one token."""
        return 2 * (self.num_layers * sum(l.weight_elems for l in self.block_linears) + self.lm_head.weight_elems)


# ---- registry ------------------------------------------------------------------------------------------------
def list_models() -> list[str]:
    """Names of the shipped model specs."""
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


def _load_yaml_spec(path: Path) -> ModelSpec:
    return from_mapping(ModelSpec, read_yaml(path), str(path))


def _hf_get(cfg: dict, where: str, *keys: str, default=dataclasses.MISSING):
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    if default is dataclasses.MISSING:
        raise SpecError(f"{where}: missing key {keys[0]!r}; a {cfg.get('model_type', '?')} config.json needs it")
    return default


def _head_dim(hidden: object, heads: object, where: str) -> object:
    """hidden // heads, refusing a hidden_size that the heads do not divide (no silent rounding of head_dim);
    other types pass through for ModelSpec's own type checks."""
    if isinstance(hidden, int) and isinstance(heads, int) and not isinstance(heads, bool) and heads > 0:
        if hidden % heads:
            raise SpecError(
                f"{where}: hidden_size {hidden} is not divisible by the {heads} attention heads; fix "
                "hidden_size or the head count (or give head_dim)"
            )
        return hidden // heads
    return 0


def model_from_hf_config(cfg: object, where: str, name: str | None = None) -> ModelSpec:
    """Convert a Hugging Face ``config.json`` mapping (Llama/Mistral/OPT/GPT-2 families) to a ModelSpec.

    Keys that do not affect the architecture (``architectures``, ``torch_dtype``...) are ignored, as they are many
    and vary by transformers version; keys that do are type- and range-checked by ModelSpec itself.
    """
    if not isinstance(cfg, dict):
        raise SpecError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    mt = cfg.get("model_type")
    given = cfg.get("_name_or_path")  # the Hugging Face repo id, when the file says; else the file's own path
    name = name or (given[:200] if isinstance(given, str) and given.strip() else where)
    source = f"Hugging Face config.json at {where}"
    g = lambda *k, **kw: _hf_get(cfg, where, *k, **kw)  # noqa: E731
    if mt in ("llama", "mistral"):
        heads = g("num_attention_heads")
        hidden = g("hidden_size")
        head_dim = g("head_dim", default=None)
        if head_dim is None:
            head_dim = _head_dim(hidden, heads, where) or None
        data = dict(
            name=name,
            family=mt,
            num_layers=g("num_hidden_layers"),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=g("num_key_value_heads", "num_attention_heads"),
            head_dim=head_dim,
            ffn_hidden_size=g("intermediate_size"),
            ffn_type="swiglu",
            vocab_size=g("vocab_size"),
            max_position_embeddings=g("max_position_embeddings"),
            norm="rmsnorm",
            norm_eps=g("rms_norm_eps", default=1e-6),
            positional="rope",
            rope_theta=g("rope_theta", default=10000.0),
            tied_embeddings=g("tie_word_embeddings", default=False),
            attention_bias=g("attention_bias", default=False),
            mlp_bias=g("mlp_bias", default=False),
            sliding_window=g("sliding_window", default=None),
            source=source,
        )
    elif mt == "opt":
        hidden = g("hidden_size")
        proj = cfg.get("word_embed_proj_dim", hidden)
        if proj != hidden:
            raise SpecError(
                f"{where}: OPT with word_embed_proj_dim {proj} != hidden_size {hidden} (opt-350m) is "
                "not supported; use an OPT model whose embedding width equals hidden_size"
            )
        if cfg.get("do_layer_norm_before", True) is not True:
            raise SpecError(f"{where}: post-norm OPT (do_layer_norm_before=false) is not supported")
        heads = g("num_attention_heads")
        bias = g("enable_bias", default=True)
        data = dict(
            name=name,
            family="opt",
            num_layers=g("num_hidden_layers"),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=heads,
            head_dim=_head_dim(hidden, heads, where),
            ffn_hidden_size=g("ffn_dim"),
            ffn_type="relu",
            vocab_size=g("vocab_size"),
            max_position_embeddings=g("max_position_embeddings"),
            norm="layernorm",
            norm_eps=1e-5,
            positional="learned",
            learned_position_offset=2,
            tied_embeddings=g("tie_word_embeddings", default=True),
            attention_bias=bias,
            mlp_bias=bias,
            source=source,
        )
    elif mt == "gpt2":
        hidden = g("n_embd")
        heads = g("n_head")
        inner = g("n_inner", default=None)
        if inner is None and isinstance(hidden, int):
            inner = 4 * hidden
        data = dict(
            name=name,
            family="gpt2",
            num_layers=g("n_layer"),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=heads,
            head_dim=_head_dim(hidden, heads, where),
            ffn_hidden_size=inner,
            ffn_type="gelu",
            vocab_size=g("vocab_size"),
            max_position_embeddings=g("n_positions"),
            norm="layernorm",
            norm_eps=g("layer_norm_epsilon", default=1e-5),
            positional="learned",
            tied_embeddings=g("tie_word_embeddings", default=True),
            attention_bias=True,
            mlp_bias=True,
            source=source,
        )
    else:
        raise SpecError(f"{where}: unsupported model_type {mt!r}; supported: llama, mistral, opt, gpt2")
    return from_mapping(ModelSpec, data, where)


def get_model(name_or_path: str | Path) -> ModelSpec:
    """A shipped spec by exact name, or a spec from a path (our YAML, or a Hugging Face config.json).

    Raises SpecError listing the known names when the name is unknown.
    """
    text = str(name_or_path)
    if text in list_models():
        return _load_yaml_spec(SPEC_DIR / f"{text}.yaml")
    path = Path(text)
    if path.suffix == ".json" or path.is_dir() and (path / "config.json").is_file():
        cfg_path = path / "config.json" if path.is_dir() else path
        if not (cfg_path.exists() or cfg_path.is_symlink()):  # anything else: read_json says what is wrong
            raise SpecError(
                f"model config {cfg_path} not found; give a known model name "
                f"({', '.join(list_models())}) or a path to a config.json"
            )
        return model_from_hf_config(read_json(cfg_path), str(cfg_path))
    if path.suffix in (".yaml", ".yml"):
        if not (path.exists() or path.is_symlink()):
            raise SpecError(f"model spec {path} not found; check the path")
        return _load_yaml_spec(path)
    raise SpecError(
        f"unknown model {text!r}; use one of {', '.join(list_models())}, "
        "or a path to a Hugging Face config.json or a model YAML"
    )
