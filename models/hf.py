"""A local Hugging Face checkpoint of the Llama / Mistral family as a models.llama.Llama, without transformers.

The directory holds ``config.json``, the weights as one ``model.safetensors`` or several ``*.safetensors`` shards
listed in ``model.safetensors.index.json`` (``weight_map``: tensor name -> shard file), and ``tokenizer.json`` (the
`tokenizers` library's format). Tensors may be fp16, bf16 or fp32; they are loaded as fp32. The HF Llama layout
(``model.layers.N.self_attn.q_proj.weight`` ...) already uses rotate-half RoPE, so no row permutation is needed.

Everything is checked before anything is loaded: the architecture (model_type llama or mistral, no rope scaling, no
biases), every shard named by the index, every tensor's presence, dtype and shape against config.json, and the
tokenizer against the vocabulary. Problems raise SpecError (configuration) or FormatError (files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from base.errors import FormatError, SpecError

__all__ = ["HFCheckpoint", "open_checkpoint", "load_checkpoint", "is_checkpoint_dir", "TOKENIZER_FILE"]

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
FAMILIES = ("llama", "mistral")
_DTYPES = ("F16", "BF16", "F32")
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # a buffer some older exports include; recomputed from rope_theta

_LAYER_MAP = {  # HF name inside model.layers.N -> models.llama name inside blocks.N
    "self_attn.q_proj.weight": "attn.q_proj.weight",
    "self_attn.k_proj.weight": "attn.k_proj.weight",
    "self_attn.v_proj.weight": "attn.v_proj.weight",
    "self_attn.o_proj.weight": "attn.o_proj.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def is_checkpoint_dir(path: str | Path) -> bool:
    """True for a directory holding a config.json (what `hwsim compress --model DIR` takes)."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file()


@dataclass(frozen=True)
class HFCheckpoint:
    """A validated checkpoint directory: its ModelSpec, where each tensor lives, its tokenizer's ids.

    tensors: HF tensor name -> (shard path, expected shape); bos_id/eos_id from config.json (else
    tokenizer_config.json's bos_token/eos_token).
    """

    path: Path
    spec: object  # models.spec.ModelSpec
    tensors: dict[str, tuple[Path, tuple[int, ...]]]
    bos_id: int
    eos_id: int

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: not a readable JSON file ({exc}); re-export the checkpoint's {what}") from exc
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object; re-export the checkpoint's {what}")
    return data


def _check_architecture(cfg: dict, where: str) -> None:
    mt = cfg.get("model_type")
    if mt not in FAMILIES:
        raise SpecError(
            f"{where}: model_type {mt!r} is not supported for compression; hwsim compress runs "
            f"Llama-family checkpoints (model_type {' or '.join(FAMILIES)})"
        )
    if cfg.get("rope_scaling"):
        raise SpecError(
            f"{where}: rope_scaling {cfg['rope_scaling']!r} is not supported (the model runs plain RoPE "
            "with rope_theta); use a checkpoint without rope scaling"
        )
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise SpecError(f"{where}: {key}=true is not supported (the model's projections have no bias)")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise SpecError(f"{where}: hidden_act {act!r} is not supported; the Llama MLP uses silu (SwiGLU)")


def _expected_shapes(spec, n_layers: int) -> dict[str, tuple[int, ...]]:
    h, v = spec.hidden_size, spec.vocab_size
    out = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not spec.tied_embeddings:
        out["lm_head.weight"] = (v, h)
    lin = {
        f"self_attn.{l.name}.weight"
        if l.name.endswith(("q_proj", "k_proj", "v_proj", "o_proj"))
        else f"mlp.{l.name}.weight": (l.out_features, l.in_features)
        for l in spec.block_linears
    }
    for i in range(n_layers):
        for name, shape in lin.items():
            out[f"model.layers.{i}.{name}"] = shape
        out[f"model.layers.{i}.input_layernorm.weight"] = (h,)
        out[f"model.layers.{i}.post_attention_layernorm.weight"] = (h,)
    return out


