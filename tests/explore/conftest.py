"""tests/explore: make the local helper module (explore_sweep.py) importable under pytest's importlib mode."""

import sys
from pathlib import Path

_here = str(Path(__file__).resolve().parent)
if _here not in sys.path:
    sys.path.insert(0, _here)
