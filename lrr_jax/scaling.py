"""Inference-time scaling on a run's held-out examples, as LLaVA-o1 reports it (its Tables 4 and 5): each
dataset's own accuracy and compute (tokens sampled, tokens read by the judge, wall time) of greedy, best-of-N,
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
  chance at it. `release_judge` is the release's own way: the model generates "Since ..., I choose response
  [1/2]." to a stage-specific prompt (ours), after a correctness check at REASONING. `oracle` (ours) ranks by the
  record's own true rationale: the facts a candidate states right and its answer, a ceiling for search. Greedy
  has no scorer ("none").
Unset flags take the run's `config.search` (sampling, budgets, scorer, N, beam).

Scores: each dataset's own, as the evaluator scores it after training (`evaluator.score_records`): CATER
(generated and released) top1, l1, top5 and top1_ranked (the 36 cells ranked after the searched response); ACRE
accuracy and per query type; Something-Else top1 and top5 over config.eval.num_classes; STAR accuracy (the mean
over question types), accuracy_pooled and per question type; every dataset well_formed and its grounding
(`evaluation.grounding`: `grounding/*`, CATER's answer by case `top1/<case>`). A row names its dataset and its
`headline`, the per-example score that sums it up (`evaluator.headline_outcome`: top1, accuracy, STAR's
accuracy_pooled); it keeps `per_example` arrays (example index, every per-example score of the evaluator, e.g.
top1, l1 and well_formed or accuracy; tokens sampled and judged, seconds; frame_fact_acc; the example's groups,
e.g. query_type) whose means are the row's, for a bootstrap over examples. A mixture run gives each setting one
row per dataset, on that dataset's held-out split. The examples are each split's first --num_examples (the
evaluator's); wall time excludes compilation: each row answers
example 0 once before the measured pass, except the judge's prompts of a length first met later (bucketed to 32
tokens), compiled once inside it (hence the median beside the mean). Trained runs of several seeds: one call per workdir
(benchmarks/reproduce.py, which reuses a table whose `flags.json`, the settings below, matches its own).
"""
import json
import io
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tqdm

from lrr_jax import run_config
from lrr_jax import run_inference
from lrr_jax import run_objects
from lrr_jax import run_records
from lrr_jax import files
from lrr_jax.data import records
from lrr_jax.evaluation import evaluator
from lrr_jax.evaluation import grounding
from lrr_jax.inference import generate
from lrr_jax.inference import scorers
from lrr_jax.inference import search

