"""The pure train step: it learns a fixed batch, and the same seed gives the same run."""
import dataclasses

import jax
import numpy as np
import pytest

from lrr_jax.models import lrr
from lrr_jax.train import trainer

OPTIMIZER = trainer.OptimizerConfig(lr=3e-3, warmup_steps=2, total_steps=30, final_fraction=0.1,
                                   clip_norm=1.0, b1=0.9, b2=0.98, weight_decay=0.01)


def fixed_batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, 512, (4, 12)).astype(np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "positions": np.tile(np.arange(11), (4, 1)),
          "segment_ids": np.ones((4, 11), np.int32), "frame_index": np.full((4, 11), 1, np.int32),
          "loss_mask": (np.arange(11) >= 4).astype(np.int32)[None].repeat(4, 0),
          "video": rng.integers(0, 256, (4, 2, 16, 16, 3), dtype=np.uint8)}


def run(num_steps: int):
  model = lrr.LRRModel(lrr.lrr_config("tiny", dropout_rate=0.1))
  optimizer = trainer.make_optimizer(OPTIMIZER)
  batch = fixed_batch()
  state = jax.jit(trainer.init_train_state, static_argnums=(0, 1))(model, optimizer, batch, jax.random.key(0))
  step = jax.jit(trainer.make_train_step(model, optimizer, trainer.learning_rate_schedule(OPTIMIZER)))
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return state, losses, metrics


@pytest.mark.slow  # over 10 s
def test_the_step_learns_a_fixed_batch_and_is_deterministic():
  state, losses, metrics = run(30)
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 30 and np.isfinite(float(metrics["grad_norm"]))
  again, again_losses, _ = run(30)
  assert again_losses == losses
  jax.tree.map(np.testing.assert_array_equal, again.params, state.params)


@pytest.mark.slow  # a subprocess on 8 simulated devices
def test_sharded_steps_equal_the_single_device_step():
  import json, pathlib, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  root = pathlib.Path(__file__).parents[2]
  out = subprocess.run([sys.executable, "-m", "tests.train.sharding_check"], capture_output=True, text=True,
                       timeout=600, cwd=root)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout.strip().splitlines()[-1])
  for layout in ("dp", "fsdp", "dp_tp"):
    assert report[layout]["loss_diff"] < 1e-5, report
    assert report[layout]["max_param_diff"] < 2e-5 < 1e-3 < report[layout]["params_moved"], report
  assert report["dp"]["sharded_leaves"] == 0 < report["fsdp"]["sharded_leaves"]
  assert report["dp_tp"]["sharded_leaves"] > 0


def test_mesh_that_does_not_divide_the_devices_is_rejected():
  import pytest  # pylint: disable=g-import-not-at-top
  from lrr_jax.train import partitioning  # pylint: disable=g-import-not-at-top
  devices = jax.devices() * 8  # stand-ins: only the count matters here
  with pytest.raises(ValueError, match="has 6 devices, but there are 8"):
    partitioning.make_mesh({"data": 3, "tensor": 2}, devices[:8])
  with pytest.raises(ValueError, match="cannot be laid over 8 devices"):
    partitioning.make_mesh({"data": -1, "tensor": 3}, devices[:8])
  with pytest.raises(ValueError, match="Unknown mesh axes"):
    partitioning.make_mesh({"model": 2}, devices[:8])
  with pytest.raises(ValueError, match="unknown mesh axes"):
    partitioning.rules_from_config([("embed", ("fsdp", "model"))])


class FakeDevice:
  platform = device_kind = "cpu"
  process_index = 0

  def __init__(self, id_: int):
    self.id = id_


