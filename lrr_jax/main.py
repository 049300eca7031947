"""Train and evaluate LRR: `python -m lrr_jax.main --config=configs/cater.py [--config.key=value ...]`.

With no flags: the tiny CPU demo on generated CATER: write the world with its TFDS builder and a tokenizer
(once, under <workdir>/data), train from the Grain pipeline (`lrr_jax.train.loop`), evaluate by greedy
generation on the test split, print a results table. Results go to `<workdir>/results.json`.

Before any work the config is typed and validated (`lrr_jax.run_config`, `lrr_jax.config_checks`): an unknown
key, from the file or the command line, is refused naming the closest known one. A workdir with a checkpoint is resumed,
unless the config changes its arithmetic (refused, naming the keys; `--config.resume_with_changes=True`
overrides); one finished (checkpoint at num_steps) is evaluated again, keeping its train metrics and earlier
results. `<workdir>/run.json` records every start: time, command line, config, step resumed from, changes.
Each evaluated record's scores go to `<workdir>/eval_examples.jsonl` (`lrr_jax.evaluation.outcomes`), named
with their count in results.json's `eval_examples`.
"""
import atexit
import datetime
import json
import pathlib
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
from ml_collections import config_flags

from lrr_jax import config_checks
from lrr_jax import run_config
from lrr_jax import run_objects
from lrr_jax import run_records
from lrr_jax import files
from lrr_jax.data import fingerprints
from lrr_jax.data import lease
from lrr_jax.evaluation import outcomes
from lrr_jax.evaluation import results_table
from lrr_jax.evaluation import sharding
from lrr_jax.train import checkpoint
from lrr_jax.train import distributed
from lrr_jax.train import loop
from lrr_jax.train import trainer

try:  # without --config, the default file is read here, with the command line's overrides
  config_flags.DEFINE_config_file("config", "configs/cater.py", "Experiment config file.")
except (AttributeError, KeyError) as error:  # an override of a key the file lacks
  sys.exit(run_config.override_error(sys.argv, error))
flags.DEFINE_string("workdir", "workdirs/cater_demo", "Where the tokenizer and results are written.")
flags.DEFINE_float("lease_stale_seconds", lease.DEFAULT_STALE_SECONDS,
                   "A workdir's lease not renewed for this long is stale: another run may take the workdir over.")
flags.DEFINE_bool("accept_changed_inputs", False, "Resume or evaluate again although an input fingerprinted in "
                  "run.json (tokenizer, pretrained weights, dataset) changed since.")


class ResultsNotSaved(OSError):
  """results.json (or eval_examples.jsonl) could not be written; the message names where they were kept."""


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with an unknown `--config.*` key named (ml_collections raises a bare `'key'` error)."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    raise app.UsageError(run_config.override_error(argv, e)) from e


def title(config: run_config.RunConfig) -> str:
  if config.data.mixture:
    parts = ", ".join(f"{s.name} {s.builder_config} (weight {s.weight:g})" for s in config.sources())
    return f"Mixture of {parts} ({config.data.variant})"
  if config.data.dataset == "generated_cater":
    camera = "moving" if config.world.get("moving_camera") else "static"
    return f"Generated CATER ({config.data.variant}, {camera} camera)"
  return f"{config.data.dataset} {config.data.builder_config} ({config.data.variant})"


def print_results(config: run_config.RunConfig, results: dict) -> None:
  """The scores as a Markdown table, grounding's per-frame and per-case scores folded into a row each
  (`results_table.table_rows`); a mixture's names the dataset of each metric ('all': the summary)."""
  print(f"\n{title(config)}, {results['step']} steps, {results['minutes']:.1f} min")
  names = [s.name for s in config.sources()] if config.data.mixture else []
  if names:
    print("| dataset | metric | value |\n| --- | --- | --- |")
    for key, value in results_table.table_rows(results["eval"]):
      name = next((n for n in names if key.startswith(f"{n}/")), "")  # '' for the summary
      print(f"| {name or 'all'} | {key[len(name) + 1:] if name else key} | {value} |")
  else:
    print("| metric | value |\n| --- | --- |")
    for key, value in results_table.table_rows(results["eval"]):
      print(f"| {key} | {value} |")
  print(f"\nFirst eval response: {results['example_response']}")


