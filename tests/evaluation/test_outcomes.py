"""Per-record scores: averaged over the records they are the evaluation's scores (every task), and
eval_examples.jsonl reads back what was written, with errors naming the file and line."""
import numpy as np
import pytest

from lrr_jax import run_inference
from lrr_jax import run_objects
from lrr_jax import run_records
from lrr_jax.data import rationales
from lrr_jax.evaluation import evaluator as evaluator_lib
from lrr_jax.evaluation import outcomes


def response(answer: str) -> str:
  return f"<SUMMARY> s </SUMMARY> <CONCLUSION> answer {answer} </CONCLUSION>"


def assert_means_are_the_scores(per_record: dict, scores: dict) -> None:
  assert per_record and all(name in scores for name in per_record)
  for name, values in per_record.items():
    assert np.mean(values) == pytest.approx(scores[name]), name


@pytest.mark.parametrize("dataset", ["generated_acre", "star", "something_else"])
def test_per_record_answers_average_to_the_task_scores(dataset):
  answers = ["on", "off", "undetermined", "on", "B"]
  responses = [response("on"), response("on"), "no conclusion", response("ON"), response("B")]
  metadata = [{"split": "iid", "query_type": q, "question_type": t}
              for q, t in zip(["direct", "direct", "indirect", "backward_blocking", "direct"],
                              ["Interaction", "Sequence", "Sequence", "Prediction", "Feasibility"])]
  scores = evaluator_lib.task_scores(dataset, responses, answers, np.zeros(5, int), metadata)
  per_record = evaluator_lib.task_outcomes(dataset, responses, answers, np.zeros(5, int))
  assert_means_are_the_scores(per_record, scores)
  headline = {"generated_acre": "accuracy", "star": "accuracy_pooled", "something_else": "top1"}[dataset]
  assert per_record[headline].tolist() == [1, 0, 0, 1, 1] and per_record["well_formed"].tolist() == [1, 1, 0, 1, 1]


def test_per_record_cells_average_to_the_cater_scores():
  labels = np.array([0, 7, 35, 14])
  responses = [response("0,0"), response("1,0"), "nothing", response("2,3")]
  per_record = evaluator_lib.task_outcomes("generated_cater", responses, [""] * 4, labels)
  assert per_record["top1"].tolist() == [1, 0, 0, 0] and per_record["l1"].tolist() == [0, 1, 10, 1]
  assert_means_are_the_scores(per_record, evaluator_lib.task_scores("generated_cater", responses, [""] * 4,
                                                                     labels, [{}] * 4))


def test_the_evaluator_gives_each_records_scores_and_they_average_to_its_scores(tiny_run):
  run = run_records.load_run(tiny_run[0])
  evaluator = run_objects.make_evaluator(run.config, run.model, run_inference.test_source(run), run.tokenizer)
  evaluation = evaluator.evaluate(run.variables, num_examples=3)
  assert [line["index"] for line in evaluation.examples] == [0, 1, 2]
  assert [line["response"] for line in evaluation.examples] == evaluation.responses
  per_record = {name: outcomes.metric_values(evaluation.examples, name)[1]
                for name in ("top1", "top1_ranked", "top5", "l1", "well_formed")}
  assert_means_are_the_scores(per_record, evaluation.scores)
  source = run_inference.test_source(run)
  labels = [int(source[i]["label"]) for i in range(3)]
  assert per_record["top1"].tolist() == [  # against the answers read from the responses
      float(evaluator_lib.cater_eval.parse_cell(rationales.parse_response(r).answer) == label)
      for r, label in zip(evaluation.responses, labels)]


def test_eval_examples_read_back_and_bad_lines_are_named(tmp_path):
  lines = outcomes.rows([2, 0], {"accuracy": np.array([1, 0]), "l1": np.array([0.5, 2.0])},
                        {"split": ["iid", "iid"]}, ["a", "b"])
  path = tmp_path / outcomes.FILE
  outcomes.write(path, lines)
  assert outcomes.read(path) == lines
  indices, values = outcomes.metric_values(outcomes.read(path), "l1")
  assert indices.tolist() == [0, 2] and values.tolist() == [2.0, 0.5]  # by record index
  assert outcomes.metric_values(lines, "split/iid")[1].tolist() == [0.0, 1.0]  # a group's accuracy
  with pytest.raises(ValueError, match="has no per-record 'split/ood'"):
    outcomes.metric_values(lines, "split/ood")
  with pytest.raises(ValueError, match="has no per-record 'top1'"):
    outcomes.metric_values(lines, "top1")
  with pytest.raises(ValueError, match="2 values of 'l1' for 3 records"):
    outcomes.rows([0, 1, 2], {"l1": np.zeros(2)}, {}, ["a", "b", "c"])
  path.write_text(path.read_text() + "{not json\n")
  with pytest.raises(ValueError, match=rf"{outcomes.FILE}:3 is not JSON"):
    outcomes.read(path)
