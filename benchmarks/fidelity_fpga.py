"""FPGA anchors: Llama-2-7B on the Alveo U280, predicted by both fidelities from sourced configurations.

* AccLLM (arXiv 2505.03745, Table VII [S]): 164 tokens/s, a simulated figure. Hardware u280-accllm, scheme
  ``accllm``. Its workload is not published: `hwsim estimate`'s default (prompt 1024, generate 1024).
* FlightLLM (FPGA'24), measured on the board: 55 tokens/s, and its off-chip bandwidth utilisation of 65.9% with
  always-on-chip decode. Hardware u280-flightllm, scheme ``flightllm`` (every number sourced from the paper and its
  public demo repository). Workload: the demo's on-board cases (github.com/FlightLLM/flightllm_test_demo
  fpga_implementation/: decode_token_128 and decode_token_512, one decode step at context 128 and 512, "to verify
  Figure 1 (55 token/s)"); the figure does not say which, so both are rows.

Nothing is fitted to these figures; shared/ANCHORS.md lists them. Run: ``.venv/bin/python benchmarks/fidelity_fpga.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwsim.estimate import estimate  # noqa: E402
from hwsim.hardware import get_hardware  # noqa: E402
from hwsim.workload import Workload  # noqa: E402
from models.spec import get_model  # noqa: E402
from quant.scheme import get_scheme  # noqa: E402

# (name, hardware, scheme, workload, published tok/s, published bandwidth utilisation or None, source)
ANCHORS = (
    (
        "AccLLM",
        "u280-accllm",
        "accllm",
        Workload(1, 1024, 1024),
        164.0,
        None,
        "AccLLM arXiv 2505.03745 Table VII [S] (simulated)",
    ),
    *(
        (
            "FlightLLM",
            "u280-flightllm",
            "flightllm",
            Workload(1, ctx - 1, 1),
            55.0,
            0.659,
            "FlightLLM FPGA'24: 55 tok/s measured on the U280; bandwidth utilisation 35.6% -> 65.9% (always-on-chip "
            f"decode); on-board case decode_token_{ctx}",
        )
        for ctx in (128, 512)
    ),
)
FIDELITIES = ("analytical", "cycle")


def rows() -> list[dict]:
    """One row per (anchor, figure, fidelity): name, predicted, measured (the published figure), unit, error_pct
    (predicted / published - 1, in %), fidelity, group, note."""
    model = get_model("llama-2-7b")
    out = []
    for name, hw_name, scheme_name, w, tok_s, util, source in ANCHORS:
        hw, scheme = get_hardware(hw_name), get_scheme(scheme_name)
        for fid in FIDELITIES:
            est = estimate(model, hw, scheme, w, fidelity=fid)
            note = f"{hw_name} + {scheme_name}, prompt {w.prompt_len} + gen {w.gen_len}; {source}"
            case = f"{name} Llama-2-7B, context {w.prompt_len + 1}" if w.gen_len == 1 else f"{name} Llama-2-7B"
            out.append(_row("fpga decode throughput", case, est.decode_tokens_per_s, tok_s, "tok/s", fid, note))
            if util is not None:
                out.append(
                    _row(
                        "fpga bandwidth utilisation",
                        f"{case}: off-chip bandwidth utilisation",
                        est.bandwidth_utilisation,
                        util,
                        "fraction of peak",
                        fid,
                        note,
                    )
                )
    return out


def _row(group: str, name: str, predicted: float, measured: float, unit: str, fidelity: str, note: str) -> dict:
    return {
        "group": group,
        "name": name,
        "predicted": predicted,
        "measured": measured,
        "unit": unit,
        "error_pct": 100.0 * (predicted / measured - 1.0),
        "fidelity": fidelity,
        "note": note,
    }


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="FPGA anchors (U280, Llama-2-7B, batch 1): predicted vs published", header_style="bold")
    for col in ("figure", "fidelity", "predicted", "published", "unit", "error"):
        t.add_column(col, justify="left" if col in ("figure", "fidelity", "unit") else "right")
    for r in rows():
        t.add_row(
            r["name"],
            r["fidelity"],
            f"{r['predicted']:.3g}",
            f"{r['measured']:.3g}",
            r["unit"],
            f"{r['error_pct']:+.1f}%",
        )
    con = Console(width=140)
    con.print(t)
    con.print(
        "goal: |error| <= 10% in both fidelities; configurations: hwsim/hardware/u280-*.yaml, quant/scheme.py "
        "presets (every number with its source)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