PAPER_NUM_CANDIDATES = {"best_of_n": 10, "sentence_beam": 2, "stage_beam": 4}  # LLaVA-o1 Table 5
MEASURES = ("tokens_sampled", "tokens_judged", "seconds")  # the compute of each example, beside its scores
HEADLINE_NAMES = {"top1": "top-1", "accuracy": "accuracy", "accuracy_pooled": "accuracy (pooled)"}


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
                      scorer_name: str, num_examples: int, generator: generate.Generator | None = None,
                      dataset: run_config.Source | None = None) -> dict:
  """One row: the search on held-out examples 0..num_examples-1 of `dataset` (one of the run's sources, default
  its first; `source`: its held-out split), scored as the evaluator scores that dataset, means and `per_example`
  outcomes. Rows sharing a `generator` (`run_inference.search_generator`) compile each decode shape once."""
  dataset = dataset or run.config.sources()[0]
  if isinstance(scorer, scorers.Oracle):  # its check reads the facts as this dataset's grounding does
    scorer = run_objects.make_scorer("oracle", run.config, dataset.dataset)
  searcher = run_inference.make_searcher(run, config, scorer, generator)
  call = lambda e: searcher(run.variables, e["video"], e["prompt"], e["frames"], e["question"],
                            reference=e["reference"])  # the oracle's
  call(run_inference.read_test_example(run, source, 0))  # compile outside the measurement
  label = ("greedy" if config.strategy == "greedy"
           else f"{config.strategy} N={config.num_candidates} beam={config.beam} {scorer_name}")
  held_out = [source[index] for index in range(num_examples)]
  read = [records.read_example(r, run.config.data.variant, f"test record {i}") for i, r in enumerate(held_out)]
  rank = answer_ranker(run, dataset.dataset, searcher.generator, config.memory_limit_bytes)
  responses, ranked, measures = [], [], {name: [] for name in MEASURES}
  for index in tqdm.trange(num_examples, desc=f"{dataset.name}: {label}", unit="example"):
    example = run_inference.read_test_example(run, source, index)
    result = call(example)
    responses.append(result.text)
    for name, value in zip(MEASURES, (result.generated_tokens, result.judge_tokens, result.seconds)):
      measures[name].append(value)
    if rank:
      ranked.append(rank(example, read[index], result.text))
  notes = []
  if any(r is None for r in ranked):
    notes.append(f"top5 left out: {sum(r is None for r in ranked)} responses leave no room to rank the answers "
                 "in the model's positions")
    logging.warning("%s, %s: %s.", dataset.name, label, notes[-1])
  scored = evaluator.score_records(dataset.dataset, responses, held_out, read,
                                   np.stack(ranked) if ranked and not notes else None)
  per_example = dict(index=list(range(num_examples)),
                     **{k: v.tolist() for k, v in scored.per_record.items() if not k.startswith(grounding.PREFIX)},
                     **measures, **{k[len(grounding.PREFIX):]: scored.per_record[k].tolist()
                                    for k in (grounding.PREFIX + "frame_fact_acc",) if k in scored.per_record},
                     **scored.groups)
  greedy, single = config.strategy == "greedy", config.strategy in ("greedy", "best_of_n")
  return dict(dataset=dataset.name, headline=evaluator.headline_outcome(dataset.dataset),
              strategy=config.strategy, scorer="none" if greedy else scorer_name,
              num_candidates=1 if greedy else config.num_candidates, beam=1 if single else config.beam,
              examples=num_examples, sampling_seed=config.seed, train_seed=int(run.config.seed), **scored.scores,
              **{name: float(np.mean(values)) for name, values in measures.items()},
              seconds_median=float(np.median(measures["seconds"])), **({"notes": notes} if notes else {}),
              per_example=per_example)


def answer_ranker(run: run_records.Run, dataset: str, generator: generate.Generator,
                  memory_limit_bytes: int | None) -> Callable[..., np.ndarray | None] | None:
  """`rank(example, read, response) -> float[K] | None`: the dataset's closed answer set (CATER's cells,
  Something-Else's classes; `evaluator.answer_candidates`) ranked after a searched response (its text
  re-encoded), as the evaluator ranks it after its greedy one, for top5; None where the prompt, response and
  ranking do not fit the model's positions. None without such a set (ACRE, STAR)."""
  candidates = evaluator.answer_candidates(dataset, run.config.eval.num_classes)
  if not candidates:
    return None
  room = generator.max_positions - evaluator.ranking_tokens(run.tokenizer, candidates)

  def rank(example: dict, read, response: str) -> np.ndarray | None:
    tokens = run.tokenizer.encode(response)
    if len(example["prompt"]) + len(tokens) > room:
      return None
    return evaluator.rank_answers(generator, run.tokenizer, run.variables, example["video"][None], [read],
                                  [(example["prompt"], example["frames"])], [tokens], candidates,
                                  memory_limit_bytes)[0]
  return rank


def row_label(row: dict) -> str:
  beam = f" beam={row['beam']}" if row["strategy"] == "stage_beam" else ""
  return f"{row['strategy']} N={row['num_candidates']}{beam} {row['scorer']}"


def headline_name(row: dict) -> str:
  """The row's headline score as a column names it ('top-1'; rows from before `headline`: top1)."""
  headline = row.get("headline", "top1")
  return HEADLINE_NAMES.get(headline, headline)


