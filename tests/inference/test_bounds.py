"""Generation never reads past the model's positions or the KV cache: it refuses with the numbers, or cuts a
budget and says so; searches too large for memory are refused before anything is allocated; `should_stop`
ends a search between steps with the text so far."""
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import scorers
from lrr_jax.inference import search

SAMPLING = generate_lib.Sampling(temperature=1.0)
NEVER = jnp.asarray([[-5]])  # a stop table no token matches
ROOT = pathlib.Path(__file__).parents[2]


def start(generator, tiny):
  prompt = generate_lib.left_pad([tiny["prompt"]], [tiny["frames"]], 0)
  return generator.start(tiny["variables"], prompt, generator.encode_video(tiny["variables"], tiny["video"][None]))


def test_greedy_generation_past_the_positions_is_an_error_and_the_last_position_is_real(tiny):
  model, variables, video = tiny["model"], tiny["variables"], tiny["video"][None]
  assert model.config.decoder.max_positions == 256
  generator = generate_lib.Generator(model, cache_length=400)  # the cache would hold more than the positions
  p = len(tiny["prompt"])
  prompt = generate_lib.left_pad([tiny["prompt"]], [tiny["frames"]], 0)
  with pytest.raises(ValueError, match=rf"{p} tokens so far \+ 300 max_new_tokens = {p + 300} > the 256 "
                                       r"positions of the model \(model.config.decoder.max_positions"):
    generate_lib.generate(generator, variables, prompt, video, [[2]], 300)
  with pytest.raises(ValueError, match=rf"= 257 > the 256 positions.*at most {256 - p} more fit"):
    generator.sample(variables, start(generator, tiny), jax.random.key(0), NEVER, 3, max_new_tokens=257 - p)

  state, sampled = generator.sample(variables, start(generator, tiny), jax.random.key(0), NEVER, 3,
                                    max_new_tokens=256 - p)  # exactly fills the positions: the last fed is 255
  assert int(sampled.lengths[0]) == 256 - p and int(state.position[0]) == 256
  tokens = np.asarray(tiny["prompt"] + list(np.asarray(sampled.tokens[0])))[None]
  logits = model.apply(variables, tokens, np.arange(256)[None], np.ones_like(tokens), np.zeros_like(tokens), video)
  np.testing.assert_allclose(np.asarray(state.logits[0]), np.asarray(logits[0, -1]), rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(sampled.tokens[0]), np.argmax(np.asarray(logits[0, p - 1:-1]), -1))


def test_the_kv_cache_bound_is_an_error_for_sampling_and_given_tokens(tiny):
  p = len(tiny["prompt"])
  generator = generate_lib.Generator(tiny["model"], cache_length=p + 8)
  state = start(generator, tiny)
  assert generator.room(state) == (8, f"the {p + 8} slots of the KV cache (Generator cache_length)")
  with pytest.raises(ValueError, match=rf"cache slot {p} \+ 9 max_new_tokens = {p + 9} > the {p + 8} slots"):
    generator.sample(tiny["variables"], state, jax.random.key(0), NEVER, 3, max_new_tokens=9)
  with pytest.raises(ValueError, match=rf"cache slot {p} \+ 9 given tokens = {p + 9} > the {p + 8} slots"):
    generator.extend(tiny["variables"], state, jnp.ones((1, 9), jnp.int32), 3)
  with pytest.raises(ValueError, match=r"A prompt of 300 tokens > the 256 positions"):
    long = generate_lib.left_pad([list(range(3, 303))], [[0] * 300], 0)
    generate_lib.Generator(tiny["model"], cache_length=400).start(tiny["variables"], long, None)


def test_stage_beam_cuts_its_last_stages_to_the_positions_and_says_so(tiny, tokenizer):
  generator = generate_lib.Generator(tiny["model"], cache_length=400,
                                     conclusion_id=tokenizer.token_id("<CONCLUSION>"))
  config = search.SearchConfig(strategy="stage_beam", num_candidates=2, max_step_tokens=100, max_new_tokens=100,
                               sampling=SAMPLING)
  searcher = search.Searcher(generator, tokenizer, config, scorers.Likelihood())
  searcher.stage_tags = [(name, opening, -5) for name, opening, _ in searcher.stage_tags]  # run to the budget
  result = searcher(tiny["variables"], tiny["video"], tiny["prompt"], tiny["frames"], "Where is the snitch?")
  position = len(tiny["prompt"])  # the next token's (0-based) position
  for step in result.steps:
    budget = min(100, 256 - position - 1)  # after the stage's opening tag
    assert max(step.num_tokens) <= budget and np.isfinite(step.scores).all(), step
    assert (f"{step.name}: token budget cut from 100 to {budget} to fit the 256 positions of the model"
            in " ".join(step.notes)) == (budget < 100)
    position += 1 + step.num_tokens[step.kept[0]]
  assert position <= 256 and result.notes  # 4 x 101 tokens were asked for: something was cut
  assert result.partial == (len(result.steps) < 4)
  if result.partial:
    assert re.fullmatch(r"\w+ not run: no room left in the 256 positions.*", result.notes[-1])


