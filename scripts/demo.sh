#!/usr/bin/env bash
# The README's main job: set up (idempotent), then run the embedded offline mini-study.
#   scripts/demo.sh                      full mini-study (flags/demo/study.cfg, ~20 min on 2 cores)
#   scripts/demo.sh --quick              the same path, smaller (flags/demo/quick.cfg, ~5 min)
#   scripts/demo.sh --study_dir=runs/demo/<timestamp>    resume a half-finished study
# Other arguments go to transfer-study (see: .venv/bin/transfer-study --helpfull).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export TF_CPP_MIN_LOG_LEVEL=2
flagfile=flags/demo/study.cfg
if [ "${1:-}" = "--quick" ]; then
  flagfile=flags/demo/quick.cfg
  shift
fi
exec .venv/bin/transfer-study --flagfile="$flagfile" "$@"
