"""The train loop: sharded steps from the Grain pipeline, metrics, async checkpoints, exact resume, stops.

`train(config, model, train_data, workdir, evaluation)` (config: a `TrainConfig`) resumes from `<workdir>/ckpt` if it holds a checkpoint
(params, optimizer state, step, RNG and the data iterator, so the batches are an uninterrupted run's), saves
every `checkpoint.every` steps and at the end, saves and exits on SIGTERM, and stops on a non-finite loss or
parameters before they are saved. Evaluation and pretrained weights are handed in as callables, so training
needs nothing above it.
"""
import dataclasses
import hashlib
import json
import signal
from typing import Any, Callable

from absl import logging
from clu import parameter_overview
import jax
from jax.experimental import multihost_utils
import numpy as np
import optax
import tqdm

from lrr_jax import files
from lrr_jax.models import lrr
from lrr_jax.train import checkpoint
from lrr_jax.train import distributed
from lrr_jax.train import metrics as metrics_lib
from lrr_jax.train import micro_batching
from lrr_jax.train import partitioning
from lrr_jax.train import profiling
from lrr_jax.train import throughput
from lrr_jax.train import trainer

# evaluate(variables ({"params", maybe "batch_stats"}), num_examples or None for all) -> scores by name
Evaluate = Callable[[Any, int | None], dict[str, float]]
# pretrained(variables) -> the fresh variables with pretrained weights inserted (the entry point reads them)
Pretrained = Callable[[dict[str, Any]], dict[str, Any]]
# record(choice) keeps grad_accum_steps=0's choice beside the run's config (e.g. in run.json)
Record = Callable[[micro_batching.Choice], None]

# The sections, by names that the fields of the same names do not shadow.
OptimizerConfig, MeshConfig = trainer.OptimizerConfig, partitioning.MeshConfig
CheckpointConfig, ProfileConfig = checkpoint.CheckpointConfig, profiling.ProfileConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  """What the loop reads of a run config (`lrr_jax.run_config.RunConfig` is one)."""
  seed: int = 0  # initialisation, dropout and data order
  batch_size: int = 16  # global: each of P processes batches batch_size / P rows
  grad_accum_steps: int = 1  # micro-batches per batch (same update, less memory); 0: the fewest that fit
  device_memory_gib: float = 0.0  # memory per device that grad_accum_steps=0 fits in (0: the device's own limit)
  num_steps: int = 1400  # updates in all
  log_every: int = 50  # steps between logged train metrics
  peak_flops_per_device: float = 0.0  # bf16 peak FLOP/s for MFU (0: from the device kind)
  optimizer: OptimizerConfig = OptimizerConfig()  # AdamW, clipping and the learning-rate schedule
  mesh: MeshConfig = MeshConfig()  # the device mesh and the logical-axis rules
  checkpoint: CheckpointConfig = CheckpointConfig()  # how often checkpoints are saved, how many kept
  profile: ProfileConfig = ProfileConfig()  # a jax.profiler trace of a few steps


@dataclasses.dataclass(frozen=True)
class PeriodicEvaluation:
  """Evaluation during training: `evaluate` every `every` steps (0: never) on `num_examples` records (0: all)."""
  evaluate: Evaluate
  every: int = 0
  num_examples: int = 0

params_norm = jax.jit(optax.tree.norm)  # jitted: op by op, the first call costs seconds on a CPU


class Preemption:
  """SIGTERM (a preemption notice) seen by any process, agreed by all: with several processes `agreed()` is one
  all-gather of a flag, so every host stops at the same step and saves the same checkpoint (hosts that
  disagreed would run different collectives and hang). Every process must call `agreed()` equally often."""

  def __init__(self):
    self.signalled = False
    signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self.signalled = True

  def agreed(self) -> bool:
    if jax.process_count() == 1:
      return self.signalled
    return bool(np.max(multihost_utils.process_allgather(np.int32(self.signalled))))


def stop_not_finite(what: str, checkpointer: checkpoint.Checkpointer, state: Any, abstract: Any) -> None:
  """Stop the run, keeping the checkpoints written so far, and name the newest one that verifies."""
  jax.tree.map(lambda x: x.delete() if isinstance(x, jax.Array) else None, state)  # room to verify a step
  checkpointer.close()
  latest = checkpointer.last_good_step(abstract)
  kept = f"the last good checkpoint is step {latest} in {checkpointer.directory}" if latest is not None else (
      "no intact checkpoint was written yet")
  raise FloatingPointError(f"{what}; stopped, {kept}. Lower config.optimizer.lr or raise clip_norm.")


