"""Scanned layers (`scan_layers`) and remat policies: the same logits, gradients and cached decoding as the
unrolled model, parameters moved between the layouts by `lrr.relayout`."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.models import decoder as decoder_lib
from lrr_jax.models import lrr
from lrr_jax.models import resnet

B, S, T, SIZE = 2, 10, 3, 32


def with_layout(config: lrr.LRRConfig, scan_layers: bool, remat_policy: str = "none") -> lrr.LRRConfig:
  """`config` with every part scanned (or not) under `remat_policy`."""
  fields = dict(scan_layers=scan_layers, remat_policy=remat_policy)
  video = config.video
  video = dataclasses.replace(video, static_backbone=dataclasses.replace(video.static_backbone, **fields),
                              motion_backbone=dataclasses.replace(video.motion_backbone, **fields), **fields)
  return dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, **fields), video=video)


@pytest.fixture(scope="module")
def unrolled():
  """A tiny LRR with repeated parts to scan: 4 layers in groups of 2 (a cross-attention block after layers
  1 and 3), 2 space-time blocks, 2 blocks per ResNet stage; its gates open; inputs."""
  tiny = lrr.lrr_config("tiny", num_layers=4, cross_attention_layers=(1, 3), gate_init=0.5,
                        video_overrides=dict(num_layers=2))
  backbone = dataclasses.replace(tiny.video.static_backbone, stage_sizes=(2, 2))
  config = dataclasses.replace(tiny, video=dataclasses.replace(
      tiny.video, static_backbone=backbone, motion_backbone=dataclasses.replace(backbone, width=4)))
  rng = np.random.default_rng(0)
  inputs = dict(tokens=rng.integers(0, 512, (B, S)).astype(np.int32),
                positions=np.broadcast_to(np.arange(S, dtype=np.int32), (B, S)),
                segment_ids=np.ones((B, S), np.int32),
                frame_index=np.broadcast_to(np.minimum(np.arange(S) // 3 - 1, T - 1).astype(np.int32), (B, S)),
                video=rng.integers(0, 256, (B, T, SIZE, SIZE, 3), dtype=np.uint8))
  model = lrr.LRRModel(config)
  variables = nn.unbox(jax.jit(model.init)(jax.random.key(0), **inputs))
  return model, variables, inputs


def loss_and_grads(model, variables, inputs):
  def loss(params):
    logits = model.apply({**variables, "params": params}, **inputs)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 7]), logits
  (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
  return value, logits, grads


@pytest.fixture(scope="module")
def reference(unrolled):
  """The unrolled model's loss, logits and gradients."""
  return loss_and_grads(*unrolled)


@pytest.mark.parametrize("policy", ["none", "minimal"])
def test_scanned_model_gives_the_same_logits_and_gradients(unrolled, reference, policy):
  model, variables, inputs = unrolled
  scanned_config = with_layout(model.config, True, policy)
  scanned = lrr.relayout(variables, model.config, scanned_config)
  abstract = jax.eval_shape(lrr.LRRModel(scanned_config).init, jax.random.key(0), **inputs)
  assert jax.tree.structure(nn.unbox(abstract)) == jax.tree.structure(scanned)
  assert scanned["params"]["decoder"]["layers"]["layers_0"]["mlp"]["fc1"]["kernel"].shape[0] == 2  # groups
  assert scanned["params"]["video_encoder"]["static_stream"]["stage_1_blocks"]["conv_norm_1"]["conv"][
      "kernel"].shape[0] == 1

  value, logits, grads = reference
  scan_value, scan_logits, scan_grads = loss_and_grads(lrr.LRRModel(scanned_config), scanned, inputs)
  np.testing.assert_allclose(scan_logits, logits, atol=2e-5)
  np.testing.assert_allclose(scan_value, value, rtol=1e-5)
  back = lrr.relayout({"params": scan_grads}, scanned_config, model.config)["params"]
  assert jax.tree.structure(back) == jax.tree.structure(grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5 * max(1.0, float(np.abs(b).max()))),
               back, grads)


def test_relayout_round_trip_is_exact(unrolled):
  model, variables, _ = unrolled
  scanned_config = with_layout(model.config, True)
  back = lrr.relayout(lrr.relayout(variables, model.config, scanned_config), scanned_config, model.config)
  jax.tree.map(np.testing.assert_array_equal, back, variables)


def test_scanned_cached_decoding_matches_the_full_forward(unrolled):
  model, variables, inputs = unrolled
  config = with_layout(model.config, True)
  scanned_model, scanned = lrr.LRRModel(config), lrr.relayout(variables, model.config, config)
  full = model.apply(variables, **inputs)
  visual = scanned_model.apply(scanned, inputs["video"], method=lrr.LRRModel.encode_video)
  cache = lrr.init_cache(config, B, 16, visual)
  assert cache["self_attention"]["layers_1"]["keys"].shape[:2] == (B, 2)  # batch first, then groups
  text = {k: inputs[k] for k in ("tokens", "positions", "segment_ids", "frame_index")}
  prefix = lambda a, b: [x[:, a:b] for x in text.values()]
  logits, cache = scanned_model.apply(scanned, *prefix(0, 6), cache, 0, visual, method=lrr.LRRModel.decode)
  steps = [logits]
  for i in range(6, S):  # one token at a time, the video read from the cache
    logits, cache = scanned_model.apply(scanned, *prefix(i, i + 1), cache, i, method=lrr.LRRModel.decode)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=2e-5)


def test_irregular_cross_attention_cannot_be_scanned():
  with pytest.raises(ValueError, match="scan_layers needs a cross-attention block after every k-th layer"):
    decoder_lib.decoder_config("tiny", num_layers=4, cross_attention_layers=(1, 2), scan_layers=True)


def test_unknown_remat_policy_names_the_field():
  with pytest.raises(ValueError, match="ResNetConfig.remat_policy='some'"):
    resnet.resnet_config("tiny", remat_policy="some")
