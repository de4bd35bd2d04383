"""Workload: what is run (batch of sequences, prompt length, generated tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field

from base.errors import SpecError
from base.specio import rng

__all__ = ["Workload"]


@dataclass(frozen=True)
class Workload:
    """`batch` sequences, each a `prompt_len`-token prompt followed by `gen_len` generated tokens."""

    batch: int = field(default=1, metadata=rng(ge=1))
    prompt_len: int = field(default=1024, metadata=rng(ge=1))
    gen_len: int = field(default=1024, metadata=rng(ge=1))

    def __post_init__(self) -> None:
        for name in ("batch", "prompt_len", "gen_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"workload {name} must be an integer >= 1, got {value!r}")

    @property
    def final_context(self) -> int:
        return self.prompt_len + self.gen_len
