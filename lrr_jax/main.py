"""Train and evaluate LRR: `python -m lrr_jax.main --config=configs/cater.py [--config.key=value ...]`.

With no flags: the tiny CPU demo on generated CATER: write the world with its TFDS builder and a tokenizer
(once, under <workdir>/data), train from the Grain pipeline (`lrr_jax.train.loop`), evaluate by greedy
generation on the test split, print a results table. Results go to `<workdir>/results.json`.
"""
import json
import time

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from lrr_jax import experiment
from lrr_jax.data import files
from lrr_jax.train import distributed
from lrr_jax.train import loop

config_flags.DEFINE_config_file("config", "configs/cater.py", "Experiment config file.")
flags.DEFINE_string("workdir", "workdirs/cater_demo", "Where the tokenizer and results are written.")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with an unknown `--config.*` key named (ml_collections raises a bare `'key'` error)."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    key = str(e).strip("'\"")
    bad = [a for a in argv if a.startswith("--config.") and f".{key}" in a.split("=")[0]]
    raise app.UsageError(f"Unknown config key {key!r} in {' '.join(bad) or argv[1:]}: the config file "
                         "defines no such field.") from e


def title(config: ml_collections.ConfigDict) -> str:
  if config.data.dataset == "generated_cater":
    return f"Generated CATER ({config.data.variant}, {'moving' if config.world.moving_camera else 'static'} camera)"
  return f"{config.data.dataset} {config.data.get('builder_config', '')} ({config.data.variant})"


def print_results(config: ml_collections.ConfigDict, results: dict) -> None:
  print(f"\n{title(config)}, {config.num_steps} steps, {results['minutes']:.1f} min")
  print("| metric | value |\n| --- | --- |")
  for key, value in results["eval"].items():
    print(f"| {key} | {value:.3f} |")
  print(f"\nFirst eval response: {results['example_response']}")


def main(argv):
  del argv
  config = flags.FLAGS.config
  distributed.initialize(config.distributed)  # before any other JAX call, or multi-host runs hang
  workdir = files.as_path(flags.FLAGS.workdir)  # local or gs://
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  train_data, test_source, tokenizer = experiment.build_data(config, workdir)
  experiment.write_run_file(workdir, config, tokenizer)  # what `lrr_jax.infer` reads
  model = experiment.make_model(config, tokenizer)
  evaluator = experiment.make_evaluator(config, model, test_source, tokenizer)
  preemption = loop.Preemption()
  state, train_metrics = loop.train(config, model, train_data, workdir,
                                    lambda params, count: evaluator(params, count, preemption.agreed)[0],
                                    preemption)
  scores, responses = evaluator(state.params, should_stop=preemption.agreed)  # SIGTERM: partial scores
  results = {"train": train_metrics, "eval": scores, "minutes": (time.time() - start) / 60,
             "params_checksum": loop.params_checksum(state.params),
             "config": config.to_dict(), "example_response": responses[0]}
  (workdir / distributed.process_file_name("results.json")).write_text(json.dumps(results, indent=2))
  print_results(config, results)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
