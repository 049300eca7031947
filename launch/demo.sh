#!/usr/bin/env bash
# The README's main job on a fresh machine: set up .venv (core dependencies only), then run the tiny LRR demo
# on generated CATER on the CPU (generate data, train, evaluate, print results). Extra flags go to lrr_jax.main.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/python -m lrr_jax.main --config=configs/cater.py --workdir=workdirs/cater_demo "$@"
