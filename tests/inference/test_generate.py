"""Cached greedy generation equals the argmax of the full forward pass at every step."""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lrr_jax.inference import generate as generate_lib
from lrr_jax.models import lrr


def test_cached_greedy_tokens_equal_full_forward_argmax():
  config = lrr.lrr_config("tiny")
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
