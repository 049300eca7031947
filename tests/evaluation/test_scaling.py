"""The scaling table's settings: per-strategy N, the stage beam sweep and scorers as rows; CATER outcomes per
example; each dataset's rows scored with its own metrics (ACRE and STAR release fixtures, generated ACRE), a
mixture's one table per dataset (the end-to-end CATER table runs in tests/test_main.py)."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import acre as acre_config
from configs import released
from lrr_jax import run_config
from lrr_jax import run_inference
from lrr_jax import run_objects
from lrr_jax import run_records
from lrr_jax import scaling
from lrr_jax.data import records
from lrr_jax.data.worlds import acre
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.evaluation import evaluator
from lrr_jax.inference import search
from tests.data import release_fixtures


def test_num_candidates_per_strategy_for_all_or_as_the_paper():
  assert scaling.parse_num_candidates("paper") == {"best_of_n": 10, "sentence_beam": 2, "stage_beam": 4}
  assert scaling.parse_num_candidates("3") == {"best_of_n": 3, "sentence_beam": 3, "stage_beam": 3}
  assert scaling.parse_num_candidates("best_of_n:10,stage_beam:4") == {"best_of_n": 10, "stage_beam": 4}
  assert scaling.parse_num_candidates(None) == {} == scaling.parse_num_candidates("")
  for bad in ("best_of_n:0", "beam:4", "greedy:2", "stage_beam"):
    with pytest.raises(ValueError, match=f"--num_candidates={bad!r}"):
      scaling.parse_num_candidates(bad)


def test_rows_greedy_once_the_others_per_scorer_stage_beam_per_beam():
  rows = scaling.row_settings(["greedy", "best_of_n", "stage_beam"], {"best_of_n": 10, "stage_beam": 4},
                              [1, 2], ["likelihood", "judge"])
  assert [(r["strategy"], r["num_candidates"], r["beam"], r["scorer"]) for r in rows] == [
      ("greedy", 1, 1, None),
      ("best_of_n", 10, None, "likelihood"), ("best_of_n", 10, None, "judge"),
      ("stage_beam", 4, 1, "likelihood"), ("stage_beam", 4, 1, "judge"),
      ("stage_beam", 4, 2, "likelihood"), ("stage_beam", 4, 2, "judge")]
  unset = scaling.row_settings(["sentence_beam"], {}, [None], ["judge"])
  assert unset == [dict(strategy="sentence_beam", num_candidates=None, beam=None, scorer="judge")]
  with pytest.raises(ValueError, match="--scorers=judge,reward"):
    scaling.row_settings(["greedy"], {}, [None], ["judge", "reward"])


def test_cater_outcomes_per_response_average_to_the_scores():
  responses = ["<CONCLUSION> The snitch is at answer 1,2. </CONCLUSION>", "<CONCLUSION> answer 0,0 </CONCLUSION>",
               "no cell here"]
  labels = np.array([1 * 6 + 2, 3 * 6 + 5, 0])
  outcomes = cater_eval.cater_outcomes(responses, labels)
  assert outcomes["top1"].tolist() == [1, 0, 0]
  assert outcomes["l1"].tolist() == [0, 8, cater_eval.GRID_DIAMETER]
  assert outcomes["well_formed"].tolist() == [1, 1, 0]
  scores = evaluator.task_scores("generated_cater", responses, [""] * 3, labels, [{}] * 3)
  assert all(scores[k] == pytest.approx(v.mean()) for k, v in outcomes.items())
  assert scores["chance_top1"] == pytest.approx(1 / 36)


# The scaling table on each dataset the library trains on: rows scored with the dataset's own metrics.

def fixture_run(tmp_path, dataset: str, model: bool = False) -> tuple[run_records.Run, object]:
  """A run object built without training (no checkpoint; random weights when `model`) on the ACRE or STAR
  release fixture (`tests/data/release_fixtures.py`) or generated ACRE, and its held-out split."""
  if dataset == "generated_acre":
    values = acre_config.get_config("split=iid")
    values.data.update(num_train=4, num_eval=4)
  else:
    values = released.get_config(f"dataset={dataset},split=iid")
    manual = tmp_path / dataset
    if dataset == "acre":
      for i, split in enumerate(("train", "val")):
        release_fixtures.write_acre_release(manual, split, acre.generate(acre.AcreConfig(), 1, seed=i,
                                                                         train=split == "train"))
    else:
      release_fixtures.write_star_release(manual)
      values.data.eval_split = "train"  # its two questions of two types (val has one)
    values.data.update(manual_dir=str(manual), resolution=32, max_length=320, worker_count=0)
    values.model.update(size="tiny", dtype="float32", scan_layers=False)
    values.model.video.static_backbone.grid_stage = values.model.video.motion_backbone.grid_stage = 0
  values.data.update(data_dir=str(tmp_path / "data"), vocab_size=400)
  values.eval.max_new_tokens = 8
  config = run_config.RunConfig.from_config_dict(values)
  _, sources, tokenizer = run_objects.build_data(config, tmp_path)
  network, variables = None, None
  if model:
    network = run_objects.make_model(config, tokenizer)
    num_frames, resolution = config.video_shape()
    tokens = np.ones((1, 4), np.int32)
    variables = nn.unbox(jax.jit(network.init)(jax.random.key(0), tokens, tokens, tokens, tokens,
                                               np.zeros((1, num_frames, resolution, resolution, 3), np.uint8)))
  run = run_records.Run(tmp_path, config, network, variables, tokenizer, 0, run_objects.data_dir(config, tmp_path))
  return run, next(iter(sources.values()))


class ScriptedSearcher:
  """A stand-in for `search.Searcher`: for held-out example i (in the order the table asks, after one call that
  compiles), the record's own rationale (its right answer, every fact) when i is even, an answer-less text when
  odd; 10 tokens sampled and 0.5 s each."""

  def __init__(self, source, variant: str):
    self.truths = [records.read_example(source[i], variant).response_text for i in range(len(source))]
    self.calls, self.generator = -1, None

  def __call__(self, variables, video, prompt, frames, question, **unused) -> search.SearchResult:
    index, self.calls = max(self.calls, 0), self.calls + 1
    text = "nothing said" if index % 2 else self.truths[index]
    return search.SearchResult(text, [], generated_tokens=10, judge_tokens=0, seconds=0.5)


HEADLINES = {"acre": "accuracy", "generated_acre": "accuracy", "star": "accuracy_pooled"}


@pytest.mark.parametrize("dataset", ["acre", "star", "generated_acre"])
def test_rows_score_each_dataset_with_its_own_metrics_per_example(tmp_path, monkeypatch, dataset):
  run, source = fixture_run(tmp_path, dataset)
  searcher = ScriptedSearcher(source, run.config.data.variant)
  monkeypatch.setattr(run_inference, "make_searcher", lambda *args: searcher)
  config, scorer = run_objects.search_config(run.config, strategy="best_of_n", num_candidates=2, scorer="likelihood")
  n = min(len(source), 4)
  row = scaling.evaluate_strategy(run, source, config, scorer, "likelihood", n)
  per_example, headline = row["per_example"], HEADLINES[dataset]
  assert (row["dataset"], row["headline"], per_example["index"]) == (dataset, headline, list(range(n)))
  assert per_example[headline] == [1 - i % 2 for i in range(n)]  # its own rationale on even examples: right
  assert per_example["well_formed"] == per_example[headline]
  assert per_example["frame_fact_acc"] == [1.0 - i % 2 for i in range(n)]  # every fact, or none stated
  for key in (headline, "well_formed", "tokens_sampled", "seconds"):
    assert row[key] == pytest.approx(np.mean(per_example[key])), key
  assert row["tokens_sampled"] == 10 and row["seconds_median"] == 0.5
  assert not {"top1", "l1", "top5", "chance_top1"} & (set(row) | set(per_example))  # CATER's: not here
  group = "question_type" if dataset == "star" else "query_type"
  assert len(per_example[group]) == n and len(set(per_example[group])) > 1
  for value in set(per_example[group]):
    own = [v for v, g in zip(per_example[headline], per_example[group]) if g == value]
    assert row[f"{group}/{value}"] == pytest.approx(np.mean(own))
  if dataset == "star":  # the paper's overall: the mean over question types
    assert row["accuracy"] == pytest.approx(np.mean([row[f"question_type/{v}"] for v in set(per_example[group])]))
  header = scaling.markdown_table([row]).splitlines()[0]
  assert header.startswith(f"| strategy | scorer | N | beam | {scaling.HEADLINE_NAMES[headline]} |"), header
  assert not {"top-1", "top-5", "L1", "top-1 contained / visible at end"} & set(header.split(" | ")), header
  scaling.plot([row], tmp_path / "scaling.png", dataset)
  assert (tmp_path / "scaling.png").stat().st_size > 1000


def test_a_mixture_gives_one_table_per_dataset_with_its_own_columns():
  row = lambda dataset, headline, **scores: dict(
      dataset=dataset, headline=headline, strategy="greedy", scorer="none", num_candidates=1, beam=1,
      tokens_sampled=8.0, tokens_judged=0.0, seconds=0.1, seconds_median=0.1, well_formed=1.0, **scores)
  rows = [row("cater", "top1", top1=0.5, top5=0.75, l1=1.5), row("something_else", "top1", top1=0.25, top5=0.5),
          row("star", "accuracy_pooled", accuracy_pooled=0.5, accuracy=0.4, **{"question_type/Interaction": 0.3})]
  tables = scaling.markdown_table(rows).split("### ")[1:]
  assert [t.splitlines()[0] for t in tables] == ["cater", "something_else", "star"]
  headers = [t.splitlines()[2] for t in tables]
  assert "| top-1 | top-5 | L1 | frame facts right |" in headers[0]
  assert "| top-1 | top-5 | frame facts right |" in headers[1]
  assert "| accuracy (pooled) | accuracy (mean over types) | Interaction | frame facts right |" in headers[2]
  assert "| greedy | none | 1 | 1 | 0.500 | 0.400 | 0.300 | - | 1.00 |" in tables[2]


@pytest.mark.slow  # a tiny model's searches compiled on the ACRE release fixture
def test_searches_of_a_random_model_on_the_acre_release_keep_its_metrics(tmp_path):
  run, source = fixture_run(tmp_path, "acre", model=True)
  rows, generator = [], None
  for strategy in ("greedy", "stage_beam"):
    config, scorer = run_objects.search_config(run.config, strategy=strategy, num_candidates=2, beam=1,
                                               scorer="likelihood", max_new_tokens=8, max_step_tokens=4)
    generator = generator or run_inference.search_generator(run, config)
    rows.append(scaling.evaluate_strategy(run, source, config, scorer, "likelihood", 2, generator))
  for row in rows:
    per_example = row["per_example"]
    assert row["headline"] == "accuracy" and row["tokens_sampled"] > 0
    for key in ("accuracy", "well_formed", "query_type", "tokens_sampled", "tokens_judged", "seconds"):
      assert len(per_example[key]) == 2, key
    assert row["accuracy"] == pytest.approx(np.mean(per_example["accuracy"]))
  assert rows[1]["tokens_sampled"] > rows[0]["tokens_sampled"]  # two candidates per stage
