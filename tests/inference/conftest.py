"""A tiny LRR model and a tokenizer for search tests; the model is biased to write stage closing tags."""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.worlds import cater
from lrr_jax.inference import generate as generate_lib
from lrr_jax.models import lrr


@pytest.fixture(scope="package")
def tokenizer():
  videos = cater.generate(cater.CaterConfig(num_frames=4, resolution=16, num_objects=3, num_cones=1), 16, 0)
  texts = [" ".join(s.text for s in cater.rationale_example(videos, n).response) for n in range(16)]
  return tokenizer_lib.train_bpe(texts + ["Since both were read, I choose response 1 2"], 300)


def closing_tag_variables(model, tokenizer, strength: float):
  """Random weights with open gates, and a final-LayerNorm bias along the closing tags' embeddings, so that
  sampled text reaches a closing tag within a few tokens (a stand-in for a trained model)."""
  video = np.zeros((1, 4, 16, 16, 3), np.uint8)
  tokens = np.ones((1, 4), np.int32)
  variables = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens, tokens, tokens, tokens, video))
  flat = flax.traverse_util.flatten_dict(variables)
  embedding = flat[("params", "decoder", "embed_tokens", "embedding")]
  closing = [tokenizer.token_id(f"</{name}>") for name in rationales.STAGES]
  rows = embedding[jnp.asarray(closing)]  # the bias b with rows @ b = strength: each tag's logit + strength
  bias = rows.T @ jnp.linalg.solve(rows @ rows.T, jnp.full(len(closing), strength))
  for key in list(flat):
    if key[-1].endswith("_gate"):
      flat[key] = jnp.full_like(flat[key], 0.5)
    if key[-2:] == ("final_layer_norm", "bias"):
      flat[key] = bias
  return flax.traverse_util.unflatten_dict(flat)


@pytest.fixture(scope="package")
def tiny(tokenizer):
  model = lrr.LRRModel(lrr.lrr_config("tiny", vocab_size=tokenizer.vocab_size, max_positions=256))
  variables = closing_tag_variables(model, tokenizer, strength=4.5)
  generator = generate_lib.Generator(model, cache_length=160, conclusion_id=tokenizer.token_id("<CONCLUSION>"))
  video = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  prompt = [tokenizer.eos_id] + tokenizer.encode("Where is the snitch at the end of the video?")
  return dict(model=model, variables=variables, generator=generator, video=video, prompt=prompt,
              frames=[0] * len(prompt))
