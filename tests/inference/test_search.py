"""Each strategy keeps what a scorer with a known preference prefers, and respects stage boundaries."""
import numpy as np
import pytest

from lrr_jax.data import rationales
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import scorers
from lrr_jax.inference import search

SAMPLING = generate_lib.Sampling(temperature=1.0)


def run(tiny, tokenizer, scorer, **overrides):
  config = search.SearchConfig(**{**dict(num_candidates=4, max_new_tokens=48, max_step_tokens=10,
                                         sampling=SAMPLING), **overrides})
  searcher = search.Searcher(tiny["generator"], tokenizer, config, scorer)
  return searcher(tiny["variables"], tiny["video"], tiny["prompt"], tiny["frames"], "Where is the snitch?")


def shortest(question, prefix, candidate, stage):
  return -len(candidate)


def test_stage_beam_keeps_the_rewarded_candidate_of_every_stage(tiny, tokenizer):
  result = run(tiny, tokenizer, scorers.Reward(shortest), strategy="stage_beam")
  assert [step.name for step in result.steps] == list(rationales.STAGES)
  expected = ""
  for step in result.steps:
    lengths = [len(c) for c in step.candidates]
    assert len(step.candidates) == 4
    assert lengths[step.kept[0]] == min(lengths)
    assert step.scores == [-n for n in lengths]
    closing = f"</{step.name}>"
    for candidate in step.candidates:  # a stage stops at its own closing tag (or the end of text), never later
      assert closing not in candidate[:-len(closing)], candidate
    expected += f"<{step.name}>" + step.candidates[step.kept[0]]
  assert result.text == expected.removesuffix("</s>")
  stopped = sum(c.endswith(f"</{s.name}>") for s in result.steps for c in s.candidates)
  assert stopped >= 4, "the biased model should reach closing tags"
  assert result.generated_tokens == sum(sum(s.num_tokens) for s in result.steps)
  assert all(0 < n <= 10 for s in result.steps for n in s.num_tokens)


def test_best_of_n_keeps_the_best_complete_response(tiny, tokenizer):
  longest = lambda q, p, c, s: len(c)
  result = run(tiny, tokenizer, scorers.Reward(longest), strategy="best_of_n", num_candidates=5)
  (step,) = result.steps
  assert result.text == step.candidates[int(np.argmax([len(c) for c in step.candidates]))].removesuffix("</s>")


def test_sentence_beam_steps_end_at_a_period_or_the_end(tiny, tokenizer):
  def short_and_open(question, prefix, candidate, stage):  # the biased model would end at once
    return -len(candidate) - 1000 * ("</CONCLUSION>" in candidate)

  result = run(tiny, tokenizer, scorers.Reward(short_and_open), strategy="sentence_beam", max_new_tokens=30)
  assert len(result.steps) >= 2
  text = ""
  for step in result.steps:
    kept = step.candidates[step.kept[0]]
    assert step.scores[step.kept[0]] == max(step.scores)
    text += kept
  assert result.text == text.removesuffix("</s>")
  for step in result.steps[:-1]:
    kept = step.candidates[step.kept[0]]
    assert kept.rstrip().endswith(".") or step.num_tokens[step.kept[0]] == 10, kept


def test_budgets_cut_to_fit_reuse_one_compiled_decode(tiny, tokenizer):
  """sentence_beam's budgets shrink as the response grows (max_new_tokens - used): the decode is compiled once
  per row count, not once per budget, and each budget is kept to."""
  generator = generate_lib.Generator(tiny["model"], cache_length=160,
                                     conclusion_id=tokenizer.token_id("<CONCLUSION>"))
  limits, sample = [], generator.sample
  def recording_sample(*args, limit, **kwargs):
    limits.append(limit)
    return sample(*args, limit=limit, **kwargs)
  generator.sample = recording_sample
  config = search.SearchConfig(strategy="sentence_beam", num_candidates=4, max_new_tokens=16, max_step_tokens=10,
                               sampling=SAMPLING)
  open_ended = lambda question, prefix, candidate, stage: -1000 * ("</CONCLUSION>" in candidate)  # go on
  searcher = search.Searcher(generator, tokenizer, config, scorers.Reward(open_ended))
  result = searcher(tiny["variables"], tiny["video"], tiny["prompt"], tiny["frames"], "Where is the snitch?")
  assert len(set(limits)) >= 2 and generator._jit_sample._cache_size() == 1  # pylint: disable=protected-access
  assert all(n <= limit for step, limit in zip(result.steps, limits) for n in step.num_tokens)


def test_beam_keeps_several_and_likelihood_scores_rank(tiny, tokenizer):
  result = run(tiny, tokenizer, scorers.Likelihood(), strategy="stage_beam", beam=2, num_candidates=3)
  for step in result.steps:
    assert len(step.candidates) == (3 if step.name == "SUMMARY" else 6)  # beams x candidates after the first
    assert step.kept == list(np.argsort(-np.asarray(step.scores), kind="stable")[:2])


def test_judge_tournament_is_a_knockout_with_batched_rounds(tiny, tokenizer):
  calls = []

  def prefer_longer(context, stage, pairs):
    calls.append(len(pairs))
    return [int(len(b.text) > len(a.text)) for a, b in pairs], 0

  result = run(tiny, tokenizer, scorers.Judge(prefer_longer), strategy="stage_beam", num_candidates=5)
  for step in result.steps:
    assert len(step.comparisons) == 4  # N - 1
    lengths = [len(c) for c in step.candidates]
    assert lengths[step.kept[0]] == max(lengths)
  assert calls == [2, 1, 1] * 4  # 5 candidates: rounds of 2, 1 and 1 comparisons, each one batch


def test_model_judge_runs_batched_on_the_encoded_video(tiny, tokenizer):
  result = run(tiny, tokenizer, scorers.Judge(), strategy="best_of_n", num_candidates=4)
  (step,) = result.steps
  assert len(step.comparisons) == 3 and result.judge_tokens > 0
  assert step.kept[0] in {winner for _, _, winner in step.comparisons[-1:]}


def test_backtracking_resamples_the_previous_stage_below_the_cutoff(tiny, tokenizer):
  seen = []

  def low_captions(question, prefix, candidate, stage):
    seen.append(stage)
    return -1.0 if stage == "CAPTION" and seen.count("CAPTION") <= 8 else 1.0  # 2 rounds of 4 candidates

  result = run(tiny, tokenizer, scorers.Reward(low_captions), strategy="stage_beam", backtrack_cutoff=0.0,
               max_retries=3)
  names = [(s.name, s.backtracked) for s in result.steps]
  assert names == [("SUMMARY", False), ("CAPTION", True), ("SUMMARY", False), ("CAPTION", True),
                   ("SUMMARY", False), ("CAPTION", False), ("REASONING", False), ("CONCLUSION", False)]
  always_low = run(tiny, tokenizer, scorers.Reward(lambda *a: -1.0), strategy="stage_beam",
                   backtrack_cutoff=0.0, max_retries=2)
  assert sum(s.backtracked for s in always_low.steps) == 2


def test_unknown_strategy_is_an_error():
  with pytest.raises(ValueError, match="strategy='beam'"):
    search.SearchConfig(strategy="beam")
