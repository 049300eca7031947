#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: every worker (host) runs one JAX process of one global mesh.
#
#   TPU_NAME=lrr ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 CONFIG=configs/cater.py WORKDIR=gs://my-bucket/cater \
#       bash launch/tpu_vm.sh [--dry-run] [--config.key=value ...]
#
# STEPS (comma-separated, default all): create (the TPU VM, only if `describe` does not find it), copy (this
# working tree, without .git, .venv, workdirs, logs, as a tarball to every worker), install (a venv with
# `pip install -e .` and jax[tpu]), run (lrr_jax.main on all workers with --config.distributed.enabled=True: JAX
# reads the coordinator and process ids from the TPU metadata; each worker tees its output to
# ~/lrr_jax_train.log), fetch (every worker's log, and process 0's results.json, into LOGS_DIR).
# --dry-run prints every command instead of running it, as if the TPU VM did not exist yet.
# WORKDIR (required) is where every worker reads and writes the run: a gs:// bucket path (checkpoints, metrics,
# run.json, results; the data under WORKDIR/data unless --config.data.data_dir says otherwise), or an absolute
# path of a filesystem all workers share (NFS, a gcsfuse mount). A relative path would give each worker its own
# disk, and is refused. The OPT weights, tokenizer and manual_dir may be gs:// paths too (config keys).
set -euo pipefail
cd "$(dirname "$0")/.."

TPU_NAME=${TPU_NAME:-lrr-jax}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
PROJECT=${PROJECT:-}
SPOT=${SPOT:-0}
CONFIG=${CONFIG:-configs/cater.py}
WORKDIR=${WORKDIR:-}
REMOTE_DIR=${REMOTE_DIR:-lrr_jax}
LOGS_DIR=${LOGS_DIR:-logs/$TPU_NAME}
STEPS=${STEPS:-create,copy,install,run,fetch}
PYTHON=${PYTHON:-python3.11}  # installed with apt on the worker if missing (the base image has 3.10)
JAX_TPU=${JAX_TPU:-jax[tpu]>=0.10.2,<0.11}
TARBALL=${TARBALL:-/tmp/$TPU_NAME-code.tar.gz}

DRY_RUN=0
OVERRIDES=()
for arg in "$@"; do
  case $arg in
    --dry-run|--dry_run) DRY_RUN=1 ;;
    --config.*) OVERRIDES+=("$arg") ;;
    *) echo "tpu_vm.sh: unknown argument $arg (expected --dry-run or --config.key=value overrides)" >&2; exit 2 ;;
  esac
done

quote() {  # the arguments as one shell line, quoted as Python's shlex.join quotes them
  local words=() word
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then words+=("$word"); else words+=("'${word//\'/\'\"\'\"\'}'"); fi
  done
  echo "${words[*]}"
}

run() {  # run a command, or print it under --dry-run
  if (( DRY_RUN )); then quote "$@"; else "$@"; fi
}

has_step() { [[ ,$STEPS, == *,$1,* ]]; }

num_workers() {  # hosts of a slice: v2/v3/v4/v5p-N count TensorCores (8 per host), v5e/v6e-N chips (4 per host)
  local family=${ACCELERATOR_TYPE%-*} size=${ACCELERATOR_TYPE##*-}
  case $family in
    v2|v3|v4|v5p) echo $(( size > 8 ? size / 8 : 1 )) ;;
    v5litepod|v5e|v6e) echo $(( size > 8 ? size / 4 : 1 )) ;;
    *) echo "tpu_vm.sh: unknown accelerator type $ACCELERATOR_TYPE; set NUM_WORKERS" >&2; return 1 ;;
  esac
}
NUM_WORKERS=${NUM_WORKERS:-$(num_workers)}

TPU=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[[ -n $PROJECT ]] && WHERE+=(--project="$PROJECT")
if [[ $WORKDIR != gs://* && $WORKDIR != /* ]]; then
  echo "WORKDIR='$WORKDIR': give a gs:// path or an absolute path that every worker shares." >&2
  exit 2
fi

if has_step create; then
  if (( DRY_RUN )) || ! "${TPU[@]}" describe "$TPU_NAME" "${WHERE[@]}" >/dev/null 2>&1; then
    (( DRY_RUN )) && quote "${TPU[@]}" describe "$TPU_NAME" "${WHERE[@]}"
    CREATE=(create "$TPU_NAME" "${WHERE[@]}" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
    (( SPOT )) && CREATE+=(--spot)
    run "${TPU[@]}" "${CREATE[@]}"
  else
    echo "Reusing TPU VM $TPU_NAME ($ZONE)." >&2
  fi
fi

if has_step copy; then
  run tar -czf "$TARBALL" --exclude=./.git --exclude=./.venv --exclude=./workdirs --exclude=./logs .
  run "${TPU[@]}" scp "$TARBALL" "$TPU_NAME:lrr_jax_code.tar.gz" "${WHERE[@]}" --worker=all
  run "${TPU[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=all \
      --command="mkdir -p ~/$REMOTE_DIR && tar -xzf ~/lrr_jax_code.tar.gz -C ~/$REMOTE_DIR"
fi

if has_step install; then
  run "${TPU[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=all --command="(command -v $PYTHON >/dev/null || \
(sudo apt-get update -qq && sudo apt-get install -y -qq $PYTHON $PYTHON-venv)) && cd ~/$REMOTE_DIR && \
$PYTHON -m venv .venv && .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e . $(quote "$JAX_TPU")"
fi

if has_step run; then
  MAIN=(.venv/bin/python -m lrr_jax.main --config="$CONFIG" --workdir="$WORKDIR" --config.distributed.enabled=True
        "${OVERRIDES[@]}")
  run "${TPU[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=all \
      --command="set -o pipefail; cd ~/$REMOTE_DIR && $(quote "${MAIN[@]}") 2>&1 | tee ~/lrr_jax_train.log"
fi

if has_step fetch; then
  run mkdir -p "$LOGS_DIR"
  for (( worker = 0; worker < NUM_WORKERS; worker++ )); do
    run "${TPU[@]}" scp "$TPU_NAME:lrr_jax_train.log" "$LOGS_DIR/worker$worker.log" "${WHERE[@]}" --worker=$worker
  done
  if [[ $WORKDIR == gs://* ]]; then
    run gcloud storage cp "$WORKDIR/results.json" "$LOGS_DIR/results.json"
  else
    run "${TPU[@]}" scp "$TPU_NAME:$WORKDIR/results.json" "$LOGS_DIR/results.json" "${WHERE[@]}" --worker=0
  fi
fi
