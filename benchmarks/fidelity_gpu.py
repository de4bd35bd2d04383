"""GPU fidelity: `hwsim estimate` on a profiled GPU against end-to-end fp16 measurements of the same GPU.

Measured: tests/data/gpu_validation_<hardware>.json (decode steps and prefills of model shapes with random weights,
CUDA-graph replays, taken on the device; provenance inside). Predicted: `hwsim.estimate` with the shipped spec of
that hardware, whose operators are priced from its profile (hwsim/hardware/profiles/), fp16 scheme:

* decode step at context C: workload (batch, prompt_len = C - 1, gen_len = 1), the step attends C tokens;
* TTFT: workload (batch, prompt_len = P, gen_len = 1).

Transfer rows: the same measurements predicted from ANOTHER device's profile scaled by spec sheets, which says how
far a profile carries to hardware nobody profiled.

Leases: a validation file with a ``lease`` field was measured on another lease of the same GPU kind than the
shipped profile, so its rows are the error a user sees whose GPU is not the one profiled. `repeatability()` prints
the spread between leases themselves (the same cases and operators measured twice), the floor under any error bar.

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
    if src.profile is None or src.profile_hardware not in (None, profile_of):  # no profile of its own
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
        tag = f"{name}, another lease" if doc.get("lease") else name
        if own.profile is not None:
            out += _rows_for(doc, own, f"{tag}, shipped profile", "analytical+profile")
        for other in sorted(measured_on | {"h100-sxm", "h200-sxm"}):
            if other == name or other not in list_hardware():
                continue
            hw = _hardware(name, profile_of=other)
            if hw is not None and own.profile_hardware != other:
                out += _rows_for(doc, hw, f"{tag}, {other} profile transferred", "analytical+profile transfer")
        roof = dataclasses.replace(own, profile=None, profile_hardware=None)
        out += _rows_for(doc, roof, f"{tag}, roofline (no profile)", "analytical")
    return out


def _key(row: dict) -> tuple:
    return (row["model"], row["batch"], row.get("context", row.get("prompt")))


def _spread(ratios: list[float]) -> dict[str, float]:
    import statistics

    dev = sorted(abs(r - 1.0) for r in ratios)
    return {
        "n": len(ratios),
        "mean_signed": statistics.mean(r - 1.0 for r in ratios),
        "median_abs": statistics.median(dev),
        "p90_abs": dev[int(0.9 * (len(dev) - 1))],
        "max_abs": dev[-1],
    }


def repeatability() -> list[dict]:
    """The same measurement taken twice: end-to-end cases on two leases of one GPU kind (ratio of the later lease to
    the shipped profile's lease) and on the same GPU again (benchmarks/data/gpu_repeat_*.json), and every operator
    point of two profiles of that kind."""
    from hwsim.gpuprofile.profile import load_profile
    from hwsim.hardware import get_hardware

    out = []
    docs = [json.loads(p.read_text()) for p in validation_files()]
    for hwname in sorted({d["hardware"] for d in docs}):
        base = [d for d in docs if d["hardware"] == hwname and not d.get("lease")]
        other = [d for d in docs if d["hardware"] == hwname and d.get("lease")]
        for b in base:
            for o in other:
                out += _end_to_end(o, b, hwname, "lease 2 / lease 1")
        for rep in sorted((HERE / "data").glob(f"gpu_repeat_{hwname}*.json")):
            for o in other:
                out += _end_to_end(json.loads(rep.read_text()), o, hwname, f"same GPU again ({rep.stem})")
        shipped = get_hardware(hwname).profile
        for extra in sorted((HERE / "data").glob(f"gpu_profile_{hwname}_*.json")):
            if shipped is None:
                continue
            p1, p2 = json.loads(Path(shipped).read_text()), json.loads(extra.read_text())
            for op, tables in p2["ops"].items():
                t1 = {json.dumps(t["key"], sort_keys=True): t for t in p1["ops"].get(op, [])}
                ratios = []
                for t in tables:
                    u = t1.get(json.dumps(t["key"], sort_keys=True))
                    if u is None or u["axes"] != t["axes"]:
                        continue
                    flat2 = _flatten(t["time_s"])
                    flat1 = _flatten(u["time_s"])
                    ratios += [x / y for x, y in zip(flat2, flat1, strict=True) if x and y]
                if ratios:
                    out.append({"what": f"{hwname} operator {op}, {extra.stem} / shipped", **_spread(ratios)})
            # the other lease's validation predicted from its own lease's profile
            load_profile(extra)  # a valid profile document, or a one-line error
            hw = dataclasses.replace(get_hardware(hwname), profile=str(extra))
            for o in docs:
                if o["hardware"] == hwname and o.get("lease"):
                    rs = _rows_for(o, hw, "own lease", "analytical+profile")
                    for phase in ("decode", "TTFT"):
                        e = [r["predicted"] / r["measured"] for r in rs if phase in r["group"]]
                        if e:
                            what = f"{hwname} {phase}, lease 2 predicted from lease 2's profile"
                            out.append({"what": what, **_spread(e)})
    return out


def _end_to_end(later: dict, earlier: dict, hwname: str, label: str) -> list[dict]:
    """Spread of the ratios later / earlier over the end-to-end cases both documents measured, per phase."""
    out = []
    for phase in ("decode", "prefill"):
        a = {_key(r): r["time_s"] for r in earlier[phase]}
        ratios = [r["time_s"] / a[_key(r)] for r in later[phase] if _key(r) in a]
        if ratios:
            out.append({"what": f"{hwname} {phase}, end to end, {label}", **_spread(ratios)})
    return out


def _flatten(x) -> list:
    return [v for row in x for v in (row if isinstance(row, list) else [row])]


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
    rep = repeatability()
    if rep:
        print("\nrepeatability (the same measurement taken twice; ratio - 1)")
        print(f"{'what':<66} {'n':>5} {'signed':>7} {'median':>7} {'p90':>7} {'max':>7}")
        for r in rep:
            print(
                f"{r['what']:<66} {r['n']:>5} {r['mean_signed'] * 100:+6.1f}% {r['median_abs'] * 100:6.1f}% "
                f"{r['p90_abs'] * 100:6.1f}% {r['max_abs'] * 100:6.1f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
