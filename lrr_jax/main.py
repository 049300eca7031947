"""Train and evaluate LRR on a generated world: `python -m lrr_jax.main --config=configs/cater.py`.

With no flags: the tiny CPU demo on generated CATER: write the world with its TFDS builder and a tokenizer
(once, under <workdir>/data), train from the Grain pipeline, evaluate by greedy generation on the test split,
print a results table. Results go to `<workdir>/results.json`.
"""
import hashlib
import json
import pathlib
import time

from absl import app
from absl import flags
from absl import logging
from clu import parameter_overview
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax
import tqdm

from lrr_jax.convert import hf_opt
from lrr_jax.data import pipeline
from lrr_jax.data import prepare
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.evaluation import evaluator as evaluator_lib
from lrr_jax.inference import runs
from lrr_jax.models import lrr
from lrr_jax.train import checkpoint
from lrr_jax.train import distributed
from lrr_jax.train import metrics as metrics_lib
from lrr_jax.train import partitioning
from lrr_jax.train import trainer

config_flags.DEFINE_config_file("config", "configs/cater.py", "Experiment config file.")
flags.DEFINE_string("workdir", "workdirs/cater_demo", "Where the tokenizer and results are written.")


def data_dir(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> str:
  return str(pathlib.Path(config.data.data_dir or workdir / "data").absolute())


def build_data(config: ml_collections.ConfigDict, workdir: pathlib.Path):
  """Write the dataset (if missing: a generated world, or a released one from `data.manual_dir`) and its
  tokenizer (`data.tokenizer` if given, else a BPE trained on it); the train pipeline and the test source."""
  data_directory = data_dir(config, workdir)
  given_tokenizer = config.data.get("tokenizer") or config.model.get("init_from")  # else: a BPE on the data
  vocab_size = 0 if given_tokenizer else config.data.vocab_size
  directory = distributed.primary_first(lambda: prepare.prepare(  # written once, by process 0
      config.data.dataset, config.data.get("builder_config", "tiny"), data_directory, vocab_size,
      config.data.get("manual_dir") or None, **prepare.run_sizes(config)))
  builder = prepare.run_builder(config, data_directory)
  tokenizer_path = given_tokenizer or str(directory / "tokenizer.json")
  num_frames, resolution = runs.video_shape(config)
  pipeline_config = pipeline.PipelineConfig(
      tokenizer_path=tokenizer_path, variant=config.data.variant,
      max_length=config.data.max_length, num_frames=num_frames, resolution=resolution,
      batch_size=distributed.local_batch_size(config.batch_size), seed=config.seed,  # this process's rows
      brightness_jitter=config.data.brightness_jitter, worker_count=config.data.worker_count)
  train_data = pipeline.make_dataset([(config.data.dataset, builder.as_data_source("train"), 1.0)],
                                     pipeline_config, jax.process_index(), jax.process_count())
  test_source = builder.as_data_source(config.data.get("eval_split", "test"))
  return train_data, test_source, tokenizer_lib.load(tokenizer_path)


def stop_not_finite(what: str, checkpointer: checkpoint.Checkpointer) -> None:
  """Stop the run, keeping the checkpoints written so far (all finite: a non-finite state is never saved)."""
  checkpointer.close()
  latest = checkpointer.latest_step()
  kept = f"the last good checkpoint is step {latest} in {checkpointer.directory}" if latest is not None else (
      "no checkpoint was written yet")
  raise FloatingPointError(f"{what}; stopped, {kept}. Lower config.optimizer.lr or raise clip_norm.")


params_norm = jax.jit(optax.tree.norm)  # jitted: op by op, the first call costs seconds on a CPU


def initial_state(config, init, shardings):
  """A fresh train state; with `config.model.init_from`, its decoder is the local Hugging Face OPT's."""
  state = init(jax.random.key(config.seed))
  if not config.model.get("init_from"):
    return state
  _, pretrained = hf_opt.load_hf_opt(config.model.init_from)
  logging.info("Decoder initialised from %s", config.model.init_from)
  return state.replace(params=jax.device_put(hf_opt.insert_pretrained(state.params, pretrained),
                                             shardings.params))


def train(config, model, train_data, workdir: pathlib.Path, evaluator: evaluator_lib.Evaluator | None = None):
  """Sharded training with async checkpoints; resumes from <workdir>/ckpt; SIGTERM saves and stops."""
  optimizer = trainer.make_optimizer(config.optimizer)
  example = next(iter(train_data))
  example = {k: v for k, v in example.items() if k != "record_index"}
  mesh = partitioning.make_mesh(config.mesh.to_dict())
  init, step_fn, shardings = trainer.make_sharded_training(
      model, optimizer, trainer.learning_rate_schedule(config.optimizer), example, mesh,
      partitioning.DEFAULT_RULES, config.grad_accum_steps)
  data = iter(train_data)
  checkpointer = checkpoint.Checkpointer(workdir / "ckpt", config.checkpoint.every, config.checkpoint.keep)
  abstract = checkpoint.abstract_like(jax.eval_shape(init, jax.random.key(config.seed)), shardings)
  state = checkpointer.restore(abstract, data)
  start = 0 if state is None else int(state.step)
  state = initial_state(config, init, shardings) if state is None else state
  checkpointer.watch_sigterm()
  logging.info("Parameters:\n%s", parameter_overview.get_parameter_overview(state.params, include_stats=False))
  writer = metrics_lib.MetricWriter(workdir)
  last_time, last_step = time.time(), start
  progress = tqdm.trange(start, config.num_steps, initial=start, total=config.num_steps, desc="train", unit="step")
  metrics = {}
  with open(workdir / distributed.process_file_name("batches.jsonl"), "a") as batch_log:  # local rows
    for step in progress:
      batch = next(data)
      batch_log.write(json.dumps({"step": step, "record_index": batch.pop("record_index").tolist()}) + "\n")
      state, metrics = step_fn(state, partitioning.global_batch(batch, mesh))
      if (step + 1) % config.log_every == 0 or step + 1 == config.num_steps or checkpointer.preempted:
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
          stop_not_finite(f"Loss is {loss} at step {step + 1}", checkpointer)
        progress.set_postfix(loss=f"{loss:.3f}", acc=f"{float(metrics['token_accuracy']):.3f}")
        seconds = (time.time() - last_time) / max(step + 1 - last_step, 1)
        last_time, last_step = time.time(), step + 1
        writer.write_scalars(step + 1, {
            **{k: v for k, v in metrics.items() if k != "num_tokens"}, "step_time_s": seconds,
            "examples_per_s": config.batch_size / seconds,
            "tokens_per_s": float(metrics["num_tokens"]) / seconds})
      batch_log.flush()
      force = step + 1 == config.num_steps or checkpointer.preempted
      if checkpointer.save_due(step + 1, force) and not np.isfinite(float(params_norm(state.params))):
        stop_not_finite(f"Parameters are not finite after step {step + 1}", checkpointer)  # never saved
      checkpointer.maybe_save(step + 1, state, data, force=force)
      if checkpointer.preempted:
        checkpointer.close()
        writer.close()
        raise SystemExit(f"SIGTERM: saved step {step + 1} to {checkpointer.directory}; exiting.")
      if evaluator is not None:
        evaluate_during_training(config, evaluator, state.params, step + 1, writer)
  checkpointer.close()
  writer.close()
  return state, {k: float(v) for k, v in metrics.items()}


def max_positions(config: ml_collections.ConfigDict) -> int:
  return max(256, config.data.max_length + config.eval.max_new_tokens)


def params_checksum(params) -> str:
  """A digest of every parameter's bytes, to compare runs exactly."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()


def evaluate_during_training(config, evaluator, params, step: int, writer) -> None:
  """Every `config.eval.every` steps (0: never), the task's scores on `config.eval.num_examples` test records
  (0: all), as `eval/<metric>` in TensorBoard and metrics.jsonl."""
  if not config.eval.get("every", 0) or step % config.eval.every or step == config.num_steps:
    return
  scores, _ = evaluator(params, config.eval.get("num_examples", 0) or None)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in scores.items()})
  logging.info("Step %d eval: %s", step, ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))


def make_model(config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer) -> lrr.LRRModel:
  """The run's model (`runs.model_config`); its vocabulary and positions must hold the tokenizer and text."""
  pretrained = config.model.get("init_from")
  model_config = runs.model_config(config, max_positions(config), tokenizer.vocab_size if pretrained else 0)
  vocab = hf_opt.read_config(pretrained).vocab_size if pretrained else model_config.decoder.vocab_size
  where = "the OPT at config.model.init_from" if pretrained else "config.data.vocab_size"
  own_tokens = tokenizer.base_size if pretrained else tokenizer.vocab_size  # added tags get new rows
  if own_tokens > vocab:
    raise ValueError(f"The tokenizer {tokenizer.source} has {own_tokens} tokens, more than the "
                     f"model's vocabulary of {vocab} ({where}).")
  text_length = config.data.max_length + config.eval.max_new_tokens
  if text_length > model_config.decoder.max_positions:
    raise ValueError(f"config.data.max_length + config.eval.max_new_tokens = {text_length} exceeds "
                     f"the {model_config.decoder.max_positions} positions of {where}.")
  return lrr.LRRModel(model_config)


def main(argv):
  del argv
  config = flags.FLAGS.config
  distributed.initialize(config.distributed)  # before any other JAX call, or multi-host runs hang
  workdir = pathlib.Path(flags.FLAGS.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  train_data, test_source, tokenizer = build_data(config, workdir)
  (workdir / distributed.process_file_name("run.json")).write_text(json.dumps(  # what `lrr_jax.infer` reads
      {"config": config.to_dict(), "tokenizer": tokenizer.source, "data_dir": data_dir(config, workdir), "max_positions": max_positions(config)},
      indent=2))
  model = make_model(config, tokenizer)
  evaluator = runs.make_evaluator(config, model, test_source, tokenizer)
  state, train_metrics = train(config, model, train_data, workdir, evaluator)
  scores, responses = evaluator(state.params)
  results = {"train": train_metrics, "eval": scores, "minutes": (time.time() - start) / 60,
             "params_checksum": params_checksum(state.params),
             "config": config.to_dict(), "example_response": responses[0]}
  (workdir / distributed.process_file_name("results.json")).write_text(json.dumps(results, indent=2))
  if config.data.dataset == "generated_cater":
    title = f"Generated CATER ({config.data.variant}, {'moving' if config.world.moving_camera else 'static'} camera)"
  else:
    title = f"{config.data.dataset} {config.data.get('builder_config', '')} ({config.data.variant})"
  print(f"\n{title}, {config.num_steps} steps, {results['minutes']:.1f} min")
  print("| metric | value |\n| --- | --- |")
  for key, value in scores.items():
    print(f"| {key} | {value:.3f} |")
  print(f"\nFirst eval response: {responses[0]}")


if __name__ == "__main__":
  app.run(main)
