#!/usr/bin/env bash
# The device check for a lent accelerator (one GPU, minutes of device time): the LRR train step at a mid size
# (OPT-125M LRR, 8 frames of 224 px, 8 x 512 tokens) in bf16 and f32 (step time, TFLOP/s per device, MFU), and
# each attention path's speed and agreement with the reference. Writes $OUT/device_check.json (or
# benchmarks/results/device_check.json); well under 8 minutes on an H100/H200 (most of it compiling twice).
#
#   bash benchmarks/device_check.sh              # on the device
#   bash benchmarks/device_check.sh --dry_run    # tiny sizes on a CPU: checks the script, not the device
#
# Uses the python on PATH (or $PYTHON) if it imports jax and lrr_jax; otherwise installs the package with
# jax[cuda12] into .venv-device (needs a package index). JAX_COMPILATION_CACHE_DIR may point at a cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c "import jax, lrr_jax" 2>/dev/null; then
  "$PYTHON" -m venv .venv-device
  PYTHON=.venv-device/bin/python
  if [[ " $* " == *" --dry_run "* ]]; then "$PYTHON" -m pip install -q -e . ; else
    "$PYTHON" -m pip install -q -e . "jax[cuda12]>=0.10.2,<0.11"; fi
fi
"$PYTHON" -c "import jax; print('devices:', jax.devices())"
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
timeout 450 "$PYTHON" -m benchmarks.device_check --out="$OUT_DIR/device_check.json" "$@"
