#!/usr/bin/env bash
# Set everything up, then register, promote, compare and load a real torch model end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/quickstart.py "$@"
