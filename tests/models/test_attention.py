"""Attention implementations: each equals the reference einsum path (values and gradients), masks included;
splash runs in Pallas interpret mode on CPU; the whole LRR model gives the same logits whichever it uses."""
import dataclasses
import json
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.models import attention
from lrr_jax.models import cross_attention
from lrr_jax.models import decoder
from lrr_jax.models import layers
from lrr_jax.models import lrr
from lrr_jax.models import video_encoder
from tests.models.test_lrr import example_inputs, open_gates

HEADS, HEAD_DIM = 2, 64
FRAMES, CELLS = 4, 40  # cross-attention memory: 160 keys, not a multiple of splash's block of 128


def allowed_by_loops(query_segments, key_segments, query_frames, key_frames, window=0):
  """bool[B, 1, Sq, Sk] written out one pair at a time: same segment, key frame <= query frame, window."""
  b, sq = query_segments.shape
  allowed = np.zeros((b, 1, sq, key_segments.shape[1]), bool)
  for row, i, j in np.ndindex(b, sq, key_segments.shape[1]):
    order = key_frames[row, j] <= query_frames[row, i]
    near = not window or query_frames[row, i] - key_frames[row, j] < window
    allowed[row, 0, i, j] = query_segments[row, i] == key_segments[row, j] and order and near
  return allowed


def packed_segments(b, s, rng):
  """int[B, S]: two packed examples per row, then padding (0)."""
  cuts = np.sort(rng.integers(1, s, (b, 2)), axis=1)
  slots = np.arange(s)[None]
  return np.where(slots < cuts[:, :1], 1, np.where(slots < cuts[:, 1:], 2, 0)).astype(np.int32)


def frame_inputs(b, s, rng):
  """Text (frame_index -1 before any frame, segment 0 padding) over frames 0-1 of example 1, 2-3 of 2."""
  text_segments = np.ones((b, s), np.int32)
  text_segments[:, s // 2:] = 2
  text_segments[:, -10:] = 0
  first, last = np.where(text_segments == 2, 2, 0), np.where(text_segments == 2, 3, 1)
  frame_index = np.where(rng.random((b, s)) < 0.2, -1, rng.integers(first, last + 1)).astype(np.int32)
  visual_frames = np.broadcast_to(np.repeat(np.arange(FRAMES, dtype=np.int32), CELLS), (b, FRAMES * CELLS))
  visual_segments = np.broadcast_to(np.repeat(np.array([1, 1, 2, 2], np.int32), CELLS), visual_frames.shape)
  return frame_index, text_segments, visual_frames, visual_segments


def case(kind: str, b: int = 2, seed: int = 0):
  """(visibility, number of queries, number of keys) for each mask the model uses."""
  rng = np.random.default_rng(seed)
  if kind == "causal packed":
    segments = jnp.asarray(packed_segments(b, 256, rng))
    return decoder.self_visibility(segments), 256, 256
  if kind == "frames":
    return cross_attention.frame_visibility(*map(jnp.asarray, frame_inputs(b, 128, rng))), 128, FRAMES * CELLS
  if kind == "own frame":
    return (cross_attention.frame_visibility(*map(jnp.asarray, frame_inputs(b, 128, rng)), frames=1), 128,
            FRAMES * CELLS)
  if kind == "decode":  # one query at slot 200 of a 256-slot cache: empty slots (segment 0) after it
    cache_segments = np.zeros((b, 256), np.int32)
    cache_segments[:, :201] = 1
    cache_segments[0, :50] = 0  # a left-padded row
    return decoder.self_visibility(jnp.ones((b, 1), jnp.int32), jnp.asarray(cache_segments), 200), 1, 256
  if kind == "temporal window":
    segments = jnp.asarray(packed_segments(b, 40, rng))
    return video_encoder.temporal_visibility(segments, window=3), 40, 40
  assert kind == "none"
  return None, 100, 100


def qkv(b, sq, sk, dtype, seed=1):
  rng = np.random.default_rng(seed)
  normal = lambda n, scale=1.0: jnp.asarray(rng.normal(size=(b, n, HEADS, HEAD_DIM)) * scale, dtype)
  return normal(sq, HEAD_DIM ** -0.5 * 3), normal(sk), normal(sk)


def reads_any(visibility, b, sq):
  if visibility is None:
    return np.ones((b, sq), bool)
  return np.asarray(visibility.dense()).any(axis=(1, 3))


def test_visibility_is_the_mask_written_out():
  rng = np.random.default_rng(0)
  segments = packed_segments(2, 12, rng)
  slots = np.broadcast_to(np.arange(12), (2, 12))
  np.testing.assert_array_equal(decoder.self_visibility(jnp.asarray(segments)).dense(),
                                allowed_by_loops(segments, segments, slots, slots))
  np.testing.assert_array_equal(video_encoder.temporal_visibility(jnp.asarray(segments), 3).dense(),
                                allowed_by_loops(segments, segments, slots, slots, window=3))
  frame_index, text_segments, visual_frames, visual_segments = frame_inputs(2, 30, rng)
  blind_padding = np.where(text_segments > 0, text_segments, -1)  # a padding token reads no frame
  np.testing.assert_array_equal(
      cross_attention.frame_visibility(*map(jnp.asarray, (frame_index, text_segments, visual_frames,
                                                          visual_segments))).dense(),
      allowed_by_loops(blind_padding, visual_segments, frame_index, visual_frames))
  for frames in (1, 2):  # the decoder's cross_attention_frames: only the token's last `frames` frames
    np.testing.assert_array_equal(
        cross_attention.frame_visibility(*map(jnp.asarray, (frame_index, text_segments, visual_frames,
                                                            visual_segments)), frames=frames).dense(),
        allowed_by_loops(blind_padding, visual_segments, frame_index, visual_frames, window=frames))
  cache_segments = np.array([[0, 0, 1, 1, 1, 0]])  # the query at slot 3 reads slots 2 and 3
  decode = decoder.self_visibility(jnp.ones((1, 1), jnp.int32), jnp.asarray(cache_segments), 3)
  np.testing.assert_array_equal(decode.dense()[0, 0, 0], [False, False, True, True, False, False])


@pytest.mark.parametrize("implementation", ["xla", "splash"])
@pytest.mark.parametrize("kind", ["causal packed", "frames", "own frame", "decode", "temporal window", "none"])
def test_each_path_equals_the_reference(implementation, kind):
  visibility, sq, sk = case(kind)
  query, key, value = qkv(2, sq, sk, jnp.float32)
  run = jax.jit(lambda *args: attention.attend(*args, implementation=implementation))
  got, expected = run(query, key, value, visibility), attention.attend(query, key, value, visibility, "reference")
  sees = reads_any(visibility, 2, sq)
  assert np.isfinite(got).all()
  np.testing.assert_allclose(got[sees], expected[sees], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shared", [False, True], ids=["own keys", "shared keys"])
def test_one_query_per_row_equals_the_einsum(shared):
  """The reference's decoding-step path (a multiply and a sum, no transposed cache) against the einsums."""
  visibility, sq, sk = case("decode", b=3)
  query, key, value = qkv(3, sq, sk, jnp.float32)
  if shared:
    key, value = key[:1], value[:1]
  mask = visibility.dense()
  got = jax.jit(layers.masked_attention)(query, key, value, mask)
  key, value = (jnp.broadcast_to(x, (3, *x.shape[1:])) for x in (key, value))
  scores = jnp.where(mask, jnp.einsum("bqhd,bkhd->bhqk", query, key), jnp.finfo(jnp.float32).min)
  expected = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), value)
  np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["decode", "causal packed"])
