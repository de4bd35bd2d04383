import pytest

from base.errors import FormatError
from models.smollm import load_tokenizer
from models.tokenizer import tokenizer_from_gguf_metadata


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


def test_roundtrip_and_bos(tok):
    text = "The 2024 Olympics, held in Paris — café ünïcode!\n\n  spaces"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode(text, bos=True) == [tok.bos_id, *ids]
    assert tok.bos_id == 1 and tok.eos_id == 2 and tok.vocab_size == 49152


def test_digits_split_individually(tok):
    # llama.cpp "smollm" pre-tokenizer: every digit is its own pre-token
    ids = tok.encode("12345")
    assert len(ids) == 5
    assert [tok.decode([i]) for i in ids] == list("12345")


def test_special_tokens_are_single_ids(tok):
    assert tok.encode("<|im_start|>") == [1]
    assert tok.encode("<|endoftext|>") == [0]


def test_rejects_other_models():
    with pytest.raises(FormatError, match="gpt2"):
        tokenizer_from_gguf_metadata({"tokenizer.ggml.model": "llama"})
