"""GPU fidelity: `hwsim estimate` on a profiled GPU against end-to-end fp16 measurements of the same GPU.

Measured: tests/data/gpu_validation_<hardware>.json (decode steps and prefills of model shapes with random weights,
CUDA-graph replays, taken on the device; provenance inside). Predicted: `hwsim.estimate` with the shipped spec of
that hardware, whose operators are priced from its profile (hwsim/hardware/profiles/), fp16 scheme:

* decode step at context C: workload (batch, prompt_len = C - 1, gen_len = 1), the step attends C tokens;
* TTFT: workload (batch, prompt_len = P, gen_len = 1).

Transfer rows: the same measurements predicted from ANOTHER device's profile scaled by spec sheets (the spec named
in `TRANSFER`), which says how far a profile carries to hardware nobody profiled.

Goals (printed, not asserted): decode step MAE <= 5 %, max <= 10 %, mean signed within +-3 %; TTFT MAE <= 10 %.

Run: ``.venv/bin/python benchmarks/fidelity_gpu.py``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DATA = HERE.parent / "tests" / "data"
GOALS = {"decode step": {"mae": 0.05, "max": 0.10, "mean_signed": 0.03}, "TTFT": {"mae": 0.10}}


def _hardware(name: str, profile_of: str | None = None):
    """The shipped spec `name`; with `profile_of`, priced instead from that hardware's profile (transfer)."""
    from hwsim.hardware import HARDWARE_DIR, get_hardware

    hw = get_hardware(name)
    if profile_of is None or profile_of == name:
        return hw
    src = get_hardware(profile_of)
    if src.profile is None:
        return None
    return (
        dataclasses.replace(hw, profile=src.profile, profile_hardware=profile_of)
        if (Path(src.profile).is_file() and (HARDWARE_DIR / f"{name}.yaml").is_file())
        else None
    )


def _rows_for(doc: dict, hw, label: str, fidelity: str) -> list[dict]:
    from hwsim.estimate import estimate
    from hwsim.workload import Workload
    from models.spec import get_model
    from quant.scheme import get_scheme

    fp16 = get_scheme("fp16")
    out = []
    for r in doc["decode"]:
        m = get_model(r["model"])
        est = estimate(m, hw, fp16, Workload(batch=r["batch"], prompt_len=r["context"] - 1, gen_len=1))
        out.append(
            {
                "group": f"gpu decode step ({label})",
                "name": f"{r['model']} B={r['batch']} C={r['context']}",
                "predicted": est.decode_step_s[0],
                "measured": r["time_s"],
                "unit": "s",
                "fidelity": fidelity,
            }
        )
    for r in doc["prefill"]:
        m = get_model(r["model"])
        est = estimate(m, hw, fp16, Workload(batch=r["batch"], prompt_len=r["prompt"], gen_len=1))
        out.append(
            {
                "group": f"gpu TTFT ({label})",
                "name": f"{r['model']} B={r['batch']} P={r['prompt']}",
                "predicted": est.ttft_s,
                "measured": r["time_s"],
                "unit": "s",
                "fidelity": fidelity,
            }
        )
    for row in out:
        row["error"] = row["predicted"] / row["measured"] - 1.0
    return out


def validation_files() -> list[Path]:
    return sorted(DATA.glob("gpu_validation_*.json"))


def rows() -> list[dict]:
    """One row per committed measurement and prediction path: the device's own profile, the other devices'
    profiles transferred by spec sheets, and the plain roofline (the spec without its profile)."""
    from hwsim.hardware import list_hardware

    out: list[dict] = []
    files = validation_files()
    measured_on = {json.loads(p.read_text())["hardware"] for p in files}
    for path in files:
        doc = json.loads(path.read_text())
        name = doc["hardware"]
        own = _hardware(name)
        if own.profile is not None:
            out += _rows_for(doc, own, f"{name}, its profile", "analytical+profile")
        for other in sorted(measured_on | {"h100-sxm", "h200-sxm"}):
            if other == name or other not in list_hardware():
                continue
            hw = _hardware(name, profile_of=other)
            if hw is not None and own.profile_hardware != other:
                out += _rows_for(doc, hw, f"{name}, {other} profile transferred", "analytical+profile transfer")
        roof = dataclasses.replace(own, profile=None, profile_hardware=None)
        out += _rows_for(doc, roof, f"{name}, roofline (no profile)", "analytical")
    return out


def main() -> int:
    rs = rows()
    if not rs:
        print("no GPU validation data (tests/data/gpu_validation_*.json)")
        return 1
    print(f"{'group':<52} {'case':<30} {'predicted':>11} {'measured':>11} {'error':>8}")
    for r in rs:
        print(
            f"{r['group']:<52} {r['name']:<30} {r['predicted'] * 1e3:9.3f}ms {r['measured'] * 1e3:9.3f}ms "
            f"{r['error'] * 100:+7.1f}%"
        )
    print()
    print(f"{'group':<52} {'n':>3} {'MAE':>7} {'max':>7} {'signed':>7}  goal")
    from fidelity import summarise  # the one definition of the per-group errors

    for s in summarise(rs):
        kind = "decode step" if "decode" in s["group"] else "TTFT"
        goal = GOALS[kind]
        ok = (
            s["mae"] <= goal["mae"]
            and s["max"] <= goal.get("max", 1e9)
            and abs(s["mean_signed"]) <= goal.get("mean_signed", 1e9)
        )
        text = ", ".join(f"{k} {'<=' if k != 'mean_signed' else 'within +-'}{v * 100:.0f}%" for k, v in goal.items())
        print(
            f"{s['group']:<52} {s['n']:>3} {s['mae'] * 100:6.1f}% {s['max'] * 100:6.1f}% "
            f"{s['mean_signed'] * 100:+6.1f}%  {text}: {'met' if ok else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
