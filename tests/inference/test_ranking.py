"""Ranking a closed answer set: the scored text is the training text, and the cached scores equal the full
forward pass's log-probabilities."""
import jax
import numpy as np
import pytest

from lrr_jax.data import encoding
from lrr_jax.data.worlds import cater
from lrr_jax.evaluation import evaluator
from lrr_jax.inference import ranking


@pytest.mark.parametrize("variant", ["full", "no_tags", "direct"])
def test_prefix_candidate_and_ending_rebuild_the_training_response(tokenizer, variant):
  videos = cater.generate(cater.CaterConfig(num_frames=4, resolution=16, num_objects=3, num_cones=1), 4, 1)
  markers = [tokenizer.encode("answer"), tokenizer.encode(" answer")]
  for n in range(4):
    example = cater.rationale_example(videos, n, variant)
    response, _ = encoding.segment_tokens(example.response, tokenizer)
    response += [tokenizer.eos_id]
    ending = evaluator.answer_ending(example, tokenizer)
    rebuilt = ranking.answer_prefix(response, markers) + tokenizer.encode(f" {example.answer}") + ending
    assert rebuilt == response[:len(rebuilt)], (variant, n)
    assert len(rebuilt) >= len(response) - 2  # at most `</CONCLUSION> </s>` or `  </s>` left after it


def test_answer_prefix_of_a_response_without_answer_appends_the_marker():
  assert ranking.answer_prefix([5, 6, 7], [[9], [8, 9]]) == [5, 6, 7, 9]
  assert ranking.answer_prefix([5, 8, 9, 4, 9, 3], [[9], [8, 9]]) == [5, 8, 9, 4, 9]


@pytest.mark.slow  # over 10 s
def test_candidate_logprobs_equal_the_full_forward_pass(tiny, tokenizer):
  model, variables = tiny["model"], tiny["variables"]
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)
  plain = [t for t in range(tokenizer.vocab_size) if tokenizer.decode([t]).strip().isalpha()][:60]
  prompts = [([tokenizer.eos_id] + list(rng.choice(plain, n)), None) for n in (5, 9)]
  prompts = [(p, [0] * len(p)) for p, _ in prompts]
  continuations = [list(rng.choice(plain, n)) for n in (4, 2)]
  candidates = [list(rng.choice(plain, n)) for n in (1, 3, 2)]
  scores = ranking.candidate_logprobs(tiny["generator"], variables, video, prompts, continuations, candidates,
                                      tokenizer.pad_id)
  assert scores.shape == (2, 3)
  forward = jax.jit(model.apply)
  for b in range(2):
    for k, candidate in enumerate(candidates):
      text = np.asarray(prompts[b][0] + continuations[b] + candidate)[None]
      logits = forward(variables, text, np.arange(text.shape[1])[None], np.ones_like(text), np.zeros_like(text),
                       video[b:b + 1])
      logprobs = np.asarray(jax.nn.log_softmax(logits[0]))
      start = text.shape[1] - len(candidate)
      expected = sum(logprobs[start - 1 + j, token] for j, token in enumerate(candidate))
      np.testing.assert_allclose(scores[b, k], expected, rtol=1e-4, atol=1e-4, err_msg=f"example {b}, cand {k}")


def test_top_k_accuracy_counts_labels_among_the_k_likeliest():
  logprobs = np.log(np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.35, 0.25]]))
  labels = np.array([0, 0, 2])
  assert evaluator.top_k_accuracy(logprobs, labels, 1) == pytest.approx(1 / 3)
  assert evaluator.top_k_accuracy(logprobs, labels, 2) == pytest.approx(1 / 3)
  assert evaluator.top_k_accuracy(logprobs, labels, 3) == 1.0
