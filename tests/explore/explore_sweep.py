"""Synthetic FPGA sweep data shared by the tests/explore files: resources linear in lanes and head_dim, Fmax
falling with log2(lanes), on the LFE5U-85F."""

from __future__ import annotations

import json
import math
from pathlib import Path

AVAILABLE = {"lut": 83640, "ff": 83640, "dsp": 156, "bram": 208}


def sweep_file(tmp_path: Path) -> Path:
    """Synthetic sweep data: resources linear in lanes and head_dim, Fmax falling with log2(lanes)."""
    rows = [
        {
            "head_dim": d,
            "lanes": n,
            "fits": True,
            "lut": 2000 + 400 * n + 10 * d,
            "ff": 1500 + 300 * n,
            "dsp": 4 + n // 4,
            "bram": 6 + d // 64,
            "fmax_mhz": 110 - 6 * math.log2(n),
        }
        for d in (64, 128)
        for n in (2, 4, 8, 16)
    ]
    p = tmp_path / "sweep.json"
    p.write_text(
        json.dumps(
            {
                "format": "hwsim.fpga-sweep",
                "version": 1,
                "part": "LFE5U-85F-6BG381C",
                "design": "engine",
                "available": AVAILABLE,
                "provenance": {"command": "test"},
                "rows": rows,
            }
        )
    )
    return p
