"""Inference-time scaling on held-out generated CATER examples, as LLaVA-o1 reports it (its Tables 4 and 5):
accuracy and compute (tokens sampled, tokens read by the judge, wall time) of greedy, best-of-N,
sentence-level and stage-level beam search with the same model, from one command, with a PNG plot.

  python -m lrr_jax.scaling --workdir=workdirs/cater_demo --num_examples=32 --num_candidates=4
  python -m lrr_jax.scaling --workdir=workdirs/cater_demo --num_examples=512 --num_candidates=paper \
      --stage_beams=1,2,4 --scorers=likelihood,judge

Rows: greedy once; every other strategy once per scorer, stage_beam once per beam of --stage_beams.
- N (`--num_candidates`, `SearchConfig.num_candidates`): candidates sampled from each kept prefix at each step,
  all in one batched decode. One int for every strategy, `paper` for LLaVA-o1's Table 5 (best-of-N 10,
  sentence-level 2, stage-level 4), or per strategy, `best_of_n:10,stage_beam:4` (the others: the config's).
- beam (`--stage_beams`, `SearchConfig.beam`): candidates kept after each stage, each continued by N new ones at
  the next (N x beam sampled per stage; the final stage keeps the best). beam 1 is the LLaVA-CoT release. The
  paper's "beam size" (Table 4's BS = 2, Table 5's "number of beam") is how many candidates the release samples
  per stage to keep one: N here, at beam 1.
- scorer (`--scorers`): `likelihood` ranks candidates by the model's mean log-probability per token (read while
  sampling, nothing extra to run); `judge` is LLaVA-CoT's self-judge, the model choosing between random pairs in
  a knockout tournament (N - 1 comparisons, "I choose response 1/2"); a model never trained to judge is near
  chance at it. Greedy has no scorer ("none").
Unset flags take the run's `config.search` (sampling, budgets, scorer, N, beam).

Each row has the means over the examples and `per_example` arrays (example index, top1 and well_formed 0/1, l1,
tokens sampled and judged, seconds; frame_fact_acc) whose means they are, for a bootstrap over examples, and the
grounding of the responses (`evaluation.grounding`: `grounding/*`, the answer by case `top1/<case>`). The examples
are the test split's first --num_examples (the evaluator's); wall time excludes compilation: each row answers
example 0 once before the measured pass, except the judge's prompts of a length first met later (bucketed to 32
tokens), compiled once inside it (hence the median beside the mean). Trained runs of several seeds: one call per workdir
(benchmarks/reproduce.py, which reuses a table whose `flags.json`, the settings below, matches its own).
"""
import json
import io
from typing import Sequence

from absl import app
from absl import flags
import numpy as np
import tqdm

from lrr_jax import run_inference
from lrr_jax import run_objects
from lrr_jax import run_records
from lrr_jax import files
from lrr_jax.data import records
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.evaluation import grounding
from lrr_jax.inference import generate
from lrr_jax.inference import scorers
from lrr_jax.inference import search

PAPER_NUM_CANDIDATES = {"best_of_n": 10, "sentence_beam": 2, "stage_beam": 4}  # LLaVA-o1 Table 5
PER_EXAMPLE = ("index", "top1", "l1", "well_formed", "tokens_sampled", "tokens_judged", "seconds")


def define_flags() -> None:
  """The command's flags, defined when it runs (importing the module defines none: no clash with other
  commands' flags, e.g. `lrr_jax.infer`'s, in one process)."""
  flags.DEFINE_string("workdir", None, "A run's workdir (written by lrr_jax.main).", required=True)
  flags.DEFINE_list("strategies", list(search.STRATEGIES), "Strategies to compare.")
  flags.DEFINE_integer("num_examples", 32, "Held-out examples (from the test split's start).")
  # Overrides of the run's config.search (unset: the config's).
  flags.DEFINE_string("num_candidates", None, "N per step: an int for every strategy, 'paper' (best_of_n:10,"
                      "sentence_beam:2,stage_beam:4; LLaVA-o1 Table 5) or per strategy, 'best_of_n:10,stage_beam:4'.")
  flags.DEFINE_list("stage_beams", None, "stage_beam's beams (candidates kept per stage), one row each: 1,2,4.")
  flags.DEFINE_list("scorers", None, f"How candidates are ranked, one row each: of {sorted(run_objects.SCORERS)}.")
  flags.DEFINE_integer("max_new_tokens", None, "Token budget of a response (and of each stage).")
  flags.DEFINE_integer("seed", None, "Sampling seed.")
  flags.DEFINE_string("output", None, "Where to write scaling.{json,md,png} (default: <workdir>/scaling).")


SETTINGS = ("strategies", "num_examples", "num_candidates", "stage_beams", "scorers", "max_new_tokens", "seed")


