"""The evaluator refuses a budget past the model's positions at construction and a batch past memory before it
runs; `should_stop` ends it after a batch with the scores of the records done, marked partial."""
import pytest

from lrr_jax.evaluation import evaluator as evaluator_lib
from lrr_jax import run_inference
from lrr_jax import run_records


@pytest.fixture(scope="module")
def run(tiny_run):
  return run_records.load_run(tiny_run[0])


def make_evaluator(run, max_length: int = 192, max_new_tokens: int = 12, **kwargs) -> evaluator_lib.Evaluator:
  config = run.config
  return evaluator_lib.Evaluator(run.model, run.tokenizer, run_inference.test_source(run), config.data.dataset,
                                 config.data.variant, max_length, max_new_tokens, batch_size=2,
                                 frames=config.video_shape(), **kwargs)


def test_a_budget_past_the_positions_is_an_error_at_construction(run):
  assert run.model.config.decoder.max_positions == 256 and run.config.data.max_length == 192
  with pytest.raises(ValueError, match=r"config.data.max_length 192 \+ config.eval.max_new_tokens 65 = 257 > the "
                                       r"256 positions of the model \(model.config.decoder.max_positions\)"):
    make_evaluator(run, max_new_tokens=65)
  make_evaluator(run, max_new_tokens=64)  # exactly the positions


def test_a_prompt_past_max_length_is_an_error_naming_the_record(run):
  evaluator = make_evaluator(run, max_length=8)
  with pytest.raises(ValueError, match=r"Test record 0: a prompt of \d+ tokens \(config.data.max_length 8\)"):
    evaluator(run.variables)


def test_a_batch_past_memory_is_refused_before_it_runs(run):
  evaluator = make_evaluator(run, memory_limit_bytes=10**5)
  evaluator.generator.encode_video = lambda *args: pytest.fail("the batch ran")
  with pytest.raises(ValueError, match=r"config.eval.batch_size=2: 2 rows of 204 cache slots \(config.data.max_length"
                                       r" \+ config.eval.max_new_tokens\) need [\d.]+ GiB \([\d,]+ bytes\).*"
                                       r"\(memory_limit_bytes\)"):
    evaluator(run.variables)


def test_should_stop_after_the_first_batch_gives_that_batchs_scores_marked_partial(run):
  evaluator = make_evaluator(run)
  asked = []
  scores, responses = evaluator(run.variables, should_stop=lambda: asked.append(True) or True)
  assert len(asked) == 1 and len(responses) == 2
  assert scores.pop("partial") == 1 and scores.pop("num_examples") == 2
  first_batch, first_responses = evaluator(run.variables, num_examples=2)  # the same records, evaluated whole
  assert responses == first_responses and scores == first_batch
  complete, _ = evaluator(run.variables, num_examples=2, should_stop=lambda: pytest.fail("asked after the last batch"))
  assert "partial" not in complete


def test_an_evaluation_compiles_per_shape_not_per_batch(run):
  """Prompts padded to fixed widths and a partial last batch to the batch's rows: 3 records in batches of 2
  and 1 compile the video encoder and the decode loop once, and 4 other records compile nothing new."""
  evaluator = make_evaluator(run)
  generator = evaluator.generator
  jitted = dict(encode_video=generator.encode_video, start=generator._jit_start,  # pylint: disable=protected-access
                extend=generator._jit_extend, sample=generator._jit_sample)  # pylint: disable=protected-access
  _, responses = evaluator(run.variables, num_examples=3)
  sizes = {name: fn._cache_size() for name, fn in jitted.items()}  # pylint: disable=protected-access
  assert len(responses) == 3 and sizes["encode_video"] == 1 and sizes["sample"] == 1
  assert sizes["start"] <= 2 and sizes["extend"] <= 2  # generation's and the ranking's
  evaluator(run.variables, num_examples=4)
  assert {name: fn._cache_size() for name, fn in jitted.items()} == sizes  # pylint: disable=protected-access