def _weight_map(path: Path) -> dict[str, Path]:
    """tensor name -> shard file, from the index (several shards) or the single file; FormatError if one is missing."""
    index = path / INDEX_FILE
    if index.is_file():
        wm = _read_json(index, INDEX_FILE).get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise FormatError(f"{index}: no 'weight_map' object; re-export the checkpoint's index")
        shards = {}
        for name, shard in wm.items():
            f = path / str(shard)
            if not f.is_file():
                raise FormatError(
                    f"{path}: shard {shard!r} listed in {INDEX_FILE} (for tensor {name!r}) is missing; "
                    "download every shard of the checkpoint"
                )
            shards[name] = f
        return shards
    single = path / SINGLE_FILE
    files = sorted(path.glob("*.safetensors"))
    if not single.is_file():
        if files:
            raise FormatError(
                f"{path}: {len(files)} *.safetensors files but no {INDEX_FILE}; add the index that maps "
                "tensors to shards"
            )
        raise FormatError(f"{path}: no {SINGLE_FILE} and no {INDEX_FILE}; the checkpoint's weights are missing")
    from safetensors import safe_open

    try:
        with safe_open(str(single), framework="np") as f:
            names = list(f.keys())
    except Exception as exc:  # safetensors raises assorted errors on a bad header
        raise FormatError(f"{single}: not a readable safetensors file ({exc}); re-download it") from exc
    return dict.fromkeys(names, single)


def _shard_headers(files: set[Path]) -> dict[Path, dict]:
    """The JSON header of each safetensors file (dtype and shape of every tensor), read without loading tensors."""
    out = {}
    for f in files:
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if n <= 0 or n > f.stat().st_size - 8:
                    raise ValueError(f"header length {n}")
                out[f] = json.loads(fh.read(n))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"{f}: not a readable safetensors file ({exc}); re-download it") from exc
    return out


def _token_id(cfg: dict, tok_cfg: dict, tok, key: str, where: str, vocab: int) -> int:
    """config.json's `<key>_token_id`, else the id of tokenizer_config.json's `<key>_token` in the tokenizer."""
    v = cfg.get(f"{key}_token_id")
    if isinstance(v, list) and v:
        v = v[0]
    if v is None:
        t = tok_cfg.get(f"{key}_token")
        t = t.get("content") if isinstance(t, dict) else t
        v = tok.token_to_id(t) if isinstance(t, str) else None
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < vocab:
        raise SpecError(
            f'{where}: no usable {key}_token_id (got {v!r}); add "{key}_token_id" to config.json '
            f"(an id below vocab_size {vocab})"
        )
    return v


