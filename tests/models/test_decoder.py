"""The OPT decoder: packing, left padding against Hugging Face, cached decoding, remat, logical axes."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.convert import hf_opt
from lrr_jax.models import decoder as decoder_lib
from lrr_jax.models import lrr
from lrr_jax.models import resnet
from tests.conftest import hf_logits


def tiny_decoder(**overrides):
  config = decoder_lib.decoder_config("tiny", dropout_rate=0.0, **overrides)
  model = decoder_lib.Decoder(config)
  tokens = jnp.ones((1, 8), jnp.int32)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens, tokens, tokens))
  return model, params


def test_packed_examples_equal_separate_examples():
  model, params = tiny_decoder()
  rng = np.random.default_rng(0)
  first, second = rng.integers(0, 512, (1, 5)), rng.integers(0, 512, (1, 7))
  apply = jax.jit(model.apply)
  alone = lambda t: apply(params, t, np.arange(t.shape[1])[None], np.ones_like(t))[0]
  packed_tokens = np.concatenate([first, second, np.zeros((1, 3), int)], 1)
  positions = np.concatenate([np.arange(5), np.arange(7), np.zeros(3, int)])[None]
  segments = np.array([[1] * 5 + [2] * 7 + [0] * 3])
  packed, _ = apply(params, packed_tokens, positions, segments)
  np.testing.assert_allclose(packed[:, :5], alone(first), atol=1e-5)
  np.testing.assert_allclose(packed[:, 5:12], alone(second), atol=1e-5)


def left_padded_batch(vocab_size: int, lengths=(9, 5, 7), width: int = 9):
  """Rows of different lengths, padded on the left as batched generation pads them."""
  rng = np.random.default_rng(1)
  tokens = rng.integers(2, vocab_size, (len(lengths), width)).astype(np.int32)
  mask = (np.arange(width)[None] >= width - np.array(lengths)[:, None]).astype(np.int32)
  tokens = np.where(mask, tokens, 1)  # OPT's pad token
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0).astype(np.int32)  # as Hugging Face derives them
  return tokens, positions, mask


def test_left_padded_rows_match_hugging_face_with_attention_mask(hf_checkpoint):
  directory, torch_model = hf_checkpoint
  config, params = hf_opt.load_hf_opt(directory)
  tokens, positions, mask = left_padded_batch(config.vocab_size)
  logits, _ = decoder_lib.Decoder(config).apply({"params": params}, tokens, positions, mask)
  expected = hf_logits(torch_model, tokens, mask)
  np.testing.assert_allclose(logits[mask == 1], expected[mask == 1], atol=1e-4, rtol=0)


def test_cached_decoding_of_left_padded_rows_matches_full_forward(hf_checkpoint):
  directory, _ = hf_checkpoint
  config, params = hf_opt.load_hf_opt(directory)
  model = decoder_lib.Decoder(config)
  tokens, positions, mask = left_padded_batch(config.vocab_size)
  full, _ = model.apply({"params": params}, tokens, positions, mask)
  decode = jax.jit(lambda cache, index, *seq: model.apply({"params": params}, *seq, cache=cache,
                                                          cache_index=index))
  cache = decoder_lib.init_cache(config, tokens.shape[0], tokens.shape[1])
  logits, cache = decode(cache, 0, tokens[:, :6], positions[:, :6], mask[:, :6])
  np.testing.assert_allclose(logits[mask[:, :6] == 1], full[:, :6][mask[:, :6] == 1], atol=1e-5)
  for step in range(6, tokens.shape[1]):
    logits, cache = decode(cache, step, *(x[:, step:step + 1] for x in (tokens, positions, mask)))
    np.testing.assert_allclose(logits[:, 0], full[:, step], atol=1e-5, err_msg=f"step {step}")


def test_remat_gives_the_same_logits_and_gradients():
  model, params = tiny_decoder()
  remat_model = decoder_lib.Decoder(dataclasses.replace(model.config, remat_policy="full"))
  tokens = np.random.default_rng(2).integers(0, 512, (2, 8))
  positions, segments = np.broadcast_to(np.arange(8), (2, 8)), np.ones((2, 8), int)

  def loss(params, module):
    logits, _ = module.apply(params, tokens, positions, segments)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

  loss_and_grads = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  plain_loss, plain_grads = loss_and_grads(params, model)
  remat_loss, remat_grads = loss_and_grads(params, remat_model)
  np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), remat_grads, plain_grads)


def test_every_parameter_has_logical_axis_names_of_its_rank():
  config = lrr.lrr_config("tiny")
  batch_norm_video = dataclasses.replace(config.video, static_backbone=resnet.resnet_config(
      "resnet18", width=8, stage_sizes=(1, 1)))  # BatchNorm variant too
  model = lrr.LRRModel(lrr.LRRConfig(decoder=config.decoder, video=batch_norm_video))
  tokens = jnp.ones((1, 4), jnp.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), tokens, tokens, tokens, tokens,
                          jnp.zeros((1, 2, 32, 32, 3), jnp.uint8))
  leaves = jax.tree.leaves(shapes["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  for leaf in leaves:
    assert len(leaf.names) == leaf.value.ndim, leaf
  names = {name for leaf in leaves for name in leaf.names}
  assert {"vocab", "embed", "heads", "mlp", "conv_out"} <= names


@pytest.mark.parametrize("name,hf_kwargs", [
    ("opt-125m", dict()),
    ("opt-350m", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096,
                      word_embed_proj_dim=512, do_layer_norm_before=False)),
    ("opt-1.3b", dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, ffn_dim=8192,
                      word_embed_proj_dim=2048)),
])
def test_named_sizes_have_hugging_face_parameter_counts(name, hf_kwargs):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  with torch.device("meta"):  # shapes only
    hf_count = transformers.OPTForCausalLM(transformers.OPTConfig(**hf_kwargs)).num_parameters()
  tokens = jnp.ones((1, 4), jnp.int32)
  shapes = jax.eval_shape(decoder_lib.Decoder(decoder_lib.decoder_config(name)).init, jax.random.key(0),
                          tokens, tokens, tokens)
  assert sum(x.size for x in jax.tree.leaves(nn.unbox(shapes))) == hf_count
