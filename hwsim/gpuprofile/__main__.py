"""`python3 -m hwsim.gpuprofile profile|validate --out PATH`: the profiler without the `hwsim` CLI's dependencies.

Needs torch and optionally tqdm (progress bar). On a GPU machine without this project's dependencies (PyYAML),
export the grid and the model shapes here first and carry them along::

    python -m hwsim.gpuprofile export --out-dir .gpujob              # here: grid.json, shapes.json
    python3 -m hwsim.gpuprofile validate --out val.json --shapes .gpujob/shapes.json --hardware auto
    python3 -m hwsim.gpuprofile profile --out prof.json --grid .gpujob/grid.json --hardware auto

then commit prof.json as hwsim/hardware/profiles/<hardware>.json (named by the spec's ``profile`` field) and val.json
as tests/data/gpu_validation_<hardware>.json.
"""

from __future__ import annotations

import argparse
import sys

from base.errors import HwsimError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m hwsim.gpuprofile")
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("profile", help="measure an operator profile")
    a.add_argument("--out", required=True)
    a.add_argument("--hardware", default="h100-sxm", help="hwsim hardware spec name the profile is for")
    a.add_argument("--only", default=None, help="comma-separated operators (partial profile, for tests)")
    a.add_argument("--quick", action="store_true", help="a tiny grid (tests of the harness)")
    a.add_argument("--device", default="cuda")
    a.add_argument("--grid", default=None, help="grid JSON (from `export`) instead of the shipped models' grid")
    a.add_argument("--deadline-s", type=float, default=None, help="leave out the tables not started by then")
    b = sub.add_parser("validate", help="measure end-to-end decode steps and prefills")
    b.add_argument("--out", required=True)
    b.add_argument("--hardware", default="h100-sxm")
    b.add_argument("--models", default=None, help="comma-separated shipped model names")
    b.add_argument("--deadline-s", type=float, default=None)
    b.add_argument("--quick", action="store_true")
    b.add_argument("--device", default="cuda")
    b.add_argument("--shapes", default=None, help="model shapes JSON (from `export`) instead of the model specs")
    e = sub.add_parser("export", help="write grid.json and shapes.json for a machine without PyYAML")
    e.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    try:
        from hwsim.gpuprofile.run import export_command, profile_command, validate_command

        if args.what == "profile":
            profile_command(
                args.out,
                args.hardware,
                args.device,
                args.quick,
                args.only.split(",") if args.only else None,
                [sys.executable, "-m", "hwsim.gpuprofile", *(argv or sys.argv[1:])],
                args.deadline_s,
                args.grid,
            )
        elif args.what == "export":
            export_command(args.out_dir)
        else:
            validate_command(
                args.out,
                args.hardware,
                args.device,
                args.quick,
                args.models.split(",") if args.models else None,
                args.deadline_s,
                [sys.executable, "-m", "hwsim.gpuprofile", *(argv or sys.argv[1:])],
                args.shapes,
            )
    except HwsimError as exc:
        sys.stderr.write(f"hwsim: error: {' '.join(str(exc).split())}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
