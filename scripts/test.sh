#!/usr/bin/env bash
# Set everything up, then run the whole test suite, on every core (pytest-xdist; one file's
# tests stay on one worker, so a module's fixtures run once). UNIFLOW_TEST_WORKERS=0 runs it
# in this one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -n "${UNIFLOW_TEST_WORKERS:-auto}" --dist loadfile "$@"
