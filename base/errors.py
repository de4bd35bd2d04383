"""The library's error types.

Every error a user can cause (bad name, malformed file, impossible configuration, corrupt artifact) is raised as
one of these, with a message that names the problem and the fix. The CLI prints such an error as one line and
exits with status 2; anything else is a bug.
"""

from __future__ import annotations

__all__ = ["HwsimError", "SpecError", "FormatError"]


class HwsimError(ValueError):
    """Base class of every error caused by user input."""


class SpecError(HwsimError):
    """A specification (model, hardware, compression scheme, workload, flag) is unknown or invalid."""


class FormatError(HwsimError):
    """Packed data or an artifact on disk is malformed, truncated or inconsistent."""