@pytest.mark.parametrize("implementation", ["reference", "xla"])
def test_attention_over_a_heads_major_cache_equals_attend(kind, implementation):
  """A decoding step (one query per row) and a prefill (many) over keys/values stored [B, H, Sk, D]."""
  visibility, sq, sk = case(kind, b=3)
  query, key, value = qkv(3, sq, sk, jnp.float32)
  got = jax.jit(lambda *a: attention.attend_cache(*a, implementation=implementation))(
      query, key.swapaxes(1, 2), value.swapaxes(1, 2), visibility)
  expected = attention.attend(query, key, value, visibility, "reference")
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("implementation", ["xla", "splash"])
def test_bfloat16_paths_stay_close_to_the_reference(implementation):
  visibility, sq, sk = case("frames")
  query, key, value = qkv(2, sq, sk, jnp.bfloat16)
  got = jax.jit(lambda *args: attention.attend(*args, implementation=implementation))(query, key, value, visibility)
  expected = attention.attend(query, key, value, visibility, "reference")
  sees = reads_any(visibility, 2, sq)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got[sees], np.float32), np.asarray(expected[sees], np.float32),
                             atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("implementation", ["xla", "splash"])
@pytest.mark.parametrize("kind", ["causal packed", "frames"])
def test_gradients_equal_the_reference(implementation, kind):
  visibility, sq, sk = case(kind)
  inputs = qkv(2, sq, sk, jnp.float32)
  cotangent = jnp.asarray(np.random.default_rng(3).normal(size=inputs[0].shape), jnp.float32)
  sees = jnp.asarray(reads_any(visibility, 2, sq))[:, :, None, None]  # rows that read nothing are zeroed

  def loss(query, key, value, implementation):
    out = attention.attend(query, key, value, visibility, implementation)
    return jnp.sum(jnp.where(sees, out, 0.0) * cotangent)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)
  for got, expected, name in zip(grads(*inputs, implementation), grads(*inputs, "reference"), "qkv"):
    assert np.isfinite(got).all(), name
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("implementation", ["xla", "splash"])
def test_one_video_shared_by_every_row(implementation):
  visibility, sq, sk = case("frames")
  query, key, value = qkv(2, sq, sk, jnp.float32)
  got = attention.attend(query, key[:1], value[:1], visibility, implementation)
  expected = attention.attend(query, key[:1], value[:1], visibility, "reference")
  sees = reads_any(visibility, 2, sq)
  np.testing.assert_allclose(got[sees], expected[sees], atol=1e-5, rtol=1e-5)


