"""Surrogate tasks prompted: the rate, requests and answers true to the world, the loss mask, determinism, the
parser and generation's frame rule on prompted rationales."""
import re

import numpy as np
import pytest

from lrr_jax.data import encoding
from lrr_jax.data import rationales
from lrr_jax.data import surrogate
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.builders import something_else
from lrr_jax.data.worlds import acre
from lrr_jax.data.worlds import cater

VIDEOS = cater.generate(cater.CaterConfig(num_frames=9, contain_prob=0.7), 12, seed=3)
PROBLEMS = acre.generate(acre.AcreConfig(), 3, seed=3)


def examples(variant: str = "full") -> list[tuple[rationales.Example, int]]:
  """(example, its number of frames) for generated CATER videos and ACRE queries."""
  return ([(cater.rationale_example(VIDEOS, n, variant), VIDEOS.frames.shape[1]) for n in range(len(VIDEOS))]
          + [(acre.rationale_example(p, q, variant), acre.NUM_CONTEXT + 1) for p in PROBLEMS for q in range(4)])


def prompted(variant: str, draws: int, seed: int = 0):
  """(original, prompted, fact, its number of frames) for `draws` prompts (probability 1) over the examples."""
  pool = examples(variant)
  out = []
  for draw in range(draws):
    example, num_frames = pool[draw % len(pool)]
    new, fact = surrogate.maybe_prompt(example, 1.0, np.random.default_rng([seed, draw % len(pool), draw]))
    out.append((example, new, fact, num_frames))
  return out


@pytest.fixture(scope="module")
def tokenizer():
  texts = [s.text for v in rationales.VARIANTS for e, _ in examples(v) for s in e.question + e.response]
  return tokenizer_lib.train_bpe(texts + ["<track> at frame 3? "], 500)


def test_prompting_rate_is_the_configured_probability():
  example = cater.rationale_example(VIDEOS, 0)
  n, p = 10_000, 0.3
  count = sum(surrogate.maybe_prompt(example, p, np.random.default_rng([7, 0, draw]))[1] is not None
              for draw in range(n))
  assert abs(count - n * p) < 4.5 * np.sqrt(n * p * (1 - p)), count  # a binomial bound (~1e-5 to fail)
  assert all(surrogate.maybe_prompt(example, 0.0, np.random.default_rng(d))[1] is None for d in range(100))


def test_every_task_and_many_insertion_points_are_drawn():
  drawn = prompted("full", 400)
  assert {fact.task for _, _, fact, _ in drawn} == set(surrogate.TASKS)  # CATER covers a snitch: reid too
  points = {next(i for i, s in enumerate(new.response) if not s.in_loss) for _, new, _, _ in drawn}
  assert len(points) > 10


def _cell(text: str) -> tuple[int, int]:
  row, col = re.search(r"(\d),(\d)", text).groups()
  return int(row), int(col)


def test_requests_and_answers_are_well_formed_and_true_to_the_world():
  for n in range(len(VIDEOS)):
    example = cater.rationale_example(VIDEOS, n)
    for draw in range(30):
      new, fact = surrogate.maybe_prompt(example, 1.0, np.random.default_rng([0, n, draw]))
      request = [i for i, s in enumerate(new.response) if not s.in_loss]
      i = request[0]
      assert request == [i, i + 1] and len(new.response) == len(example.response) + 3
      assert new.response[i].text == f"<{fact.task}> at frame {fact.frame}? "
      assert new.response[i + 1] == rationales.Segment(f"frame {fact.frame}:", fact.frame, in_loss=False)
      assert new.response[i + 2] == rationales.Segment(fact.answer, fact.frame)
      assert [s.text for s in new.response[:i] + new.response[i + 3:]] == [s.text for s in example.response]
      assert new.response[i + 3].text.startswith(("<", "</", "frame "))  # what generation stops on
      t, snitch = fact.frame, 0  # the world's ground truth, not the rationale's text
      container = VIDEOS.container[n, t, snitch]
      if fact.task == "detect":
        assert t == 0 and f"snitch {cater.cell_text(VIDEOS.cell[n, 0, snitch])}" in fact.answer
      elif fact.task == "reid" or container >= 0:
        assert container >= 0 and cater.object_name(VIDEOS, n, container) in fact.answer
        assert _cell(fact.answer.split("<reid>")[1]) == tuple(VIDEOS.cell[n, t, container])
      else:
        assert _cell(fact.answer) == tuple(VIDEOS.cell[n, t, snitch])


def test_acre_and_something_else_facts_are_their_per_frame_detections_and_reidentifications():
  problem = PROBLEMS[0]
  facts = surrogate.facts(acre.rationale_example(problem, 0))
  assert [(f.task, f.frame) for f in facts] == [("detect", t) for t in range(acre.NUM_CONTEXT + 1)] + [
      ("reid", acre.NUM_CONTEXT)]  # the query panel's object, re-identified in the context panels
  for (ids, light), fact in zip(problem.context, facts):  # the panel's objects and the "is it on" surrogate
    assert all(problem.names[k] in fact.answer for k in ids) and f"light {'on' if light else 'off'}" in fact.answer
  (query,), _, _ = problem.queries[0]
  panels = ", ".join(str(i) for i, (ids, _) in enumerate(problem.context) if query in ids)
  assert f"<reid> {problem.names[query]} as in frames {panels}. " in facts[-1].answer
  video = {"template": "Moving [something] up"}
  cup = {"box2d": {"x1": 0, "x2": 10, "y1": 0, "y2": 10}, "category": "cup"}
  example = something_else.something_else_example(video, 3, [[cup], [], [cup]], (60, 60), "full")
  assert [(f.task, f.frame, f.answer) for f in surrogate.facts(example)] == [
      ("detect", 0, " <detect> cup 0,0. "), ("detect", 1, " <detect> nothing. "),
      ("detect", 2, " <detect> cup 0,0. <reid> cup as in frames 0. "),  # back after frame 1 without it
      ("reid", 2, " <detect> cup 0,0. <reid> cup as in frames 0. ")]  # its <track> names no frame