class RecordingGenerator(generate_lib.Generator):
  """A generator that keeps every state `extend` returns (the judge's prompts among them)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.extended = []

  def extend(self, *args, **kwargs):
    state = super().extend(*args, **kwargs)
    self.extended.append(state)
    return state


def long_question(tokenizer, tokens: int) -> str:
  """A question of at least `tokens` tokens."""
  words = "Where is the snitch at the end of the video, and which cone covers it?".split()
  text = []
  while len(tokenizer.encode(" ".join(text))) < tokens:
    text.append(words[len(text) % len(words)])
  return " ".join(text)


@pytest.mark.slow  # over 10 s
def test_judge_prompts_past_the_positions_show_cut_texts_and_say_so(tiny, tokenizer):
  """Stages of 30 tokens: the response so far, two candidates and the judge's template overflow the 256
  positions; every judge prompt is cut to fit, and every cut is noted."""
  generator = RecordingGenerator(tiny["model"], 320, conclusion_id=tokenizer.token_id("<CONCLUSION>"))
  config = search.SearchConfig(strategy="stage_beam", num_candidates=4, max_step_tokens=30, sampling=SAMPLING)
  searcher = search.Searcher(generator, tokenizer, config, scorers.Judge())
  searcher.stage_tags = [(name, opening, -5) for name, opening, _ in searcher.stage_tags]  # run to the budget
  result = searcher(tiny["variables"], tiny["video"], tiny["prompt"], tiny["frames"], "Where is the snitch?")
  assert [s.name for s in result.steps] == ["SUMMARY", "CAPTION", "REASONING", "CONCLUSION"]
  assert len(generator.extended) == 4 * (1 + 2)  # per stage: its opening tag, then the judge's two rounds
  for state in generator.extended:
    assert int(jnp.max(state.position)) <= 256 and np.isfinite(np.asarray(state.logits)).all()
  for step in result.steps:  # the judge's two rounds, each cut (the candidates re-encode to more than 30 tokens)
    assert len(step.notes) == 2 and all(re.fullmatch(
        rf"{step.name}: the judge was shown \d+ of \d+ texts cut to \d+ tokens each \(the response so far keeps its "
        r"end, candidates their start\) to fit the 256 positions of the model .*", n) for n in step.notes), step.notes
  cuts = [n for step in result.steps for n in step.notes]
  assert all(n in result.notes for n in cuts)


def test_a_question_too_long_for_the_judge_is_an_error(tiny, tokenizer):
  context = scorers.Context(tiny["generator"], tokenizer, tiny["variables"], None, long_question(tokenizer, 300), 3)
  pair = (scorers.Candidate("", "a", 0.0, True), scorers.Candidate("", "b", 0.0, True))
  with pytest.raises(ValueError, match=r"judge's prompt for CAPTION does not fit the 256 positions .* even with "
                                       "empty responses"):
    scorers.model_compare(context, "CAPTION", [pair])


def test_decode_state_bytes_count_the_kv_cache_the_video_and_the_logits(tiny):
  config = tiny["model"].config
  d = config.decoder
  assert (d.num_layers, d.num_heads, d.head_dim, d.cross_attention_layers) == (2, 4, 16, (0, 1))
  self_attention = 2 * (2 * 3 * 10 * 4 * 16 * 4) + 3 * 10 * 4  # layers x (keys + values), float32; segment ids
  cross = 2 * (2 * 1 * 7 * 8 * 8 * 4) + 2 * 1 * 7 * 4  # blocks x (keys + values), 8 heads of 8; frame, segment
  logits = 3 * d.vocab_size * 4
  assert generate_lib.decode_state_bytes(config, 3, 10, 7) == self_attention + cross + logits


def test_a_search_too_large_for_memory_is_refused_before_anything_runs(tiny, tokenizer, monkeypatch):
  monkeypatch.setattr(generate_lib, "free_memory", lambda: (16 * 2**30, "free in this test"))
  generator = generate_lib.Generator(tiny["model"], cache_length=704)
  generator.encode_video = lambda *args: pytest.fail("the search started")
  config = search.SearchConfig(strategy="stage_beam", num_candidates=100000, max_step_tokens=10)
  searcher = search.Searcher(generator, tokenizer, config, scorers.Likelihood())
  needed = generate_lib.decode_state_bytes(tiny["model"].config, 100000, 704, 4 * 64)
  assert needed > 100000 * 704 * 2 * 2 * 4 * 16 * 4  # the keys and values alone: 72 GB
  with pytest.raises(ValueError, match=rf"SearchConfig.num_candidates=100000 x beam=1: 100000 rows of 704 cache "
                                       rf"slots need \d+.\d GiB \({needed:,} bytes\) .* limit of 8.0 GiB \(50% of "
                                       r"16.0 GiB free in this test\)"):
    searcher(tiny["variables"], tiny["video"], tiny["prompt"], tiny["frames"], "Where?")
  small = search.Searcher(generator, tokenizer, search.SearchConfig(num_candidates=4, memory_limit_bytes=10**6),
                          scorers.Likelihood())
  with pytest.raises(ValueError, match=r"4 rows of 704 cache slots need .* \(memory_limit_bytes\)"):
    small(tiny["variables"], tiny["video"], tiny["prompt"], tiny["frames"], "Where?")


@pytest.mark.skipif(jax.devices()[0].platform != "cpu", reason="the host's memory is read where JAX reports none")
def test_free_memory_on_cpu_is_the_hosts_available_memory():
  free, where = generate_lib.free_memory()
  total = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
  assert 0 < free <= total and "MemAvailable" in where


def test_should_stop_ends_a_stage_search_after_the_current_stage(tiny, tokenizer):
  config = search.SearchConfig(strategy="stage_beam", num_candidates=3, max_step_tokens=10, sampling=SAMPLING)
  searcher = search.Searcher(tiny["generator"], tokenizer, config, scorers.Reward(lambda *args: 0.0))
  asked = []
  stop_now = lambda: asked.append(True) or True
  result = searcher(tiny["variables"], tiny["video"], tiny["prompt"], tiny["frames"], "Where?", should_stop=stop_now)
  (step,) = result.steps
  assert step.name == "SUMMARY" and result.partial and len(asked) == 1
  assert result.text == "<SUMMARY>" + step.candidates[step.kept[0]].removesuffix("</s>")
  assert result.notes == ["stopped by should_stop after 1 steps."]
  whole = searcher(tiny["variables"], tiny["video"], tiny["prompt"], tiny["frames"], "Where?",
                   should_stop=lambda: False)
  assert len(whole.steps) == 4 and not whole.partial
  assert whole.steps[0].candidates == step.candidates  # same seed: the partial result is the whole one's start


def run_infer(workdir, *flags):
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_THREEFRY_PARTITIONABLE": "false"}
  return subprocess.run([sys.executable, "-m", "lrr_jax.infer", f"--workdir={workdir}", *flags],
                        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)


def test_infer_refuses_a_budget_past_the_positions_and_a_search_past_memory(tiny_run):
  workdir, _ = tiny_run
  past = run_infer(workdir, "--strategy=greedy", "--max_new_tokens=300")
  assert past.returncode != 0, past.stdout
  assert re.search(r"A prompt of \d+ tokens \+ SearchConfig.max_new_tokens 300 = \d+ > the 256 positions of the "
                   r"model \(model.config.decoder.max_positions\); lower the budget \(infer: --max_new_tokens\) to "
                   r"at most \d+\.", past.stderr), past.stderr[-2000:]
  assert "<pad>" not in past.stdout
  huge = run_infer(workdir, "--strategy=best_of_n", "--num_candidates=10000000", "--max_new_tokens=8")
  assert huge.returncode != 0, huge.stdout
  assert re.search(r"best_of_n with SearchConfig.num_candidates=10000000 x beam=1: 10000000 rows of \d+ cache "
                   r"slots need [\d.]+ GiB \([\d,]+ bytes\)", huge.stderr), huge.stderr[-2000:]
