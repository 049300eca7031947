"""Cached greedy generation equals the argmax of the full forward pass at every step."""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.inference import generate as generate_lib
from lrr_jax.models import lrr


@pytest.mark.slow  # over 10 s
@pytest.mark.parametrize("scan_layers", [False, True], ids=["unrolled", "scanned"])
def test_cached_greedy_tokens_equal_full_forward_argmax(scan_layers):
  config = lrr.lrr_config("tiny", scan_layers=scan_layers)
  model = lrr.LRRModel(config)
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, (3, 4, 16, 16, 3), dtype=np.uint8)
  prompts = [list(rng.integers(3, 512, n)) for n in (6, 3, 5)]
  frames = [[1] * len(p) for p in prompts]
  prompt = generate_lib.left_pad(prompts, frames, pad_id=0)
  variables = jax.jit(model.init)(jax.random.key(0), prompt["tokens"], prompt["positions"],
                                  prompt["segment_ids"], prompt["frame_index"], video)
  flat = flax.traverse_util.flatten_dict(nn.unbox(variables))
  variables = flax.traverse_util.unflatten_dict(  # open the gates: the video must matter
      {k: jnp.full_like(v, 0.5) if k[-1].endswith("_gate") else v for k, v in flat.items()})
  generator = generate_lib.Generator(model, cache_length=16)
  sampled = generate_lib.generate(generator, variables, prompt, video, [[2]], max_new_tokens=8)
  tokens, lengths = np.asarray(sampled.tokens), np.asarray(sampled.lengths)
  forward = jax.jit(model.apply)
  for row in range(3):
    full = np.concatenate([prompts[row], tokens[row, :lengths[row]]])[None]
    logits = forward(variables, full, np.arange(full.shape[1])[None], np.ones_like(full),
                     np.ones_like(full), video[row:row + 1])
    expected = np.argmax(np.asarray(logits[0, len(prompts[row]) - 1:-1]), -1)
    np.testing.assert_array_equal(tokens[row, :lengths[row]], expected, err_msg=f"row {row}")


def test_sampling_filters_respect_top_k_and_top_p():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 2000))
  keys = jax.random.split(jax.random.key(1), 1)[0]
  top2 = np.asarray(generate_lib.sample_logits(logits, keys, generate_lib.Sampling(1.0, top_k=2)))
  assert set(top2) == {0, 1} and 0.55 < np.mean(top2 == 0) < 0.70  # 0.5 / 0.8
  nucleus = np.asarray(generate_lib.sample_logits(logits, keys, generate_lib.Sampling(1.0, top_p=0.7)))
  assert set(nucleus) == {0, 1}  # 0.5 + 0.3 reaches 0.7; 0.15 is outside the nucleus
  assert set(np.asarray(generate_lib.sample_logits(logits, keys, generate_lib.Sampling()))) == {0}
  everything = np.asarray(generate_lib.sample_logits(logits, keys, generate_lib.Sampling(1.0)))
  assert set(everything) == {0, 1, 2, 3}


@pytest.mark.slow  # over 10 s
def test_shared_prefix_and_ragged_candidates_continue_exactly(tiny):
  """Candidates of different lengths sampled from one shared prompt cache; continuing the one that stopped
  first gives the tokens the full forward pass would (the others' leftovers in the cache are invisible)."""
  generator, variables, video = tiny["generator"], tiny["variables"], tiny["video"]
  prompt = generate_lib.left_pad([tiny["prompt"]], [tiny["frames"]], 0)
  visual = generator.encode_video(variables, jnp.asarray(video)[None])
  state = generate_lib.select_rows(generator.start(variables, prompt, visual), [0] * 6)
  assert state.cache["cross_attention"]["cross_attention_0"]["keys"].shape[0] == 1  # the video is not copied
  stops = jnp.asarray(generate_lib.stop_table([[t] for t in range(20, 300, 3)]))
  state, sampled = generator.sample(variables, state, jax.random.key(3), stops, 3, max_new_tokens=12,
                                    sampling=generate_lib.Sampling(1.0))
  lengths = np.asarray(sampled.lengths)
  assert len(set(lengths)) > 1, lengths
  row = int(np.argmin(lengths))
  state = generate_lib.select_rows(state, [row, row])
  state, greedy = generator.sample(variables, state, jax.random.key(0), jnp.asarray([[-5]]), 3,
                                   max_new_tokens=6, sampling=generate_lib.Sampling())
  text = tiny["prompt"] + list(np.asarray(sampled.tokens[row, :lengths[row]])) + list(np.asarray(greedy.tokens[0]))
  tokens = np.asarray(text)[None]
  frame_index = np.full_like(tokens, 0)
  logits = tiny["model"].apply(variables, tokens, np.arange(tokens.shape[1])[None], np.ones_like(tokens),
                               frame_index, video[None])
  expected = np.argmax(np.asarray(logits[0, -7:-1]), -1)
  np.testing.assert_array_equal(np.asarray(greedy.tokens[0]), expected)
  np.testing.assert_array_equal(np.asarray(greedy.tokens[0]), np.asarray(greedy.tokens[1]))


def test_multi_token_stop_sequences_end_a_row_at_their_last_token(tiny):
  generator, variables = tiny["generator"], tiny["variables"]
  prompt = generate_lib.left_pad([tiny["prompt"]], [tiny["frames"]], 0)
  sampling = generate_lib.Sampling(1.0)
  free = generate_lib.generate(generator, variables, prompt, tiny["video"][None], [[-5]], 10, sampling)
  tokens = list(np.asarray(free.tokens[0]))
  pair = tokens[3:5]
  end = next(i + 2 for i in range(9) if tokens[i:i + 2] == pair)  # where the pair first ends
  stopped = generate_lib.generate(generator, variables, prompt, tiny["video"][None], [pair, [-7, -8, -9]], 10,
                                  sampling)
  assert int(stopped.lengths[0]) == end and bool(stopped.stopped[0])
  np.testing.assert_array_equal(np.asarray(stopped.tokens[0, :end]), tokens[:end])


def test_a_prompt_longer_than_the_cache_is_a_clear_error(tiny):
  generator = generate_lib.Generator(tiny["model"], cache_length=8)
  prompt = generate_lib.left_pad([tiny["prompt"]], [tiny["frames"]], 0)
  with pytest.raises(ValueError, match=r"prompt has \d+ tokens but the cache holds 8"):
    generate_lib.generate(generator, tiny["variables"], prompt, tiny["video"][None], [[2]], 4)