def test_multi_slice_mesh_keeps_each_slice_on_its_own_devices():
  """dcn_data=2: two slices of 4 devices (here: runs of CPU devices); fsdp and tensor stay inside a slice."""
  from lrr_jax.train import partitioning  # pylint: disable=g-import-not-at-top
  devices = [FakeDevice(i) for i in range(8)]  # the test process has one CPU device; only ids matter here
  mesh = partitioning.make_mesh({"data": 1, "fsdp": 2, "tensor": 2, "dcn_data": 2, "rules": ()}, devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  slices = [{d.id for d in mesh.devices[i].ravel()} for i in range(2)]
  assert slices == [{d.id for d in devices[:4]}, {d.id for d in devices[4:]}]
  flat = partitioning.make_mesh({"data": -1, "fsdp": 2}, devices)
  assert dict(flat.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  assert partitioning.rules_from_config(()) == partitioning.DEFAULT_RULES
  assert partitioning.rules_from_config([("embed", ["fsdp", "data"])]) == (("embed", ("fsdp", "data")),)


def one_step(optimizer_config, accumulation_steps=1, dropout_rate=0.0):
  model = lrr.LRRModel(lrr.lrr_config("tiny", dropout_rate=dropout_rate))
  optimizer = trainer.make_optimizer(optimizer_config)
  batch = fixed_batch()
  batch["loss_mask"][0, 4:8] = 0  # micro-batches with different token counts: the weighting must be right
  state = jax.jit(trainer.init_train_state, static_argnums=(0, 1))(model, optimizer, batch, jax.random.key(0))
  step = jax.jit(trainer.make_train_step(model, optimizer, trainer.learning_rate_schedule(optimizer_config),
                                         accumulation_steps))
  new_state, _ = step(state, batch)  # the warmup starts at a learning rate of 0
  new_state, metrics = step(new_state, batch)
  return state, new_state, metrics


@pytest.mark.slow  # over 10 s
def test_gradient_accumulation_gives_the_whole_batch_update():
  _, whole, whole_metrics = one_step(OPTIMIZER)
  _, accumulated, metrics = one_step(OPTIMIZER, accumulation_steps=2)
  np.testing.assert_allclose(float(metrics["loss"]), float(whole_metrics["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["grad_norm"]), float(whole_metrics["grad_norm"]), rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), accumulated.params, whole.params)  # Adam: 3e-3 steps


@pytest.mark.slow  # over 10 s
def test_freezing_by_path_patterns_trains_only_the_matches():
  import flax  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(OPTIMIZER, trainable=("cross_attention_", "video_encoder/"))
  before, after, _ = one_step(config)
  flat_before = flax.traverse_util.flatten_dict(before.params, sep="/")
  flat_after = flax.traverse_util.flatten_dict(after.params, sep="/")
  trained = {k for k in flat_before if not np.array_equal(flat_before[k], flat_after[k])}
  assert trained and all("cross_attention_" in k or k.startswith("video_encoder/") for k in trained)
  assert not any(k.startswith("decoder/layers_") for k in trained)
  with pytest.raises(ValueError, match="'cross_atention' matches no parameter"):
    one_step(dataclasses.replace(OPTIMIZER, trainable=("cross_atention",)))


def batch_norm_model(train_batch_norm: bool = False) -> lrr.LRRModel:
  """The tiny LRR with both video streams' ResNets on BatchNorm (frozen unless `train_batch_norm`), its gates
  open (the video counts)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from lrr_jax.models import resnet  # pylint: disable=g-import-not-at-top
  config = lrr.lrr_config("tiny", gate_init=1.0)
  backbone = dataclasses.replace(resnet.RESNET_CONFIGS["tiny"], norm="batch", train_batch_norm=train_batch_norm)
  video = dataclasses.replace(config.video, static_backbone=backbone, motion_backbone=backbone, two_stream=True)
  return lrr.LRRModel(dataclasses.replace(config, video=video))


@pytest.mark.slow  # over 10 s
def test_batch_norm_backbones_train_with_their_running_statistics_frozen():
  model = batch_norm_model()
  optimizer = trainer.make_optimizer(OPTIMIZER)
  batch = fixed_batch()
  state = trainer.init_train_state(model, optimizer, batch, jax.random.key(0))
  assert set(state.batch_stats["video_encoder"]) == {"static_stream", "motion_stream"}
  # Statistics unlike the init's (mean 0, var 1), as a pretrained backbone's are.
  rng = np.random.default_rng(1)
  stats = jax.tree.map(lambda x: jax.numpy.asarray(rng.uniform(0.5, 2.0, x.shape), x.dtype), state.batch_stats)
  state = state.replace(batch_stats=stats)
  loss, _ = trainer.loss_and_metrics(state.params, model, batch, None, state.batch_stats)
  other, _ = trainer.loss_and_metrics(state.params, model, batch, None,
                                      jax.tree.map(lambda x: x * 3, state.batch_stats))
  assert float(loss) != float(other)  # the statistics are used
  grads = jax.grad(lambda p: trainer.loss_and_metrics(p, model, batch, None, state.batch_stats)[0])(state.params)
  stem_norm = grads["video_encoder"]["static_stream"]["stem"]["norm"]
  assert np.abs(stem_norm["scale"]).sum() > 0 and np.abs(stem_norm["bias"]).sum() > 0
  for accumulation_steps in (1, 2):
    step = jax.jit(trainer.make_train_step(model, optimizer, trainer.learning_rate_schedule(OPTIMIZER),
                                           accumulation_steps))
    after = state
    for _ in range(2):
      after, metrics = step(after, batch)
    assert np.isfinite(float(metrics["loss"]))
    jax.tree.map(np.testing.assert_array_equal, after.batch_stats, stats)
    moved = after.params["video_encoder"]["static_stream"]["stem"]["norm"]["scale"]
    assert np.abs(np.asarray(moved) - np.asarray(state.params["video_encoder"]["static_stream"]["stem"]["norm"]
                                                  ["scale"])).max() > 0


@pytest.mark.slow  # over 10 s
def test_batch_norm_trained_with_batch_statistics_updates_its_running_averages():
  """`train_batch_norm`: a training step normalises with the batch's statistics and moves the running averages
  by momentum 0.9 towards them (the stem's mean checked against its conv output); evaluation reads them."""
  model = batch_norm_model(train_batch_norm=True)
  optimizer = trainer.make_optimizer(OPTIMIZER)
  batch = fixed_batch()
  state = trainer.init_train_state(model, optimizer, batch, jax.random.key(0))
  step = jax.jit(trainer.make_train_step(model, optimizer, trainer.learning_rate_schedule(OPTIMIZER)))
  after, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"]))
  old = state.batch_stats["video_encoder"]["static_stream"]["stem"]["norm"]
  new = after.batch_stats["video_encoder"]["static_stream"]["stem"]["norm"]
  # The stem's conv output on this batch's frames, as the static stream sees them.
  from lrr_jax.models import video_encoder  # pylint: disable=g-import-not-at-top
  frames = video_encoder.normalize_frames(jax.numpy.asarray(batch["video"]))
  frames = frames.reshape(-1, *frames.shape[2:])
  if model.config.video.coordinate_channels:
    frames = video_encoder.with_coordinates(frames)
  stem = state.params["video_encoder"]["static_stream"]["stem"]["conv"]
  conv = jax.lax.conv_general_dilated(frames, stem["kernel"], (2, 2), [(3, 3), (3, 3)],
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * conv.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
  loss_before, _ = trainer.loss_and_metrics(after.params, model, batch, None, state.batch_stats)
  loss_after, _ = trainer.loss_and_metrics(after.params, model, batch, None, after.batch_stats)
  assert float(loss_before) != float(loss_after)  # evaluation normalises with the running averages
