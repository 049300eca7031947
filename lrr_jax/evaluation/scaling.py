"""Inference-time scaling on held-out generated examples, as LLaVA-o1 reports it (its Table 5 shape):
accuracy and compute (tokens sampled, tokens read by the judge, wall time) of greedy, best-of-N,
sentence-level and stage-level beam search with the same model, from one command, with a PNG plot.

  python -m lrr_jax.evaluation.scaling --workdir=workdirs/cater_demo --num_examples=32 --num_candidates=4

Every strategy runs with the run's `config.search` settings (sampling, budgets, scorer, N), each flag given
overriding them. Wall time excludes compilation: each strategy first runs once on an example outside the measured set.
"""
import json
import io

from absl import app
from absl import flags
import numpy as np
import tqdm

from lrr_jax import experiment
from lrr_jax.data import files
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.inference import scorers
from lrr_jax.inference import search

flags.DEFINE_string("workdir", None, "A run's workdir (written by lrr_jax.main).", required=True)
flags.DEFINE_list("strategies", list(search.STRATEGIES), "Strategies to compare.")
flags.DEFINE_integer("num_examples", 32, "Held-out examples (from the test split's start).")
# Overrides of the run's config.search (unset: the config's).
flags.DEFINE_integer("num_candidates", None, "Candidates per step (LLaVA-CoT: 10 per stage, 5 per sentence).")
flags.DEFINE_enum("scorer", None, sorted(experiment.SCORERS), "How candidates are ranked.")
flags.DEFINE_integer("max_new_tokens", None, "Token budget of a response (and of each stage).")
flags.DEFINE_integer("seed", None, "Sampling seed.")
flags.DEFINE_string("output", None, "Where to write scaling.{json,md,png} (default: <workdir>/scaling).")


def evaluate_strategy(run: experiment.Run, source, config: search.SearchConfig, scorer: scorers.Scorer,
                      num_examples: int) -> dict:
  """Accuracy and mean compute per example of one strategy on test examples 1..num_examples."""
  if run.config.data.dataset != "generated_cater":
    raise ValueError(f"The scaling table scores generated CATER runs; {run.workdir} trained on "
                     f"{run.config.data.dataset!r}.")
  searcher = experiment.make_searcher(run, config, scorer)
  call = lambda e: searcher(run.variables, e["video"], e["prompt"], e["frames"], e["question"])
  call(experiment.read_test_example(run, source, 0))  # compile outside the measurement
  responses, labels, sampled, judged, seconds = [], [], [], [], []
  for index in tqdm.trange(1, num_examples + 1, desc=config.strategy, unit="example"):
    example = experiment.read_test_example(run, source, index)
    result = call(example)
    responses.append(result.text)
    labels.append(example["label"])
    sampled.append(result.generated_tokens)
    judged.append(result.judge_tokens)
    seconds.append(result.seconds)
  scores = cater_eval.cater_scores(responses, np.asarray(labels))
  return dict(strategy=config.strategy, num_candidates=1 if config.strategy == "greedy" else config.num_candidates,
              examples=num_examples,
              top1=scores["top1"], l1=scores["l1"], well_formed=scores["well_formed"],
              tokens_sampled=float(np.mean(sampled)), tokens_judged=float(np.mean(judged)),
              seconds=float(np.mean(seconds)))


def markdown_table(rows: list[dict]) -> str:
  lines = ["| strategy | N | top-1 | L1 | well-formed | tokens sampled | tokens judged | s / example |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  lines += [f"| {r['strategy']} | {r['num_candidates']} | {r['top1']:.3f} | {r['l1']:.2f} | {r['well_formed']:.2f} "
            f"| {r['tokens_sampled']:.0f} | {r['tokens_judged']:.0f} | {r['seconds']:.2f} |" for r in rows]
  return "\n".join(lines)


def plot(rows: list[dict], path, title: str) -> None:
  """Accuracy against compute (tokens sampled + judged per example), one point per strategy."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(1, 2, figsize=(10, 4))
  for row in rows:
    compute = row["tokens_sampled"] + row["tokens_judged"]
    axes[0].scatter(compute, row["top1"], s=60)
    axes[0].annotate(row["strategy"], (compute, row["top1"]), textcoords="offset points", xytext=(5, 5))
  axes[0].set(xscale="log", xlabel="tokens per example (sampled + judged)", ylabel="top-1", title=title)
  axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  axes[1].bar([r["strategy"] for r in rows], [r["seconds"] for r in rows])
  axes[1].set(ylabel="seconds per example", title="wall time")
  axes[1].tick_params(axis="x", labelrotation=20)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=120)
  files.as_path(path).write_bytes(buffer.getvalue())  # local or gs://
  plt.close(figure)


def main(argv):
  del argv
  f = flags.FLAGS
  run = experiment.load_run(f.workdir)
  source = experiment.test_source(run)
  if f.num_examples + 1 > len(source):
    raise ValueError(f"--num_examples={f.num_examples} needs {f.num_examples + 1} test records; "
                     f"{run.workdir} has {len(source)}.")
  rows = []
  for strategy in f.strategies:
    config, scorer = experiment.search_config(
        run.config, strategy=strategy, num_candidates=f.num_candidates, scorer=f.scorer, seed=f.seed,
        max_new_tokens=f.max_new_tokens, max_step_tokens=f.max_new_tokens)
    rows.append(evaluate_strategy(run, source, config, scorer, f.num_examples))
  output = files.as_path(f.output or run.workdir / "scaling")
  output.mkdir(parents=True, exist_ok=True)
  table = markdown_table(rows)
  (output / "scaling.json").write_text(json.dumps(rows, indent=2))
  (output / "scaling.md").write_text(table + "\n")
  plot(rows, output / "scaling.png", f"{run.workdir.name}, {type(scorer).__name__} scorer, "
       f"N={config.num_candidates}")
  print(table)
  print(f"\nWritten to {output}/scaling.{{json,md,png}}")


if __name__ == "__main__":
  app.run(main)
