"""The release's judge: a rubric per step, the choice parsed from generated text (at random when there is
none, counted), the REASONING check dropping candidates, and a search with it on the tiny model."""
import types

import numpy as np
import pytest

from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import release_judge
from lrr_jax.inference import scorers
from lrr_jax.inference import search
from lrr_jax.models import lrr
from tests.inference import conftest

# The tiny BPE spells the rubrics' English nearly letter by letter (a judge prompt runs to ~300 tokens): the
# judge's model here has 1,024 positions.
POSITIONS = 1024


class Scripted:
  """A stand-in for the model's generation: answers each row from `answer(prompt text, with_video)` and keeps
  the prompts it was shown."""

  def __init__(self, tokenizer, answer):
    self.tokenizer, self.answer, self.prompts = tokenizer, answer, []

  def __call__(self, context, shared, rows, with_video, max_tokens, stops):
    texts = [self.tokenizer.decode(shared + row) for row in rows]
    self.prompts += [(text, with_video) for text in texts]
    return [self.answer(text, with_video) for text in texts], 3 * len(rows)


def context(tokenizer):
  generator = types.SimpleNamespace(max_positions=POSITIONS)  # all that the prompts' fitting reads
  return scorers.Context(generator, tokenizer, None, None, "Where is the snitch?", 3)


def candidates(texts, prefix="<SUMMARY>"):
  return [scorers.Candidate(prefix, text, 0.0, True) for text in texts]


def test_parse_the_choice_and_the_verdict():
  assert release_judge.parse_choice("Since the snitch is at 1,2, I choose response 2.") == 1
  assert release_judge.parse_choice("Since both agree, i choose response [1].") == 0
  for bad in ("", "Since it is better, I choose the second.", "I choose response 3.", "response 2"):
    assert release_judge.parse_choice(bad) is None, bad
  assert release_judge.parse_verdict(" Yes, it is.") is True
  assert release_judge.parse_verdict(" It is not correct.") is False
  assert release_judge.parse_verdict(" incorrect") is False and release_judge.parse_verdict(" no.") is False
  assert release_judge.parse_verdict(" nothing here") is None


@pytest.mark.parametrize("stage", ["SUMMARY", "CAPTION", "REASONING", "CONCLUSION", "response", "sentence 3"])
def test_each_step_gets_its_own_rubric_and_the_answer_form(tokenizer, stage):
  scripted = Scripted(tokenizer, lambda text, video: "Since it is right, I choose response 2." if video else "yes")
  judge = release_judge.ReleaseJudge(scripted)
  ranking = judge.rank(context(tokenizer), stage, candidates(["a b", "c d", "e f"]), np.random.default_rng(0))
  pairs = [text for text, video in scripted.prompts if video]
  assert len(pairs) == len(ranking.comparisons) == 2
  rubric = release_judge.RUBRICS[stage.split()[0]]
  others = [r for name, r in release_judge.RUBRICS.items() if name != stage.split()[0]]
  for text in pairs:  # the tokenizer's own spacing aside, the prompt holds the rubric and the answer form
    squeezed = text.replace(" ", "")
    assert rubric.replace(" ", "") in squeezed and not any(r.replace(" ", "") in squeezed for r in others)
    assert "Sincereason,Ichooseresponse" in squeezed.replace("[", "").replace("]", "")
  assert all(winner == b for a, b, winner in ranking.comparisons)  # response 2 each time
  assert ranking.judge_tokens > 3 * 2 and ranking.scores is None
  assert [video for _, video in scripted.prompts].count(False) == (3 if stage == "REASONING" else 0)


def test_unparseable_choices_are_random_and_counted(tokenizer):
  judge = release_judge.ReleaseJudge(Scripted(tokenizer, lambda text, video: "I think so"))
  ctx = context(tokenizer)
  winners = {tuple(judge.rank(ctx, "CAPTION", candidates(["a", "b", "c", "d"]), np.random.default_rng(seed)).order)
             for seed in range(8)}
  assert len(winners) > 1  # decided at random, not always the first
  assert judge.counts["comparisons"] == judge.counts["unparsed"] == 8 * 3
  assert any("3 of" in note or "2 of" in note for note in ctx.notes) and "decided at random" in ctx.notes[0]


def test_the_reasoning_check_drops_the_candidates_it_judges_incorrect_unless_all(tokenizer):
  def answer(text, video):
    if video:
      return "Since it is shorter, I choose response 1."
    return "no" if "wrong" in text else "yes"

  judge = release_judge.ReleaseJudge(Scripted(tokenizer, answer))
  texts = ["wrong one", "right one", "wrong two", "right two"]
  ranking = judge.rank(context(tokenizer), "REASONING", candidates(texts), np.random.default_rng(0))
  assert ranking.order[:2] in ([1, 3], [3, 1]) and sorted(ranking.order[2:]) == [0, 2]
  assert [set(c[:2]) for c in ranking.comparisons] == [{1, 3}]  # only the kept are judged
  assert judge.counts["checked"] == 4 and judge.counts["dropped"] == 2
  all_wrong = release_judge.ReleaseJudge(Scripted(tokenizer, answer))
  ranking = all_wrong.rank(context(tokenizer), "REASONING", candidates(["wrong"] * 3), np.random.default_rng(0))
  assert sorted(ranking.order) == [0, 1, 2] and len(ranking.comparisons) == 2 and all_wrong.counts["dropped"] == 0


@pytest.mark.slow
def test_stage_beam_with_the_release_judge_on_the_tiny_model(tiny, tokenizer):
  model = lrr.LRRModel(lrr.lrr_config("tiny", vocab_size=tokenizer.vocab_size, max_positions=POSITIONS))
  variables = conftest.closing_tag_variables(model, tokenizer, strength=4.5)
  generator = generate_lib.Generator(model, cache_length=160, conclusion_id=tokenizer.token_id("<CONCLUSION>"))
  config = search.SearchConfig(strategy="stage_beam", num_candidates=3, max_new_tokens=48, max_step_tokens=8,
                               sampling=generate_lib.Sampling(temperature=1.0))
  judge = release_judge.ReleaseJudge(max_judge_tokens=8, max_check_tokens=4)
  searcher = search.Searcher(generator, tokenizer, config, judge)
  result = searcher(variables, tiny["video"], tiny["prompt"], tiny["frames"], "Where is the snitch?")
  assert [s.name for s in result.steps] == ["SUMMARY", "CAPTION", "REASONING", "CONCLUSION"]
  for step in result.steps:
    assert len(step.candidates) == 3 and step.scores is None and 0 <= step.kept[0] < 3
    assert 1 <= len(step.comparisons) <= 2 and step.kept[0] == step.comparisons[-1][2]
  assert judge.counts["comparisons"] == sum(len(s.comparisons) for s in result.steps)
  assert judge.counts["checked"] == 3 and result.judge_tokens > 0
  assert any("correctness check" in note for note in result.notes)
