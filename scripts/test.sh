#!/usr/bin/env bash
# Set up (idempotent), lint (ruff check, ruff format --check: the habits CI keeps), then run the
# test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/ruff check transfer_tf tests benchmarks
.venv/bin/ruff format --check transfer_tf tests benchmarks
exec .venv/bin/python -m pytest "$@"