def by_dataset(config: run_config.RunConfig, scores: dict[str, float]) -> dict[str, dict[str, float]]:
  """A mixture's `<dataset>/<metric>` scores as {dataset: {metric: value}}."""
  return {s.name: {k[len(s.name) + 1:]: v for k, v in scores.items() if k.startswith(f"{s.name}/")}
          for s in config.sources()}


def response_results(responses: list[str] | dict[str, list[str]]) -> dict:
  """results.json's example response and this process's evaluated records (by dataset for a mixture)."""
  if isinstance(responses, dict):
    return {"example_response": {name: texts[0] for name, texts in responses.items() if texts},
            "evaluated_records": {name: sharding.my_records(len(texts)) for name, texts in responses.items()}}
  return {"example_response": responses[0], "evaluated_records": sharding.my_records(len(responses))}


def claim_workdir(workdir) -> None:
  """Take the workdir's lease (`lrr_jax.data.lease`) on process 0 before any work, released at exit; every
  process raises if another run holds it."""
  error = None
  if jax.process_index() == 0:
    try:
      atexit.register(lease.Lease(workdir, flags.FLAGS.lease_stale_seconds).acquire().release)
    except (lease.WorkdirInUse, NotADirectoryError) as e:
      error = e
  if jax.process_count() > 1 and not multihost_utils.broadcast_one_to_all(np.array(error is None)):
    error = error or lease.WorkdirInUse(f"Process 0 could not claim the workdir {workdir}: see its error.")
  if error is not None:
    raise error


def restore_finished(workdir, model, step: int) -> dict | None:
  """The variables of a finished run's final checkpoint; None if that step is damaged: the run then resumes
  from the newest intact checkpoint (the loop moves the damaged step aside) and trains the last steps again."""
  try:
    return checkpoint.restore_variables(workdir / "ckpt", run_objects.variable_shapes(model), step)[0]
  except checkpoint.ShapeMismatch:
    raise
  except checkpoint.CheckpointError as e:
    print(f"The final checkpoint of {workdir} (step {step}) is damaged ({e.kind}): {e}\nFalling back: "
          "resuming from the newest intact checkpoint.", flush=True)
    return None


def evaluate_finished(config: run_config.RunConfig, workdir, variables, evaluator,
                      step: int, earlier: dict | None) -> tuple[dict, list[dict]]:
  """Results and per-record lines of a run whose checkpoint is at (or past) config.num_steps: its `variables`
  evaluated again, the train metrics those of the `earlier` results (or of metrics.jsonl if the run stopped
  before writing any)."""
  print(f"{workdir} is finished: its checkpoint is at step {step} (config.num_steps={config.num_steps}); "
        "evaluating it again, training nothing.", flush=True)
  evaluation = evaluator.evaluate(trainer.model_variables(variables["params"], variables["batch_stats"]))
  train = earlier["train"] if earlier and earlier.get("train") else run_records.last_train_metrics(workdir, step)
  return ({"train": train, "eval": evaluation.scores, "params_checksum": loop.params_checksum(variables["params"]),
           **response_results(evaluation.responses)}, evaluation.examples)


def train_and_evaluate(config: run_config.RunConfig, workdir, model, train_data,
                       evaluator) -> tuple[dict, list[dict]]:
  """Train (or resume; a fresh start with the pretrained weights the config names), then evaluate: results and
  per-record lines; SIGTERM on any process saves, or ends the evaluation at its next batch with the scores so
  far (`partial`)."""
  preemption = loop.Preemption()
  evaluation = loop.PeriodicEvaluation(lambda variables, count: evaluator(variables, count, preemption.agreed)[0],
                                       config.eval.every, config.eval.num_examples)
  state, train_metrics = loop.train(config, model, train_data, workdir, evaluation, preemption,
                                    lambda variables: run_objects.insert_pretrained(config, variables),
                                    lambda choice: run_records.record_in_start(workdir,
                                                                               micro_batches=choice.record()))
  evaluation = evaluator.evaluate(state.variables, should_stop=preemption.agreed)
  return ({"train": train_metrics, "eval": evaluation.scores, "params_checksum": loop.params_checksum(state.params),
           **response_results(evaluation.responses)}, evaluation.examples)


