"""Byte-level BPE tokenizer built from a GGUF file's vocabulary and merges (GPT-2 style, `tokenizers` package).

SmolLM2's GGUF declares `tokenizer.ggml.model = gpt2` and `tokenizer.ggml.pre = smollm`. llama.cpp's "smollm"
pre-tokenizer splits every digit on its own and then applies the GPT-2 regex (llama.cpp src/llama-vocab.cpp,
LLAMA_VOCAB_PRE_TYPE_SMOLLM); the HF tokenizer.json of SmolLM2 does the same with Digits(individual_digits) +
ByteLevel. Control tokens (token_type 3, e.g. `<|endoftext|>`, `<|im_start|>`) are matched as special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from base.errors import FormatError

__all__ = ["Tokenizer", "tokenizer_from_gguf_metadata", "tokenizer_from_json"]

_CONTROL = 3  # GGUF token_type for control tokens (gguf.TokenType.CONTROL)


@dataclass
class Tokenizer:
    """Thin wrapper around a `tokenizers.Tokenizer` with the model's BOS/EOS ids."""

    backend: object
    bos_id: int
    eos_id: int

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, bos: bool = False) -> list[int]:
        """Token ids of `text` (no BOS unless bos=True)."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if bos else list(ids)

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)


def tokenizer_from_gguf_metadata(metadata: dict) -> Tokenizer:
    """Build the tokenizer from GGUF metadata (`tokenizer.ggml.*` keys, as returned by `models.gguf.read_gguf`)."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise FormatError(f"tokenizer model {kind!r} is not supported; only GGUF 'gpt2' byte-level BPE is")
    tokens = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    types = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    pre = metadata.get("tokenizer.ggml.pre", "gpt2")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"), byte_level]
        )
    elif pre in ("gpt2", "default"):
        backend.pre_tokenizer = byte_level
    else:
        raise FormatError(f"GGUF pre-tokenizer {pre!r} is not supported; known: smollm, gpt2")
    backend.decoder = decoders.ByteLevel()
    specials = [AddedToken(tok, special=True, normalized=False) for tok, t in zip(tokens, types) if t == _CONTROL]
    backend.add_special_tokens(specials)
    return Tokenizer(
        backend=backend,
        bos_id=int(metadata.get("tokenizer.ggml.bos_token_id", 1)),
        eos_id=int(metadata.get("tokenizer.ggml.eos_token_id", 2)),
    )


def tokenizer_from_json(path, bos_id: int, eos_id: int, *, text: str | None = None) -> Tokenizer:
    """A `tokenizers` JSON file (a Hugging Face checkpoint's tokenizer.json) with the model's BOS/EOS ids; `text`
    gives the file's content directly (path then only names it in messages)."""
    from pathlib import Path

    from tokenizers import Tokenizer as HFTokenizer

    path = Path(path)
    if text is None and not path.is_file():
        raise FormatError(f"{path} does not exist; the model's tokenizer.json is needed to tokenize text")
    try:
        backend = HFTokenizer.from_str(text) if text is not None else HFTokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own exception types on a bad file
        raise FormatError(
            f"{path}: not a readable tokenizer.json ({str(exc).splitlines()[0][:120]}); re-export the tokenizer"
        ) from exc
    n = backend.get_vocab_size(with_added_tokens=True)
    for what, i in (("bos", bos_id), ("eos", eos_id)):
        if not 0 <= i < n:
            raise FormatError(f"{path}: {what} id {i} is outside the tokenizer's {n} tokens")
    return Tokenizer(backend=backend, bos_id=bos_id, eos_id=eos_id)
