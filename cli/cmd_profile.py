"""`hwsim profile`: measure a GPU operator profile (and, with --validate, end-to-end validation data) on CUDA."""

from __future__ import annotations

import sys

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="measure a GPU operator profile for `hwsim estimate` (needs CUDA)",
        description="Time, with CUDA graphs, every operator hwsim's GPU estimate is made of (linear "
        "layers, decode and prefill attention, norms, RoPE, activations, residual adds, "
        "KV writes, per-step overhead) over the shapes of every shipped model, and write "
        "one JSON profile with provenance. Name it in a hardware YAML ('profile: "
        "PATH') to price estimates from it.",
    )
    p.add_argument("--out", required=True, help="profile JSON to write (rewritten after each operator)")
    p.add_argument(
        "--hardware",
        default="auto",
        help="hardware spec name the profile is for (default auto: from the CUDA device's name)",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="OP,OP",
        help="measure only these operators (a partial profile, which `hwsim estimate` refuses)",
    )
    p.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="leave out the operator tables not started after this many seconds",
    )
    p.add_argument(
        "--validate",
        default=None,
        metavar="PATH",
        help="also measure end-to-end decode steps and prefills of the validation models into PATH",
    )
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.set_defaults(func=run)


def run(args) -> int:
    from hwsim.gpuprofile.run import profile_command, validate_command

    command = ["hwsim", *sys.argv[1:]]
    doc = profile_command(
        args.out,
        args.hardware,
        args.device,
        False,
        args.only.split(",") if args.only else None,
        command,
        args.deadline_s,
    )
    ops = {k: len(v) for k, v in doc["ops"].items()}
    print(
        f"profile of {doc['provenance'].get('device_name')} for {doc['hardware']}: {sum(ops.values())} tables in "
        f"{doc['elapsed_s']:.0f} s -> {args.out}"
        + ("" if doc["complete"] else f" (INCOMPLETE: {len(doc['errors'])} errors, see 'errors')")
    )
    if args.validate:
        v = validate_command(args.validate, args.hardware, args.device, False, None, None, command)
        print(f"validation: {len(v['decode'])} decode steps, {len(v['prefill'])} prefills -> {args.validate}")
    return 0 if doc["complete"] else 1