def score_columns(rows: list[dict]) -> list[tuple[str, Callable[[dict], str]]]:
  """(header, cell) of one dataset's score columns, those its rows have: the headline; top-5 (CATER,
  Something-Else); CATER's top-1 by the snitch's case at the end and L1; STAR's accuracy as the mean over
  question types; the accuracy per query or question type (ACRE, STAR); the share of frame facts right
  (`evaluation.grounding`); well-formed. '-' where a row lacks a score."""
  score = lambda key, digits=3: lambda r: f"{r[key]:.{digits}f}" if key in r else "-"
  has = lambda key: any(key in r for r in rows)
  headline = rows[0].get("headline", "top1")
  columns = [(headline_name(rows[0]), score(headline))]
  if has("top5"):
    columns.append(("top-5", score("top5")))
  if has("top1/contained_at_end") or has("top1/visible_at_end"):
    columns.append(("top-1 contained / visible at end",
                    lambda r: f"{score('top1/contained_at_end')(r)} / {score('top1/visible_at_end')(r)}"))
  if has("l1"):
    columns.append(("L1", score("l1", 2)))
  if headline == "accuracy_pooled" and has("accuracy"):
    columns.append(("accuracy (mean over types)", score("accuracy")))
  grouped = sorted({k for r in rows for k in r if k.split("/")[0] in ("query_type", "question_type")})
  columns += [(key.split("/", 1)[1], score(key)) for key in grouped]
  columns += [("frame facts right", score(grounding.PREFIX + "frame_fact_acc")),
              ("well-formed", score("well_formed", 2))]
  return columns


def markdown_table(rows: list[dict]) -> str:
  """The rows as Markdown: the search's settings, each dataset's own scores (`score_columns`), compute. A run
  of several datasets (a mixture) gives one table per dataset, each under its name."""
  by_dataset: dict[str, list[dict]] = {}
  for row in rows:
    by_dataset.setdefault(row.get("dataset", ""), []).append(row)
  tables = []
  for dataset, own in by_dataset.items():
    columns = score_columns(own)
    headers = ["strategy", "scorer", "N", "beam", *(h for h, _ in columns), "tokens sampled", "tokens judged",
               "s / example (mean, median)"]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(["---"] * len(headers)) + " |"]
    lines += ["| " + " | ".join([r["strategy"], r["scorer"], str(r["num_candidates"]), str(r["beam"]),
                                 *(cell(r) for _, cell in columns), f"{r['tokens_sampled']:.0f}",
                                 f"{r['tokens_judged']:.0f}", f"{r['seconds']:.2f}, {r['seconds_median']:.2f}"])
              + " |" for r in own]
    tables.append(("\n".join([f"### {dataset}", ""] + lines) if len(by_dataset) > 1 else "\n".join(lines)))
  return "\n\n".join(tables)


def plot(rows: list[dict], path, title: str) -> None:
  """Each row's headline score (its dataset's: top-1, accuracy) against compute (tokens sampled + judged per
  example), one point per row, coloured by scorer; seconds per example."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  import matplotlib.ticker  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  colours = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(r["scorer"] for r in rows))}
  several = len({r.get("dataset") for r in rows}) > 1
  label = lambda r: f"{r['dataset']}: {row_label(r)}" if several else row_label(r)
  figure, axes = plt.subplots(1, 2, figsize=(12, 1.5 + 0.35 * max(len(rows), 8)))
  for row in rows:
    compute, value = row["tokens_sampled"] + row["tokens_judged"], row[row.get("headline", "top1")]
    axes[0].scatter(compute, value, s=60, color=colours[row["scorer"]])
    axes[0].annotate(label(row), (compute, value), textcoords="offset points", xytext=(5, 5), fontsize=7)
  ylabel = " / ".join(dict.fromkeys((f"{r['dataset']} " if several else "") + headline_name(r) for r in rows))
  axes[0].set(xscale="log", xlabel="tokens per example (sampled + judged)", ylabel=ylabel, title=title)
  axes[0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  axes[1].barh([label(r) for r in rows][::-1], [r["seconds"] for r in rows][::-1],
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
  datasets = run.config.sources()  # a mixture's: each scored on its own held-out split
  held_out = {d.name: run_inference.test_source(run, d) for d in datasets}
  short = {name: len(source) for name, source in held_out.items() if f.num_examples > len(source)}
  if short:
    raise ValueError(f"--num_examples={f.num_examples} needs as many test records; {run.workdir} has {short} "
                     "(config.data.num_eval, or the release's split).")
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
    rows += [evaluate_strategy(run, held_out[d.name], config, scorer, scorer_name, f.num_examples, generator, d)
             for d in datasets]
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