@pytest.mark.parametrize("variant", ["no_surrogate", "direct"])
def test_ablations_without_surrogate_text_are_never_prompted(variant):
  for example, _ in examples(variant):
    assert surrogate.maybe_prompt(example, 1.0, np.random.default_rng(0)) == (example, None)


def test_loss_mask_leaves_out_the_request_and_keeps_the_answer(tokenizer):
  for original, new, fact, _ in prompted("full", 20):
    arrays = encoding.encode_example(new, tokenizer, 400)
    expected = [t for s in new.response if s.in_loss for t in tokenizer.encode(s.text)] + [tokenizer.eos_id]
    assert arrays["targets"][arrays["loss_mask"] == 1].tolist() == expected
    request = tokenizer.encode(f"<{fact.task}> at frame {fact.frame}? ") + tokenizer.encode(f"frame {fact.frame}:")
    answer = tokenizer.encode(fact.answer)
    masked = arrays["targets"][(arrays["loss_mask"] == 0) & (arrays["segment_ids"] == 1)].tolist()
    prompt, _ = encoding.encode_prompt(original, tokenizer)
    assert masked == prompt[1:] + request  # the question, then the request: the answer is all in the loss
    assert len(expected) == len(encoding.segment_tokens(original.response, tokenizer)[0]) + len(answer) + 1


def test_prompts_are_deterministic_per_seed_record_and_draw():
  example = cater.rationale_example(VIDEOS, 4)
  draw = lambda seed, index, d: surrogate.maybe_prompt(example, 0.5, np.random.default_rng([seed, index, d]))
  assert all(draw(0, 4, d) == draw(0, 4, d) for d in range(50))
  by_draw = [draw(0, 4, d)[1] for d in range(50)]  # draw = epoch * records + index: another epoch, another prompt
  assert len({(f.task, f.frame) if f else None for f in by_draw}) > 3
  assert [draw(1, 4, d)[1] for d in range(50)] != by_draw


@pytest.mark.parametrize("variant", ["full", "no_tags"])
def test_parser_reads_prompted_rationales(variant):
  for original, new, fact, _ in prompted(variant, 60):
    parsed, before = rationales.parse_response(new.response_text), rationales.parse_response(original.response_text)
    assert parsed.problems == [] and parsed.answer == original.answer
    assert list(parsed.stages) == list(before.stages)
    assert fact.answer.strip() in new.response_text


@pytest.mark.parametrize("variant", ["full", "no_tags"])
def test_generation_frame_rule_gives_prompted_frame_indices(tokenizer, variant):
  markers, conclusion = tokenizer.frame_markers(), tokenizer.token_id("<CONCLUSION>")
  for n, (original, new, _, num_frames) in enumerate(prompted(variant, 60)):
    arrays = encoding.encode_example(new, tokenizer, 400)
    prompt, _ = encoding.encode_prompt(new, tokenizer)
    frame = arrays["frame_index"][len(prompt) - 1]
    for i in range(len(prompt), int(arrays["segment_ids"].sum())):  # replay generation's rule
      token = arrays["inputs"][i]
      frame = num_frames - 1 if token == conclusion else markers.get(token, frame)
      assert frame == arrays["frame_index"][i], (variant, n, i, tokenizer.decode([token]))


def test_user_requests_parse_or_name_the_problem():
  assert surrogate.parse_request("track snitch at frame 5") == ("track", 5)
  assert surrogate.parse_request("Re-identify the cone at frame 3?") == ("reid", 3)
  assert surrogate.parse_request("detect 0") == ("detect", 0)
  assert surrogate.parse_request("  tracking the red cone at frame 12 ? ") == ("track", 12)
  for bad in ("where is the snitch at frame 2", "track the snitch", "track -1", "5.5", "track 5.5",
              "track snitch at frame 3 and 5", "track 3 and 5", "detect 64", "track 2 cones at frame 5"):
    with pytest.raises(ValueError, match=r"expected '<task> \[words\] <frame>\[\?\]': task one of .*"
                       r"the frame as a whole number 0-63; no other numbers"):
      surrogate.parse_request(bad)
  with pytest.raises(ValueError, match="frames run from 0 to 63"):
    surrogate.request_segments("track", 64, 0)


def test_stop_tokens_are_what_follows_an_answer(tokenizer):
  stops = set(surrogate.stop_tokens(tokenizer))
  for _, new, _, _ in prompted("full", 40):
    i = next(i for i, s in enumerate(new.response) if not s.in_loss)
    assert tokenizer.encode(new.response[i + 3].text)[0] in stops
    assert not stops & set(tokenizer.encode(new.response[i + 2].text))  # the answer never stops itself
