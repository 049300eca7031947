"""The whole LRR model: parity with Hugging Face OPT (gates at zero), cached decoding, frame visibility, dtypes."""
import dataclasses

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.convert import hf_opt
from lrr_jax.models import lrr
from tests.conftest import hf_logits

BATCH, LENGTH, FRAMES, SIZE = 2, 12, 4, 16


def example_inputs(vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  frame_index = np.minimum(np.arange(LENGTH) // 3 - 1, FRAMES - 1)  # -1 -1 -1 0 0 0 1 1 1 2 2 2
  return dict(
      tokens=rng.integers(2, vocab_size, (BATCH, LENGTH)).astype(np.int32),
      positions=np.broadcast_to(np.arange(LENGTH, dtype=np.int32), (BATCH, LENGTH)),
      segment_ids=np.ones((BATCH, LENGTH), np.int32),
      frame_index=np.broadcast_to(frame_index.astype(np.int32), (BATCH, LENGTH)),
      video=rng.integers(0, 256, (BATCH, FRAMES, SIZE, SIZE, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=[False, True], ids=["unrolled", "scanned"])
def pretrained(hf_checkpoint, request):
  """An LRR model whose decoder is a Hugging Face checkpoint and whose other parts are random; its layers
  unrolled or scanned (the converter stacks them)."""
  directory, torch_model = hf_checkpoint
  decoder_config, decoder_params = hf_opt.load_hf_opt(directory, cross_attention_layers=(0, 1),
                                                      scan_layers=request.param)
  config = lrr.LRRConfig(decoder=decoder_config, video=lrr.lrr_config("tiny").video)
  model = lrr.LRRModel(config)
  inputs = example_inputs(decoder_config.vocab_size)
  variables = jax.jit(model.init)(jax.random.key(0), **inputs)
  params = hf_opt.insert_pretrained(variables["params"], decoder_params)
  return torch_model, model, nn.unbox(dict(variables, params=params)), inputs


@pytest.fixture(scope="module")
def tiny():
  """The tiny LRR model with its gates open (the video reaches the logits), and a jitted forward pass."""
  config = lrr.lrr_config("tiny")
  model = lrr.LRRModel(config)
  inputs = example_inputs(config.decoder.vocab_size)
  variables = open_gates(jax.jit(model.init)(jax.random.key(1), **inputs))
  return model, variables, inputs, jax.jit(model.apply)


def test_logits_match_hugging_face_with_gates_at_zero(pretrained):
  torch_model, model, variables, inputs = pretrained
  logits = jax.jit(model.apply)(variables, **inputs)
  expected = hf_logits(torch_model, inputs["tokens"])
  assert logits.shape == expected.shape
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_cached_decoding_token_by_token_matches_hugging_face(pretrained):
  torch_model, model, variables, inputs = pretrained
  expected = hf_logits(torch_model, inputs["tokens"])
  visual = model.apply(variables, inputs["video"], method=lrr.LRRModel.encode_video)
  cache = lrr.init_cache(model.config, BATCH, LENGTH, visual)
  decode = jax.jit(lambda cache, index, visual, *seq: model.apply(
      variables, *seq, cache, index, visual, method=lrr.LRRModel.decode))
  seq = lambda start, stop: [inputs[k][:, start:stop] for k in ("tokens", "positions", "segment_ids",
                                                                  "frame_index")]
  prompt = 4  # prefill 4 tokens with the video, then one token at a time without it
  logits, cache = decode(cache, 0, visual, *seq(0, prompt))
  np.testing.assert_allclose(logits, expected[:, :prompt], atol=1e-4, rtol=0)
  for step in range(prompt, LENGTH):
    logits, cache = decode(cache, step, None, *seq(step, step + 1))
    np.testing.assert_allclose(logits[:, 0], expected[:, step], atol=1e-4, rtol=0, err_msg=f"step {step}")


def test_cached_decoding_with_open_gates_equals_full_forward(tiny):
  model, variables, inputs, forward = tiny
  config = model.config
  full = forward(variables, **inputs)
  visual = model.apply(variables, inputs["video"], method=lrr.LRRModel.encode_video)
  cache = lrr.init_cache(config, BATCH, LENGTH + 3, visual)
  seq = [inputs[k] for k in ("tokens", "positions", "segment_ids", "frame_index")]
  decode = jax.jit(lambda cache, index, visual, *seq: model.apply(
      variables, *seq, cache, index, visual, method=lrr.LRRModel.decode))
  logits, cache = decode(cache, 0, visual, *[x[:, :5] for x in seq])
  np.testing.assert_allclose(logits, full[:, :5], atol=1e-5)
  for step in range(5, LENGTH):
    logits, cache = decode(cache, step, None, *[x[:, step:step + 1] for x in seq])
    np.testing.assert_allclose(logits[:, 0], full[:, step], atol=1e-5)


def test_decoding_the_last_column_only_gives_its_logits_and_the_same_cache(tiny):
  model, variables, inputs, _ = tiny
  visual = model.apply(variables, inputs["video"], method=lrr.LRRModel.encode_video)
  cache = lrr.init_cache(model.config, BATCH, LENGTH, visual)
  seq = [inputs[k][:, :7] for k in ("tokens", "positions", "segment_ids", "frame_index")]
  decode = jax.jit(lambda last_only: model.apply(variables, *seq, cache, 0, visual, last_only=last_only,
                                                 method=lrr.LRRModel.decode), static_argnums=0)
  (all_logits, all_cache), (last, last_cache) = decode(False), decode(True)
  assert last.shape == (BATCH, 1, model.config.decoder.vocab_size)
  np.testing.assert_allclose(last, all_logits[:, -1:], atol=1e-6, rtol=0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), all_cache, last_cache)


def open_gates(variables, value: float = 1.0):
  """Set every cross-attention gate to `value` so that the video reaches the logits."""
  flat = flax.traverse_util.flatten_dict(nn.unbox(variables))
  return flax.traverse_util.unflatten_dict(
      {k: (jnp.full_like(v, value) if k[-1].endswith("_gate") else v) for k, v in flat.items()})


def test_changing_a_frame_changes_only_tokens_that_may_see_it(tiny):
  model, variables, inputs, forward = tiny
  before = forward(variables, **inputs)
  for changed_frame in range(FRAMES):
    video = inputs["video"].copy()
    video[:, changed_frame] = np.random.default_rng(9).integers(0, 256, video[:, changed_frame].shape)
    after = forward(variables, **dict(inputs, video=video))
    blind = inputs["frame_index"][0] < changed_frame
    np.testing.assert_array_equal(after[:, blind], before[:, blind], err_msg=f"frame {changed_frame}")
    # The mask is not blocking everything: tokens that see the frame do change.
    if (~blind).any():
      assert np.abs(after[:, ~blind] - before[:, ~blind]).max(axis=-1).min() > 1e-4


def test_shapes_and_dtypes_at_tiny_size(tiny):
  model, variables, inputs, forward = tiny
  config = model.config
  logits = forward(variables, **inputs)
  assert logits.shape == (BATCH, LENGTH, config.decoder.vocab_size) and logits.dtype == jnp.float32
  visual = model.apply(variables, inputs["video"], method=lrr.LRRModel.encode_video)
  grid = (SIZE // config.video.static_backbone.stride) ** 2
  assert visual.tokens.shape == (BATCH, FRAMES * grid, config.video.width)
  np.testing.assert_array_equal(visual.frame_index[0], np.repeat(np.arange(FRAMES), grid))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.unbox(variables)))


@pytest.mark.slow  # over 4 s
def test_bf16_forward_pass_runs_and_stays_close_to_f32():
  f32 = lrr.lrr_config("tiny")
  video = dataclasses.replace(f32.video, dtype="bfloat16",
                              static_backbone=dataclasses.replace(f32.video.static_backbone, dtype="bfloat16"),
                              motion_backbone=dataclasses.replace(f32.video.motion_backbone, dtype="bfloat16"))
  bf16 = lrr.LRRConfig(decoder=dataclasses.replace(f32.decoder, dtype="bfloat16"), video=video)
  inputs = example_inputs(f32.decoder.vocab_size)
  variables = open_gates(jax.jit(lrr.LRRModel(f32).init)(jax.random.key(0), **inputs))
  reference = jax.jit(lrr.LRRModel(f32).apply)(variables, **inputs)
  logits = jax.jit(lrr.LRRModel(bf16).apply)(variables, **inputs)
  assert logits.dtype == jnp.float32 and np.isfinite(logits).all()
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))  # f32 master weights
  assert np.abs(logits - reference).max() < 0.1 * np.abs(reference).max()