def test_splash_under_a_mesh_runs_per_shard():
  visibility, sq, sk = case("causal packed")
  query, key, value = qkv(2, sq, sk, jnp.float32)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))  # as training
  rules = (("activation_batch", ("data", "fsdp")), ("heads", "tensor"))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    got = jax.jit(lambda *args: attention.attend(*args, implementation="splash"))(query, key, value, visibility)
    assert "shard_map" in str(jax.make_jaxpr(lambda *args: attention.attend(*args, implementation="splash"))(
        query, key, value, visibility))
  sees = reads_any(visibility, 2, sq)
  np.testing.assert_allclose(got[sees], attention.attend(query, key, value, visibility, "reference")[sees],
                             atol=1e-5)


@pytest.mark.slow  # a subprocess on simulated devices
def test_splash_split_over_batch_and_heads_equals_the_reference():
  """On 4 CPU devices (a subprocess): splash under shard_map, inputs split 2 x 2, values and gradients."""
  out = subprocess.run([sys.executable, "-m", "tests.models.splash_sharding_check"], capture_output=True,
                       text=True, timeout=900, cwd=pathlib.Path(__file__).parents[2], check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  differences = json.loads(out.stdout.strip().splitlines()[-1])
  assert set(differences) == {"causal packed", "frames"}
  assert max(differences.values()) < 1e-5, differences


def test_auto_picks_by_platform_dtype_and_shape(monkeypatch):
  long, short = jnp.zeros((1, 256, 2, 64), jnp.bfloat16), jnp.zeros((1, 1, 2, 64), jnp.bfloat16)
  assert attention.choose("auto", long, 256) == "reference"  # CPU
  monkeypatch.setattr(attention, "_platform", lambda: "tpu")
  assert attention.choose("auto", long, 256) == "splash"
  assert attention.choose("auto", short, 256) == "reference"  # a decoding step: less than one block
  monkeypatch.setattr(attention, "_platform", lambda: "gpu")
  assert attention.choose("auto", long, 256) == "cudnn"
  assert attention.choose("auto", long.astype(jnp.float32), 256) == "reference"
  assert attention.choose("auto", short, 256) == "reference"  # odd lengths: cuDNN refuses them with a bias
  assert attention.choose("splash", long, 256, dropout=True) == "reference"  # no kernel drops probabilities
  with pytest.raises(ValueError, match="flash"):
    attention.choose("flash", long, 256)
  with pytest.raises(ValueError, match="attention='cudnn' needs bfloat16"):
    attention.attend(long.astype(jnp.float32), long, long, None, "cudnn")
  with pytest.raises(ValueError, match="DecoderConfig.attention='flash'"):
    decoder.decoder_config("tiny", attention="flash")


def with_attention(config: lrr.LRRConfig, implementation: str) -> lrr.LRRConfig:
  return lrr.LRRConfig(decoder=dataclasses.replace(config.decoder, attention=implementation),
                       video=dataclasses.replace(config.video, attention=implementation))


def logits_and_sown_weights(config, implementation, variables, inputs):
  model = lrr.LRRModel(with_attention(config, implementation))
  logits, state = jax.jit(lambda v: model.apply(v, **inputs, mutable=["intermediates"]))(variables)
  return logits, jax.tree.leaves(state)


@pytest.fixture(scope="module")
def tiny_packed():
  """The tiny LRR model (gates open), inputs with two packed examples, padding and tokens before any frame,
  and the reference path's logits and sown cross-attention weights."""
  config = lrr.lrr_config("tiny")
  inputs = example_inputs(config.decoder.vocab_size)
  inputs["segment_ids"] = np.array([[1] * 6 + [2] * 5 + [0], [1] * 12], np.int32)
  inputs["frame_segment_ids"] = np.array([[1, 1, 2, 2], [1, 1, 1, 1]], np.int32)
  inputs["frame_index"] = np.array([[-1, 0, 0, 1, 1, 1, -1, 2, 2, 3, 3, -1], [-1, -1, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3]],
                                   np.int32)
  variables = open_gates(jax.jit(lrr.LRRModel(config).init)(jax.random.key(1), **inputs))
  return config, variables, inputs, logits_and_sown_weights(config, "reference", variables, inputs)


@pytest.mark.parametrize("implementation", ["xla", "splash"])
def test_lrr_logits_and_sown_weights_equal_across_implementations(tiny_packed, implementation):
  config, variables, inputs, (reference, reference_weights) = tiny_packed
  logits, weights = logits_and_sown_weights(config, implementation, variables, inputs)
  real = inputs["segment_ids"] > 0
  np.testing.assert_allclose(logits[real], reference[real], atol=1e-4, rtol=1e-4)
  assert len(weights) == len(config.decoder.cross_attention_layers)
  for got, expected in zip(weights, reference_weights):  # sown by the reference path; inputs differ by rounding
    np.testing.assert_allclose(got, expected, atol=1e-5)
