"""Single engine units as buildable designs, for timing closure unit by unit (``hwsim fpga build --design softmax``).

Each factory takes the flow's keyword-only ``head_dim``/``lanes`` and returns the unit; the thin top (fpga/_top.py)
registers every input and output, so the reported Fmax is the unit's own register-to-register timing.
"""

from __future__ import annotations

__all__ = ["softmax", "normalizer"]


def softmax(*, head_dim: int, lanes: int):
    """rtl.softmax.SoftmaxUnit with ``lanes`` exp lanes (head_dim is unused: the unit works on 64-token blocks)."""
    from rtl.softmax import SoftmaxUnit

    return SoftmaxUnit(lanes=lanes)


def normalizer(*, head_dim: int, lanes: int):
    """rtl.normalizer.Normalizer for ``head_dim`` outputs (lanes is unused: the normaliser is one lane wide)."""
    from rtl.normalizer import Normalizer

    return Normalizer(head_dim=head_dim)