def open_checkpoint(path: str | Path, *, n_layers: int | None = None) -> HFCheckpoint:
    """Validate a checkpoint directory (see module docstring) without loading any tensor."""
    from models.spec import model_from_hf_config

    path = Path(path)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise SpecError(f"{path}: no {CONFIG_FILE}; pass a Hugging Face checkpoint directory")
    cfg = _read_json(cfg_path, CONFIG_FILE)
    _check_architecture(cfg, str(cfg_path))
    spec = model_from_hf_config(cfg, str(cfg_path), name=path.name)
    if spec.head_dim * spec.num_heads != spec.hidden_size:
        raise SpecError(f"{cfg_path}: head_dim * num_attention_heads != hidden_size is not supported")
    layers = spec.num_layers if n_layers is None else n_layers
    if not 1 <= layers <= spec.num_layers:
        raise SpecError(f"--layers {layers} exceeds the model's {spec.num_layers} layers")
    wmap = _weight_map(path)
    expected = _expected_shapes(spec, spec.num_layers)
    headers = _shard_headers(set(wmap.values()))
    tensors: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for name, shape in expected.items():
        f = wmap.get(name)
        if f is None:
            raise FormatError(
                f"{path}: tensor {name!r} is missing from the checkpoint (config.json implies it); the "
                "checkpoint is incomplete or of another architecture"
            )
        h = headers[f].get(name)
        if not isinstance(h, dict):
            raise FormatError(f"{f}: tensor {name!r} is listed in {INDEX_FILE} but not stored in this shard")
        if h.get("dtype") not in _DTYPES:
            raise FormatError(f"{f}: tensor {name!r} has dtype {h.get('dtype')!r}; supported: fp16, bf16, fp32")
        if tuple(h.get("shape", ())) != shape:
            raise FormatError(
                f"{f}: tensor {name!r} has shape {list(h.get('shape', ()))} but config.json implies "
                f"{list(shape)}; config.json and the weights do not belong together"
            )
        tensors[name] = (f, shape)
    extra = [
        n
        for n in wmap
        if n not in expected
        and not n.endswith(_IGNORED_SUFFIXES)
        and not (n == "lm_head.weight" and spec.tied_embeddings)
    ]
    if extra:
        raise FormatError(
            f"{path}: tensors the Llama layout does not have: {sorted(extra)[:4]}; the checkpoint is of "
            "another architecture (biases, extra modules) and cannot be run"
        )
    # keep only the layers asked for (the spec keeps its own count; callers replace it)
    tensors = {n: v for n, v in tensors.items() if not n.startswith("model.layers.") or int(n.split(".")[2]) < layers}
    tok_cfg = (
        _read_json(path / "tokenizer_config.json", "tokenizer_config.json")
        if (path / "tokenizer_config.json").is_file()
        else {}
    )
    tok = _tokenizer_backend(path / TOKENIZER_FILE)
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    if n_tok > spec.vocab_size:
        raise FormatError(
            f"{path / TOKENIZER_FILE}: the tokenizer has {n_tok} tokens but config.json's vocab_size is "
            f"{spec.vocab_size}; the tokenizer does not belong to this checkpoint"
        )
    bos = _token_id(cfg, tok_cfg, tok, "bos", str(cfg_path), spec.vocab_size)
    eos = _token_id(cfg, tok_cfg, tok, "eos", str(cfg_path), spec.vocab_size)
    return HFCheckpoint(path=path, spec=spec, tensors=tensors, bos_id=bos, eos_id=eos)


def _tokenizer_backend(path: Path):
    from models.tokenizer import tokenizer_from_json

    if not path.is_file():
        raise FormatError(
            f"{path.parent}: no {TOKENIZER_FILE}; the checkpoint needs its tokenizer (the `tokenizers` JSON format)"
        )
    return tokenizer_from_json(path, 0, 0).backend


def load_checkpoint(path: str | Path, *, n_layers: int | None = None):
    """(Llama fp32 in eval mode, models.tokenizer.Tokenizer, ModelSpec with num_layers = the layers kept) of a local
    Hugging Face checkpoint; n_layers keeps only the first layers."""
    import dataclasses

    import torch
    from safetensors import safe_open

    from models.llama import Llama, LlamaConfig
    from models.tokenizer import tokenizer_from_json

    ck = open_checkpoint(path, n_layers=n_layers)
    spec = ck.spec if n_layers is None else dataclasses.replace(ck.spec, num_layers=n_layers)
    cfg = LlamaConfig.from_spec(spec)
    model = Llama(cfg)
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name, (f, _) in ck.tensors.items():
        by_file.setdefault(f, []).append(name)
    for f, names in by_file.items():
        with safe_open(str(f), framework="pt") as fh:
            for name in names:
                state[_local_name(name)] = fh.get_tensor(name).to(torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:  # open_checkpoint checked every name; this guards the name mapping itself
        raise FormatError(
            f"{ck.path}: weights do not match the Llama layout: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )
    model.eval().requires_grad_(False)
    tok = tokenizer_from_json(ck.tokenizer_path, ck.bos_id, ck.eos_id)
    return model, tok, spec


def _local_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "embed.weight"
    if hf == "model.norm.weight":
        return "norm.weight"
    if hf == "lm_head.weight":
        return hf
    _, _, i, rest = hf.split(".", 3)
    return f"blocks.{i}.{_LAYER_MAP[rest]}"