def settings_flags(**settings) -> list[str]:
  """The command-line flags of the table's settings (`SETTINGS`; None: unset), in one canonical order: what a
  table's `flags.json` records, so that a caller can tell whether a finished table is the one it wants."""
  unknown = sorted(set(settings) - set(SETTINGS))
  if unknown:
    raise ValueError(f"{unknown} are not settings of the scaling table; expected some of {SETTINGS}.")
  value = lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
  return [f"--{name}={value(settings[name])}" for name in SETTINGS if settings.get(name) is not None]


def parse_num_candidates(spec: str | None) -> dict[str, int]:
  """--num_candidates as {strategy: N} for the strategies it sets: '4' (all but greedy), 'paper', or
  'best_of_n:10,stage_beam:4'; None or '': none (the config's N)."""
  if not spec:
    return {}
  if spec == "paper":
    return dict(PAPER_NUM_CANDIDATES)
  if spec.isdigit():
    pairs = [(strategy, spec) for strategy in search.STRATEGIES if strategy != "greedy"]
  else:
    pairs = [part.partition(":")[::2] for part in spec.split(",")]
  parsed = {}
  for strategy, value in pairs:
    if strategy not in search.STRATEGIES or strategy == "greedy" or not value.isdigit() or int(value) < 1:
      raise ValueError(f"--num_candidates={spec!r}: {strategy}:{value} is not a strategy of "
                       f"{search.STRATEGIES[1:]} with an N >= 1 (e.g. best_of_n:10,stage_beam:4, 4 or paper).")
    parsed[strategy] = int(value)
  return parsed


def row_settings(strategies: Sequence[str], num_candidates: dict[str, int], stage_beams: Sequence[int | None],
                 scorer_names: Sequence[str]) -> list[dict]:
  """One search per row: (strategy, num_candidates, beam, scorer), None for the config's. Greedy once (no
  scorer); the others once per scorer; stage_beam once per beam."""
  unknown = sorted(set(strategies) - set(search.STRATEGIES)) + sorted(set(scorer_names) - set(run_objects.SCORERS))
  if unknown:
    raise ValueError(f"Unknown {unknown} in --strategies={','.join(strategies)} or --scorers="
                     f"{','.join(scorer_names)}; expected {search.STRATEGIES} and {sorted(run_objects.SCORERS)}.")
  rows = []
  for strategy in strategies:
    if strategy == "greedy":
      rows.append(dict(strategy=strategy, num_candidates=1, beam=1, scorer=None))
      continue
    for beam in stage_beams if strategy == "stage_beam" else [None]:
      rows += [dict(strategy=strategy, num_candidates=num_candidates.get(strategy), beam=beam, scorer=scorer)
               for scorer in scorer_names]
  return rows


def evaluate_strategy(run: run_records.Run, source, config: search.SearchConfig, scorer: scorers.Scorer,
                      scorer_name: str, num_examples: int, generator: generate.Generator | None = None) -> dict:
  """One row: the search on test examples 0..num_examples-1, means and `per_example` outcomes. Rows sharing a
  `generator` (`run_inference.search_generator`) compile each decode shape once."""
  if run.config.data.dataset != "generated_cater":
    raise ValueError(f"The scaling table scores generated CATER runs; {run.workdir} trained on "
                     f"{run.config.data.dataset!r}.")
  searcher = run_inference.make_searcher(run, config, scorer, generator)
  call = lambda e: searcher(run.variables, e["video"], e["prompt"], e["frames"], e["question"])
  call(run_inference.read_test_example(run, source, 0))  # compile outside the measurement
  label = ("greedy" if config.strategy == "greedy"
           else f"{config.strategy} N={config.num_candidates} beam={config.beam} {scorer_name}")
  responses, labels, sampled, judged, seconds, references = [], [], [], [], [], []
  for index in tqdm.trange(num_examples, desc=label, unit="example"):
    example = run_inference.read_test_example(run, source, index)
    references.append(reference_texts(run, source, index))
    result = call(example)
    responses.append(result.text)
    labels.append(example["label"])
    sampled.append(result.generated_tokens)
    judged.append(result.judge_tokens)
    seconds.append(result.seconds)
  outcomes = cater_eval.cater_outcomes(responses, np.asarray(labels))
  looked = grounding.evaluate(run.config.data.dataset, responses, [own for own, _ in references],
                              [full for _, full in references], outcomes["top1"])
  per_example = dict(index=list(range(num_examples)), **{k: v.tolist() for k, v in outcomes.items()},
                     tokens_sampled=sampled, tokens_judged=judged, seconds=seconds,
                     **{k[len(grounding.PREFIX):]: looked.per_record[k].tolist()
                        for k in (grounding.PREFIX + "frame_fact_acc",) if k in looked.per_record})
  greedy, single = config.strategy == "greedy", config.strategy in ("greedy", "best_of_n")
  return dict(strategy=config.strategy, scorer="none" if greedy else scorer_name,
              num_candidates=1 if greedy else config.num_candidates, beam=1 if single else config.beam,
              examples=num_examples, sampling_seed=config.seed, train_seed=int(run.config.seed),
              **{k: float(np.mean(per_example[k])) for k in PER_EXAMPLE[1:]},
              seconds_median=float(np.median(seconds)), **looked.scores, per_example=per_example)


