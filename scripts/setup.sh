#!/usr/bin/env bash
# Create .venv (once) with uniflow and everything its tests need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.uniflow-deps
want=$(cat pyproject.toml requirements-dev.lock scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned to the CPU build (2.13.0); any other spec would pull gigabytes of CUDA.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  # The lock file pins every dependency, so pip does no resolver backtracking (the open
  # ranges of s3fs/aiobotocore/moto made `pip install -e .[dev]` take many minutes).
  .venv/bin/python -m pip install --quiet -r requirements-dev.lock
  # The distribution was named `uniflow` up to 0.2.0 (a name that belongs to another PyPI
  # project); drop that install record so only uniflow-registry provides the command.
  .venv/bin/python -m pip uninstall --quiet --yes uniflow >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
