"""The base layer: error types, strict spec IO and safe output paths. It imports nothing else of the project;
every package may import it."""

from base.errors import FormatError, HwsimError, SpecError
from base.specio import from_mapping, read_json, read_yaml, rng, to_plain

__all__ = ["HwsimError", "SpecError", "FormatError", "from_mapping", "read_yaml", "read_json", "rng", "to_plain"]
