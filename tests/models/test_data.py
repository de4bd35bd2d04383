import pytest

from base.errors import FormatError, SpecError
from models import data
from models.smollm import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


def test_wikitext_found_and_sliced():
    text = data.read_wikitext2("test", max_bytes=20480)
    assert text.startswith(" \n = Robert <unk> = \n")
    assert len(text.encode()) <= 20480


def test_hwsim_shared_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HWSIM_SHARED", str(tmp_path))
    with pytest.raises(SpecError, match="wikitext-2"):
        data.wikitext2_path("test")
    monkeypatch.setenv("HWSIM_SHARED", str(tmp_path / "nope"))
    with pytest.raises(SpecError, match="HWSIM_SHARED"):
        data.shared_dir()


def test_unknown_split_and_text():
    with pytest.raises(SpecError, match="train"):
        data.wikitext2_path("train")
    with pytest.raises(SpecError, match="wikitext2"):
        data.read_text("c4")


def test_eval_windows(tok):
    wins = data.eval_windows(tok, data.read_wikitext2("test", 4000), seq_len=100)
    assert all(w[0] == tok.bos_id for w in wins)
    assert all(len(w) == 101 for w in wins[:-1]) and 2 <= len(wins[-1]) <= 101
    flat = [t for w in wins for t in w[1:]]
    assert flat == tok.encode(data.read_wikitext2("test", 4000))
    assert sum(len(w) - 1 for w in data.eval_windows(tok, data.read_wikitext2("test", 4000), 100, 150)) == 150


def test_calibration_is_wikipedia_not_eval_text(tok):
    wins, prov = data.calibration_windows(tok, n=3, seq_len=64, seed=1)
    assert len(wins) == 3 and all(len(w) == 64 and w[0] == tok.bos_id for w in wins)
    assert "Wikipedia" in prov["source"] and prov["seed"] == 1
    ev = tok.decode(wins[0][1:])
    assert ev not in data.read_wikitext2("test") and "@-@" not in ev
    assert wins == data.calibration_windows(tok, n=3, seq_len=64, seed=1)[0]  # deterministic


def test_read_text_file(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("Zürich — ünïcödé text\n", encoding="utf-8")
    assert data.read_text(str(p)) == "Zürich — ünïcödé text\n"
    p.write_bytes(b"caf\xe9")
    with pytest.raises(FormatError, match=r"not UTF-8 text \(invalid byte at offset 3\)"):
        data.read_text(str(p))
    with pytest.raises(SpecError, match="not a file"):
        data.read_text(str(tmp_path / "none.txt"))


def test_eval_windows_needs_one_window(tok):
    with pytest.raises(SpecError, match="mine.txt has 3 tokens, fewer than one window of 512"):
        data.eval_windows(tok, "a b c", seq_len=512, where="mine.txt")
    with pytest.raises(SpecError, match="fewer than one window"):
        data.eval_windows(tok, "", seq_len=8)