def save_results(workdir, examples_file, examples: list[dict], results: dict) -> None:
  """Write eval_examples.jsonl, then results.json (atomically). If either fails, both are written to a folder
  under the temporary directory instead and ResultsNotSaved names it: nothing computed is lost."""
  try:
    outcomes.write(examples_file, examples)
    files.write_atomic(run_records.results_file(workdir), json.dumps(results, indent=2))
  except OSError as e:
    kept = pathlib.Path(tempfile.mkdtemp(prefix=f"lrr_jax_results_{time.strftime('%Y%m%d-%H%M%S')}_"))
    outcomes.write(kept / examples_file.name, examples)
    (kept / run_records.results_file(workdir).name).write_text(json.dumps(results, indent=2))
    raise ResultsNotSaved(f"Could not write the results into {workdir} ({e}); they are kept in {kept} "
                          "(and printed above).") from e


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # quiet by default (orbax logs at INFO); --verbosity=0 for INFO
    logging.set_verbosity(logging.WARNING)
  values = flags.FLAGS.config  # the ConfigDict of the file and the command line, as run.json records it
  config = run_config.RunConfig.from_config_dict(values)  # typed; unknown keys refused before any work
  distributed.initialize(config.distributed)  # before any other JAX call, or multi-host runs hang
  run_objects.enable_compilation_cache(config.compilation_cache_dir)  # before the first compile
  config_checks.check(config, jax.device_count(), jax.process_count())
  workdir = files.as_path(flags.FLAGS.workdir)  # local or gs://
  claim_workdir(workdir)  # one run per workdir, before any work
  previous = run_records.read_run_file(run_records.run_file(workdir))
  step = run_records.latest_checkpoint(workdir)
  previous_config = None if previous is None else run_records.config_values(previous)
  changes = config_checks.check_resume(values, previous_config, step, workdir)  # before any work
  finished = step is not None and step >= config.num_steps
  kept = run_records.earlier_results(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  train_data, test_sources, tokenizer = run_objects.build_data(config, workdir)
  inputs = run_records.run_inputs(config, tokenizer.source, run_objects.data_dir(config, workdir))
  changed = fingerprints.check(previous and previous.get("inputs"), inputs, str(workdir),
                               flags.FLAGS.accept_changed_inputs)
  model = run_objects.make_model(config, tokenizer)
  variables = restore_finished(workdir, model, step) if finished else None
  finished = variables is not None
  run_records.write_run_file(workdir, values.to_dict(), tokenizer, dict(  # what `lrr_jax.infer` reads
      time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), argv=sys.argv[1:],
      resumed_from=step, changes=changes, evaluated_only=finished, changed_inputs=changed), inputs)
  evaluator = run_objects.make_run_evaluator(config, model, test_sources, tokenizer)
  if finished:
    results, examples = evaluate_finished(config, workdir, variables, evaluator, step, kept[-1] if kept else None)
  else:
    results, examples = train_and_evaluate(config, workdir, model, train_data, evaluator)
  examples_file = workdir / distributed.process_file_name(outcomes.FILE)
  results.update(step=step if finished else config.num_steps, minutes=(time.time() - start) / 60,
                 evaluated_only=finished, eval_examples=dict(file=examples_file.name, count=len(examples)),
                 config=values.to_dict(), earlier_results=kept)  # nothing lost
  if config.data.mixture:
    results["eval_by_dataset"] = by_dataset(config, results["eval"])
  print_results(config, results)  # before any write: a failed write loses nothing
  save_results(workdir, examples_file, examples, results)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