def initial_state(seed: int, init: Callable[..., Any], shardings: Any, pretrained: Pretrained | None = None) -> Any:
  """A fresh train state from `seed`, its variables passed through `pretrained` (e.g. a pretrained decoder
  or video streams inserted: `lrr_jax.run_objects.insert_pretrained`)."""
  state = init(jax.random.key(seed))
  if pretrained is None:
    return state
  variables = pretrained({"params": state.params, "batch_stats": state.batch_stats})
  if variables["params"] is state.params and variables["batch_stats"] is state.batch_stats:
    return state
  return state.replace(params=jax.device_put(variables["params"], shardings.params),
                       batch_stats=jax.device_put(variables["batch_stats"], shardings.batch_stats))


def params_checksum(params: Any) -> str:
  """A digest of every parameter's bytes, to compare runs exactly (every process must call it)."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(distributed.whole_arrays(params)):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()


def evaluate_during_training(evaluation: PeriodicEvaluation, num_steps: int, variables: Any, step: int,
                             writer: metrics_lib.MetricWriter) -> bool:
  """Every `evaluation.every` steps (0: never) before the last, the task's scores on `evaluation.num_examples`
  test records (0: all), as `eval/<metric>` in TensorBoard and metrics.jsonl. Returns whether it evaluated."""
  if not evaluation.every or step % evaluation.every or step == num_steps:
    return False
  scores = evaluation.evaluate(variables, evaluation.num_examples or None)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in scores.items()})
  logging.info("Step %d eval: %s", step, ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
  return True


def fitting_micro_batches(config: TrainConfig, model: lrr.LRRModel, example: dict[str, Any], mesh: Any,
                          build: Callable[[int], tuple], workdir: Any) -> micro_batching.Choice:
  """grad_accum_steps=0: the fewest micro-batches whose step (`build(k)`'s) fits a device, cached in
  <workdir>/micro_batches.json under everything that decides it (a resume compiles no candidate again)."""
  def measure(k: int) -> int:
    init, step_fn, shardings = build(k)
    state = checkpoint.abstract_like(jax.eval_shape(init, jax.random.key(0)), shardings)
    batch = {name: jax.ShapeDtypeStruct((x.shape[0] * jax.process_count(), *x.shape[1:]), x.dtype,
                                        sharding=partitioning.batch_sharding(mesh)) for name, x in example.items()}
    return micro_batching.peak_bytes(step_fn.lower(state, batch).compile())

  sizes = partitioning.mesh_sizes(config.mesh.shape(), jax.device_count())
  device = jax.local_devices()[0]
  key = dict(model=model.config, mesh=config.mesh, optimizer=config.optimizer, batch_size=config.batch_size,
             shapes={name: (x.shape, str(x.dtype)) for name, x in example.items()}, device_kind=device.device_kind,
             devices=jax.device_count(), jax=jax.__version__)
  return micro_batching.resolve(measure, config.batch_size // (sizes["data"] * sizes["fsdp"]),
                                micro_batching.memory_limit_bytes(device, config.device_memory_gib), key,
                                files.as_path(workdir) / distributed.process_file_name(micro_batching.CACHE_FILE))


class Throughput:
  """Step time (the first, compiling, step and evaluations excluded), tokens/s, TFLOP/s per device and MFU."""

  def __init__(self, config: TrainConfig, model: lrr.LRRModel, example: dict[str, Any]):
    self.batch_size, self.timer = config.batch_size, throughput.StepTimer()
    frames, height, width = example["video"].shape[1:4]
    self.model_flops = throughput.analytic_train_flops(model.config, config.batch_size, example["inputs"].shape[1],
                                                       frames, height, width) / jax.device_count()
    self.flops = None
    kind = jax.devices()[0].device_kind
    self.peak = throughput.peak_flops_per_device(kind, config.peak_flops_per_device)
    if self.peak is None:
      logging.info("No peak FLOP/s known for device kind %r: MFU is not reported (set "
                   "config.peak_flops_per_device to report it).", kind)

  def count_flops(self, step_fn: Callable, state: Any, batch: Any) -> None:
    """FLOPs per device of the step, from its compiled program (compiled here; the first call reuses it)."""
    self.flops, source = throughput.step_flops(step_fn.lower(state, batch).compile(), self.model_flops)
    logging.info("Step FLOPs per device: %.4g (%s; model FLOPs %.4g), peak %s FLOP/s per device.",
                 self.flops, source, self.model_flops, "unknown" if self.peak is None else f"{self.peak:.4g}")

  def scalars(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
    seconds = self.timer.per_step(step)
    if seconds is None:
      return {}
    return throughput.step_metrics(seconds, self.batch_size, float(metrics["num_tokens"]), self.flops, self.peak)


def _log_step(writer, progress, step: int, metrics, speed: dict[str, float]) -> None:
  postfix = dict(loss=f"{float(metrics['loss']):.3f}", acc=f"{float(metrics['token_accuracy']):.3f}")
  if speed:
    postfix.update(s_per_step=f"{speed['step_time_s']:.3g}", tok_s=f"{speed['tokens_per_s']:.4g}")
    postfix.update({k: f"{speed[k]:.3g}" for k in ("tflops_per_device", "mfu") if k in speed})
  progress.set_postfix(**postfix)
  writer.write_scalars(step, {**{k: v for k, v in metrics.items() if k != "num_tokens"}, **speed})


def train(config: TrainConfig, model: lrr.LRRModel, train_data: Any, workdir: Any,
          evaluation: PeriodicEvaluation | None = None, preemption: Preemption | None = None,
          pretrained: Pretrained | None = None, record: Record | None = None) -> tuple[Any, dict[str, float]]:
  """Sharded training with async checkpoints; resumes from <workdir>/ckpt (local or gs://); SIGTERM on any
  process saves the same step everywhere and stops (`SystemExit`). A fresh start's variables pass through
  `pretrained`; grad_accum_steps=0's choice of micro-batches is passed to `record`.

  Returns the final train state and the last logged metrics.
  """
  workdir = files.as_path(workdir)
  preemption = preemption or Preemption()
  optimizer = trainer.make_optimizer(config.optimizer)
  example = {k: v for k, v in next(iter(train_data)).items() if k != "record_index"}
  mesh = partitioning.make_mesh(config.mesh.shape())
  builds = {}  # the chosen k's jitted step is the one trained with: its compile is not repeated

  def build(k: int) -> tuple:
    builds[k] = builds.get(k) or trainer.make_sharded_training(
        model, optimizer, trainer.learning_rate_schedule(config.optimizer), example, mesh,
        partitioning.rules_from_config(config.mesh.rules), k)
    return builds[k]

  accumulation = config.grad_accum_steps
  if accumulation == micro_batching.AUTO:
    choice = fitting_micro_batches(config, model, example, mesh, build, workdir)
    accumulation = choice.steps
    if record is not None:
      record(choice)
  init, step_fn, shardings = build(accumulation)
  builds.clear()
  data = iter(train_data)
  checkpointer = checkpoint.Checkpointer(workdir / "ckpt", config.checkpoint.every, config.checkpoint.keep)
  abstract = checkpoint.abstract_like(jax.eval_shape(init, jax.random.key(config.seed)), shardings)
  state = checkpointer.restore(abstract, data)
  start = 0 if state is None else int(state.step)
  state = initial_state(config.seed, init, shardings, pretrained) if state is None else state
  logging.info("Parameters:\n%s", parameter_overview.get_parameter_overview(state.params, include_stats=False))
  writer = metrics_lib.MetricWriter(workdir)
  speed = Throughput(config, model, example)
  profiler = profiling.StepProfiler(config.profile, workdir)
  progress = tqdm.trange(start, config.num_steps, initial=start, total=config.num_steps, desc="train", unit="step")
  metrics = {}
  batch_log = workdir / distributed.process_file_name("batches.jsonl")  # this process's rows, every step
  logged = []
  for step in progress:
    batch = next(data)
    logged.append(json.dumps({"step": step, "record_index": batch.pop("record_index").tolist()}))
    batch = partitioning.global_batch(batch, mesh)
    if step == start:
      speed.count_flops(step_fn, state, batch)
    profiler.before(step)
    state, metrics = step_fn(state, batch)
    profiler.after(step, metrics)
    if step == start:  # compiled and run: timing starts here
      jax.block_until_ready(metrics)
      speed.timer.restart(step + 1)
    preempted = preemption.agreed()
    if (step + 1) % config.log_every == 0 or step + 1 == config.num_steps or preempted:
      loss = float(metrics["loss"])
      if not np.isfinite(loss):
        stop_not_finite(f"Loss is {loss} at step {step + 1}", checkpointer, state, abstract)
      _log_step(writer, progress, step + 1, metrics, speed.scalars(step + 1, metrics))
    force = step + 1 == config.num_steps or preempted
    saving = checkpointer.save_due(step + 1, force)
    if saving and not np.isfinite(float(params_norm(state.params))):
      stop_not_finite(f"Parameters are not finite after step {step + 1}", checkpointer, state, abstract)
    if saving or not files.is_remote(batch_log):  # an object store is written at saves only (no appends)
      files.append_lines(batch_log, logged)
      logged = []
    checkpointer.maybe_save(step + 1, state, data, force=force)
    if preempted:
      profiler.stop(state)
      checkpointer.close()
      writer.close()
      raise SystemExit(f"SIGTERM: saved step {step + 1} to {checkpointer.directory}; exiting.")
    if evaluation is not None and evaluate_during_training(evaluation, config.num_steps, state.variables, step + 1,
                                                           writer):
      speed.timer.restart(step + 1)  # step time excludes evaluations
  profiler.stop(state)
  files.append_lines(batch_log, logged)
  checkpointer.close()
  writer.close()
  return state, {k: float(v) for k, v in metrics.items()}
