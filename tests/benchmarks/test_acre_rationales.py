"""benchmarks/acre_rationales.py reads back every panel and every blicket status of a ground-truth rationale."""
from benchmarks import acre_rationales
from lrr_jax.data.worlds import acre


def test_parsers_read_back_the_ground_truth_rationale():
  for problem in acre.generate(acre.AcreConfig(), 5, seed=3):
    text = acre.rationale_example(problem, 0, "full").response_text
    status = acre.blicket_statuses(problem)
    names = lambda ids: ", ".join(problem.names[k] for k in ids)
    assert acre_rationales.panels(text) == {str(i): (names(ids), "on" if light else "off")
                                            for i, (ids, light) in enumerate(problem.context)}
    assert acre_rationales.statuses(text) == {(problem.names[k], reason) for k, (_, reason) in status.items()}
