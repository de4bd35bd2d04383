"""pytest configuration of tests/cocotb: the ``cocotb_run`` fixture (builds are cached, see harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_here = str(Path(__file__).resolve().parent)
if _here not in sys.path:
    sys.path.insert(0, _here)

from harness import run_cocotb  # noqa: E402


@pytest.fixture
def cocotb_run(tmp_path):
    def _run(head_dim, lanes, scenarios):
        return run_cocotb(head_dim, lanes, scenarios, tmp_path)

    return _run