def reference_texts(run: run_records.Run, source, index: int) -> tuple[str, str]:
  """Held-out record `index`'s true rationale in the run's variant and in the full one (the grounding's)."""
  record = source[index]
  own = records.read_example(record, run.config.data.variant, f"test record {index}").response_text
  try:
    return own, records.read_example(record, "full", f"test record {index}").response_text
  except ValueError:
    return own, own


def row_label(row: dict) -> str:
  beam = f" beam={row['beam']}" if row["strategy"] == "stage_beam" else ""
  return f"{row['strategy']} N={row['num_candidates']}{beam} {row['scorer']}"


def markdown_table(rows: list[dict]) -> str:
  """The rows as Markdown: top-1, its split by the snitch's case at the end (contained / visible) and the share
  of frame facts whose snitch cell is right (`evaluation.grounding`; '-' where a row has none), compute."""
  score = lambda r, key: f"{r[key]:.3f}" if key in r else "-"
  lines = ["| strategy | scorer | N | beam | top-1 | top-1 contained / visible at end | frame facts right | L1 "
           "| well-formed | tokens sampled | tokens judged | s / example (mean, median) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  lines += [f"| {r['strategy']} | {r['scorer']} | {r['num_candidates']} | {r['beam']} | {r['top1']:.3f} "
            f"| {score(r, 'top1/contained_at_end')} / {score(r, 'top1/visible_at_end')} "
            f"| {score(r, grounding.PREFIX + 'frame_fact_acc')} "
            f"| {r['l1']:.2f} | {r['well_formed']:.2f} | {r['tokens_sampled']:.0f} | {r['tokens_judged']:.0f} "
            f"| {r['seconds']:.2f}, {r['seconds_median']:.2f} |" for r in rows]
  return "\n".join(lines)


def plot(rows: list[dict], path, title: str) -> None:
  """Accuracy against compute (tokens sampled + judged per example), one point per row, coloured by scorer;
  seconds per example."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  colours = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(r["scorer"] for r in rows))}
  figure, axes = plt.subplots(1, 2, figsize=(12, 1.5 + 0.35 * max(len(rows), 8)))
  for row in rows:
    compute = row["tokens_sampled"] + row["tokens_judged"]
    axes[0].scatter(compute, row["top1"], s=60, color=colours[row["scorer"]])
    axes[0].annotate(row_label(row), (compute, row["top1"]), textcoords="offset points", xytext=(5, 5),
                     fontsize=7)
  axes[0].set(xscale="log", xlabel="tokens per example (sampled + judged)", ylabel="top-1", title=title)
  axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  axes[1].barh([row_label(r) for r in rows][::-1], [r["seconds"] for r in rows][::-1],
               color=[colours[r["scorer"]] for r in rows][::-1])
  axes[1].set(xlabel="seconds per example", title="wall time")
  axes[1].tick_params(axis="y", labelsize=7)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=120)
  files.as_path(path).write_bytes(buffer.getvalue())  # local or gs://
  plt.close(figure)


def main(argv):
  del argv
  f = flags.FLAGS
  run = run_records.load_run(f.workdir)
  source = run_inference.test_source(run)
  if f.num_examples > len(source):
    raise ValueError(f"--num_examples={f.num_examples} needs as many test records; {run.workdir} has "
                     f"{len(source)} (config.data.num_eval).")
  config_scorer = {cls: name for name, cls in run_objects.SCORERS.items()}[type(run_objects.search_config(
      run.config)[1])]
  beams = [int(b) for b in f.stage_beams] if f.stage_beams else [None]
  rows, generator = [], None
  for setting in row_settings(f.strategies, parse_num_candidates(f.num_candidates), beams,
                              f.scorers or [config_scorer]):
    scorer_name = setting["scorer"] or config_scorer
    config, scorer = run_objects.search_config(
        run.config, strategy=setting["strategy"], num_candidates=setting["num_candidates"], beam=setting["beam"],
        scorer=scorer_name, seed=f.seed, max_new_tokens=f.max_new_tokens, max_step_tokens=f.max_new_tokens)
    generator = generator or run_inference.search_generator(run, config)  # the same budgets in every row
    rows.append(evaluate_strategy(run, source, config, scorer, scorer_name, f.num_examples, generator))
  output = files.as_path(f.output or run.workdir / "scaling")
  output.mkdir(parents=True, exist_ok=True)
  table = markdown_table(rows)
  (output / "scaling.json").write_text(json.dumps(rows, indent=2))
  (output / "scaling.md").write_text(table + "\n")
  (output / "flags.json").write_text(json.dumps(settings_flags(**{name: f[name].value for name in SETTINGS})))
  plot(rows, output / "scaling.png", f"{run.workdir.name}, {f.num_examples} examples")
  print(table)
  print(f"\nWritten to {output}/scaling.{{json,md,png}}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
