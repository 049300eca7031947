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

from lrr_jax.data import encoding
from lrr_jax.data import pipeline
from lrr_jax.data import prepare
from lrr_jax.data import records
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.evaluation import answers as answers_eval
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.inference import generate as generate_lib
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
  """Write the generated world (if missing) with its tokenizer; the train pipeline and the test source."""
  world = config.world.to_dict()
  builder_config = config.data.get("builder_config", "tiny")
  directory = distributed.primary_first(lambda: prepare.prepare(  # written once, by process 0
      config.data.dataset, builder_config, data_dir(config, workdir), config.data.vocab_size,
      **prepare.run_sizes(config)))
  builder = prepare.builder_for(config.data.dataset, builder_config, data_dir(config, workdir),
                                **prepare.run_sizes(config))
  pipeline_config = pipeline.PipelineConfig(
      tokenizer_path=str(directory / "tokenizer.json"), variant=config.data.variant,
      max_length=config.data.max_length, num_frames=world["num_frames"], resolution=world["resolution"],
      batch_size=distributed.local_batch_size(config.batch_size), seed=config.seed,  # this process's rows
      brightness_jitter=config.data.brightness_jitter, worker_count=config.data.worker_count)
  train_data = pipeline.make_dataset([(config.data.dataset, builder.as_data_source("train"), 1.0)],
                                     pipeline_config, jax.process_index(), jax.process_count())
  return train_data, builder.as_data_source("test"), tokenizer_lib.load(directory / "tokenizer.json")


def stop_not_finite(what: str, checkpointer: checkpoint.Checkpointer) -> None:
  """Stop the run, keeping the checkpoints written so far (all finite: a non-finite state is never saved)."""
  checkpointer.close()
  latest = checkpointer.latest_step()
  kept = f"the last good checkpoint is step {latest} in {checkpointer.directory}" if latest is not None else (
      "no checkpoint was written yet")
  raise FloatingPointError(f"{what}; stopped, {kept}. Lower config.optimizer.lr or raise clip_norm.")


def train(config, model, train_data, workdir: pathlib.Path):
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
  state = init(jax.random.key(config.seed)) if state is None else state
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
      if checkpointer.save_due(step + 1, force) and not np.isfinite(float(optax.tree.norm(state.params))):
        stop_not_finite(f"Parameters are not finite after step {step + 1}", checkpointer)  # never saved
      checkpointer.maybe_save(step + 1, state, data, force=force)
      if checkpointer.preempted:
        checkpointer.close()
        writer.close()
        raise SystemExit(f"SIGTERM: saved step {step + 1} to {checkpointer.directory}; exiting.")
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


def evaluate(config, model, params, test_source, tokenizer):
  generator = generate_lib.Generator(model, config.data.max_length + config.eval.max_new_tokens,
                                     tokenizer.frame_markers(), tokenizer.token_id("<CONCLUSION>"))
  responses, labels, answers, metadata = [], [], [], []
  for start in tqdm.trange(0, len(test_source), config.eval.batch_size, desc="evaluate", unit="batch"):
    rows = [test_source[i] for i in range(start, min(start + config.eval.batch_size, len(test_source)))]
    examples = [records.read_example(r, config.data.variant, f"test record {start + i}") for i, r in enumerate(rows)]
    labels += [int(r["label"]) for r in rows]
    answers += [e.answer for e in examples]
    metadata += [records.read_metadata(r) for r in rows]
    prompts = [encoding.encode_prompt(e, tokenizer) for e in examples]
    prompt = generate_lib.left_pad([p for p, _ in prompts], [f for _, f in prompts], tokenizer.pad_id)
    video = np.stack([np.asarray(r["frames"]) for r in rows])
    sampled = generate_lib.generate(generator, {"params": params}, prompt, video, [[tokenizer.eos_id]],
                                    config.eval.max_new_tokens)
    tokens, lengths = np.asarray(sampled.tokens), np.asarray(sampled.lengths)
    responses += [tokenizer.decode(t[:n - 1] if n and t[n - 1] == tokenizer.eos_id else t[:n])
                  for t, n in zip(tokens, lengths)]
  if config.data.dataset == "generated_cater":
    return cater_eval.cater_scores(responses, np.asarray(labels)), responses
  groups = {key: [str(m.get(key)) for m in metadata] for key in ("split", "query_type") if key in metadata[0]}
  scores = answers_eval.answer_accuracy(responses, answers, groups)
  return dict(scores, chance=1.0 / 3), responses


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
  model_config = lrr.config_from_run(config.model.to_dict(), config.data.vocab_size, max_positions(config))
  model = lrr.LRRModel(model_config)
  state, train_metrics = train(config, model, train_data, workdir)
  scores, responses = evaluate(config, model, state.params, test_source, tokenizer)
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
