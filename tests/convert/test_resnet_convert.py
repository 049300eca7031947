"""Pretrained ResNets in our backbone: a Hugging Face directory and a torchvision state dict (`.pth` zip and
`.safetensors`) of ResNet-18/50/101 give grid features equal to `transformers.ResNetModel`'s (an independent
implementation, random weights and BatchNorm statistics), clear errors for what does not fit, and
`loop.initial_state` starts the video streams from them."""
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.convert import resnet_weights
from lrr_jax.models import resnet

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
WeightsFileError = resnet_weights.WeightsFileError
BOTTLENECK = dict(hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck")
# depth -> (our preset, transformers.ResNetConfig fields, and torchvision.models.resnet<depth>'s published
# state dict length and parameter count less its 1000-class fc, which the torchvision layout must reproduce)
DEPTHS = {
    18: ("resnet18", dict(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic"), 122,
         11_689_512 - 513_000),
    50: ("resnet50", dict(depths=[3, 4, 6, 3], **BOTTLENECK), 320, 25_557_032 - 2_049_000),
    101: ("resnet101", dict(depths=[3, 4, 23, 3], **BOTTLENECK), 626, 44_549_160 - 2_049_000),
}
TINY = dict(depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8, layer_type="basic")
TINY_CONFIG = resnet.ResNetConfig(stage_sizes=(1, 1), bottleneck=False, width=8)


def save_hf_resnet(directory, seed: int = 0, **config_kwargs):
  """Save a random `transformers.ResNetModel` (v1.5) whose BatchNorms have random scales, biases and running
  statistics (each residual branch's last scale small, so 33 blocks keep features of order 1); return it."""
  torch.manual_seed(seed)
  config = transformers.ResNetConfig(**{"embedding_size": 64, "downsample_in_bottleneck": False,
                                        **config_kwargs})
  model = transformers.ResNetModel(config).eval()
  last_norm = f".layer.{2 if config.layer_type == 'bottleneck' else 1}.normalization"
  with torch.no_grad():
    for name, module in model.named_modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(*((0.1, 0.3) if name.endswith(last_norm) else (0.5, 1.5)))
        module.bias.normal_(0.0, 0.2)
        module.running_mean.normal_(0.0, 0.2)
        module.running_var.uniform_(0.5, 2.0)
        module.num_batches_tracked.fill_(1000)
  model.save_pretrained(directory)
  return model


def torchvision_state_dict(model) -> dict:
  """`model`'s tensors under torchvision.models.resnet's names (conv1, bn1, layer<s>.<b>.conv<i> / bn<i>,
  layer<s>.<b>.downsample.0 / .1 where the stride or the width changes, fc), with a random 1000-class fc."""
  hf, config, state = model.state_dict(), model.config, {}

  def conv_bn(conv: str, bn: str, source: str):
    state[f"{conv}.weight"] = hf[f"{source}.convolution.weight"]
    for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
      state[f"{bn}.{suffix}"] = hf[f"{source}.normalization.{suffix}"]

  conv_bn("conv1", "bn1", "embedder.embedder")
  bottleneck = config.layer_type == "bottleneck"
  for stage, blocks in enumerate(config.depths):
    for block in range(blocks):
      ours, theirs = f"layer{stage + 1}.{block}", f"encoder.stages.{stage}.layers.{block}"
      for i in range(3 if bottleneck else 2):
        conv_bn(f"{ours}.conv{i + 1}", f"{ours}.bn{i + 1}", f"{theirs}.layer.{i}")
      if block == 0 and (stage > 0 or bottleneck):
        conv_bn(f"{ours}.downsample.0", f"{ours}.downsample.1", f"{theirs}.shortcut")
  state["fc.weight"] = torch.randn(1000, config.hidden_sizes[-1])
  state["fc.bias"] = torch.randn(1000)
  assert len(state) == len(hf) + 2  # every tensor of the model, once
  return {name: value.clone().contiguous() for name, value in state.items()}


@functools.lru_cache(maxsize=None)
def forward(config: resnet.ResNetConfig):
  """Our ResNet's apply, compiled once per architecture."""
  return jax.jit(resnet.ResNet(config).apply)


def assert_matches_transformers(variables, config: resnet.ResNetConfig, model):
  """Our grid features (eval mode: running statistics) equal `last_hidden_state` (NCHW -> NHWC)."""
  images = np.random.RandomState(0).randn(1, 3, 64, 64).astype(np.float32)
  with torch.no_grad():
    expected = model(torch.from_numpy(images)).last_hidden_state.numpy().transpose(0, 2, 3, 1)
  abstract = jax.eval_shape(resnet.ResNet(config).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert jax.tree.structure(variables) == jax.tree.structure(flax.linen.meta.unbox(abstract))
  ours = np.asarray(forward(config)(variables, jnp.asarray(images.transpose(0, 2, 3, 1))))
  assert ours.shape == expected.shape and np.abs(expected).max() > 0.5
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)


@pytest.fixture(scope="module", params=sorted(DEPTHS), ids=lambda depth: f"resnet{depth}")
def hf_resnet(request, tmp_path_factory):
  """(depth, a saved Hugging Face ResNet directory, the torch model)."""
  directory = tmp_path_factory.mktemp(f"hf_resnet{request.param}")
  return request.param, directory, save_hf_resnet(directory, **DEPTHS[request.param][1])


def test_hugging_face_directory_matches_transformers(hf_resnet):
  depth, directory, model = hf_resnet
  config = resnet.resnet_config(DEPTHS[depth][0])
  found, variables = resnet_weights.load_resnet(directory, config)
  assert found == config
  assert_matches_transformers(variables, config, model)


def test_a_scanned_backbone_matches_transformers(hf_resnet):
  """Blocks after the first of each stage stacked for `scan_layers` (ResNet-18 only: the layout is the same
  code at every depth)."""
  depth, directory, model = hf_resnet
  if depth != 18:
    pytest.skip("checked on the smallest ResNet")
  config = resnet.resnet_config(DEPTHS[depth][0], scan_layers=True)
  found, variables = resnet_weights.load_resnet(directory, config)
  assert found == config and variables["params"]["stage_1_blocks"]["conv_norm_1"]["conv"]["kernel"].shape[0] == 1
  assert_matches_transformers(variables, config, model)


def test_torchvision_pth_and_safetensors_match_transformers(hf_resnet, tmp_path):
  import safetensors.torch  # pylint: disable=g-import-not-at-top
  depth, _, model = hf_resnet
  preset, _, state_dict_length, num_params = DEPTHS[depth]
  state = torchvision_state_dict(model)
  assert len(state) == state_dict_length
  assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k
             and not k.startswith("fc.")) == num_params
  torch.save(state, tmp_path / f"resnet{depth}-test.pth")
  safetensors.torch.save_file(state, tmp_path / f"resnet{depth}-test.safetensors")
  for file in (f"resnet{depth}-test.pth", f"resnet{depth}-test.safetensors"):
    found, variables = resnet_weights.load_resnet(tmp_path / file)  # the architecture read from the tensors
    assert found == resnet.resnet_config(preset), file
    assert_matches_transformers(variables, found, model)


def test_another_depth_is_refused(hf_resnet):
  depth, directory, _ = hf_resnet
  other = {18: "resnet50", 50: "resnet101", 101: "resnet50"}[depth]
  with pytest.raises(WeightsFileError, match=rf"holds a ResNet-{depth} .*but the model's backbone is a "
                     rf"ResNet-{other.removeprefix('resnet')} "):
    resnet_weights.load_resnet(directory, resnet.resnet_config(other))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(a tiny Hugging Face ResNet directory, its torchvision state dict)."""
  directory = tmp_path_factory.mktemp("tiny_resnet")
  return directory, torchvision_state_dict(save_hf_resnet(directory, **TINY))


def saved(tmp_path, state: dict, name: str = "resnet.pth"):
  torch.save(state, tmp_path / name)
  return tmp_path / name


def test_missing_checkpoints_are_named(tmp_path):
  with pytest.raises(WeightsFileError, match=r"nowhere.pth is missing"):
    resnet_weights.load_resnet(tmp_path / "nowhere.pth", TINY_CONFIG)
  with pytest.raises(WeightsFileError, match=r"No config.json in"):
    resnet_weights.load_resnet(tmp_path, TINY_CONFIG)


def test_a_state_dict_that_is_not_a_resnet_is_refused(tmp_path):
  linear = torch.nn.Linear(3, 4).state_dict()
  with pytest.raises(WeightsFileError, match=r"is not a torchvision or Hugging Face ResNet.*\['bias', 'weight'\]"):
    resnet_weights.load_resnet(saved(tmp_path, linear), TINY_CONFIG)


def test_an_image_classifier_directory_gives_its_backbone(tiny, tmp_path):
  """`ResNetForImageClassification` (as the Hub's microsoft/resnet-*): keys under `resnet.`, a classifier."""
  backbone = transformers.ResNetModel.from_pretrained(tiny[0])
  classifier = transformers.ResNetForImageClassification(backbone.config)
  classifier.resnet.load_state_dict(backbone.state_dict())
  classifier.save_pretrained(tmp_path)
  _, expected = resnet_weights.load_resnet(tiny[0], TINY_CONFIG)
  jax.tree.map(np.testing.assert_array_equal, resnet_weights.load_resnet(tmp_path, TINY_CONFIG)[1], expected)


def test_a_path_under_home_is_expanded(tiny, monkeypatch):
  """`--config.model.video.static_init_from=~/resnet101-cd907fc2.pth`: the shell leaves `~` after `=` as it is."""
  monkeypatch.setenv("HOME", str(tiny[0].parent))
  _, expected = resnet_weights.load_resnet(tiny[0], TINY_CONFIG)
  jax.tree.map(np.testing.assert_array_equal,
               resnet_weights.load_resnet(f"~/{tiny[0].name}", TINY_CONFIG)[1], expected)


def test_a_hugging_face_file_without_its_directory_is_refused(tiny):
  with pytest.raises(WeightsFileError, match=r"model.safetensors holds a Hugging Face ResNet's tensors: give its "
                     r"directory"):
    resnet_weights.load_resnet(tiny[0] / "model.safetensors", TINY_CONFIG)


def test_another_width_is_refused(tiny):
  with pytest.raises(WeightsFileError, match=r"holds a ResNet-6 \(stage_sizes \(1, 1\), basic blocks, width 8\)"
                     r", but the model's backbone is a ResNet-6 \(.*width 16\)"):
    resnet_weights.load_resnet(tiny[0], resnet.ResNetConfig(stage_sizes=(1, 1), bottleneck=False, width=16))


def test_a_group_norm_backbone_is_refused(tiny):
  config = resnet.ResNetConfig(stage_sizes=(1, 1), bottleneck=False, width=8, norm="group")
  with pytest.raises(WeightsFileError, match=r"needs norm='batch' and stem_pool=True.*norm='group'"):
    resnet_weights.load_resnet(tiny[0], config)


def test_a_wrong_shape_names_the_tensor_and_our_parameter(tiny, tmp_path):
  state = dict(tiny[1], **{"layer2.0.conv2.weight": torch.zeros(16, 16, 1, 1)})
  with pytest.raises(WeightsFileError, match=r"tensor layer2.0.conv2.weight has shape \(16, 16, 1, 1\), but "
                     r"stage_1_block_0/conv_norm_2/conv/kernel of a ResNet-6 .* needs \(3, 3, 16, 16\)"):
    resnet_weights.load_resnet(saved(tmp_path, state), TINY_CONFIG)


def test_missing_and_unknown_tensors_are_named(tiny, tmp_path):
  state = {k: v for k, v in tiny[1].items() if k != "layer1.0.bn2.running_var"}
  with pytest.raises(WeightsFileError, match=r"tensor layer1.0.bn2.running_var \(for "
                     r"stage_0_block_0/conv_norm_2/norm/var\) is missing"):
    resnet_weights.load_resnet(saved(tmp_path, state), TINY_CONFIG)
  state = dict(tiny[1], **{"layer1.0.se.fc1.weight": torch.zeros(2, 8)})
  with pytest.raises(WeightsFileError, match=r"tensors \['layer1.0.se.fc1.weight'\] \(of 1\) are not part of "
                     r"a torchvision ResNet-6"):
    resnet_weights.load_resnet(saved(tmp_path, state), TINY_CONFIG)


def test_a_training_checkpoint_around_the_state_dict_is_refused(tiny, tmp_path):
  with pytest.raises(WeightsFileError, match=r"entries \['epoch'\] are not tensors"):
    resnet_weights.load_resnet(saved(tmp_path, {"epoch": 3, **tiny[1]}), TINY_CONFIG)


@pytest.mark.parametrize("key, value", [("downsample_in_bottleneck", True), ("hidden_act", "gelu"),
                                        ("model_type", "convnext")])
def test_hugging_face_configs_of_other_variants_are_refused(tiny, tmp_path, key, value):
  import json  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  directory = tmp_path / "variant"
  shutil.copytree(tiny[0], directory)
  config = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps({**config, key: value}))
  with pytest.raises(WeightsFileError, match=rf"config.json has {key}={value!r}; our ResNet \(v1.5\) needs"):
    resnet_weights.load_resnet(directory, TINY_CONFIG)


STREAM_WIDTHS = {"static": 8, "motion": 4}


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
  """{stream: (a tiny Hugging Face ResNet directory, the torch model)} for the static and motion streams of the
  tiny LRR preset (stage_sizes (1, 1), basic blocks; widths 8 and 4)."""
  saved = {}
  for stream, width in STREAM_WIDTHS.items():
    directory = tmp_path_factory.mktemp(stream)
    saved[stream] = directory, save_hf_resnet(directory, seed=width, **dict(
        TINY, hidden_sizes=[width, 2 * width], embedding_size=width))
  return saved


def lrr_run_config(streams):
  """The CATER demo config with two-stage BatchNorm backbones (a max-pool after the stem, no CoordConv) that start
  from `streams`."""
  from configs import cater  # pylint: disable=g-import-not-at-top
  config = cater.get_config()
  config.model.video.coordinate_channels = False
  for stream, (directory, _) in streams.items():
    config.model.video[f"{stream}_backbone"].update(norm="batch", stem_pool=True, width=STREAM_WIDTHS[stream],
                                                    stage_sizes=(1, 1))
    config.model.video[f"{stream}_init_from"] = str(directory)
  return config


def lrr_model(config):
  from lrr_jax import run_objects  # pylint: disable=g-import-not-at-top
  from lrr_jax.models import lrr  # pylint: disable=g-import-not-at-top
  return lrr.LRRModel(run_objects.model_config(typed(config)))


def typed(config):
  from lrr_jax import run_config  # pylint: disable=g-import-not-at-top
  return run_config.RunConfig.from_config_dict(config)


def insert_backbones(variables, config):
  """`resnet_weights.insert_pretrained_backbones` with the checkpoints and video encoder `config` names."""
  model = typed(config).model
  return resnet_weights.insert_pretrained_backbones(
      variables, {s: model.stream_init_from(s) for s in resnet_weights.STREAMS}, model.architecture().video)


def example_batch() -> dict[str, np.ndarray]:
  tokens = np.zeros((1, 8), np.int32)
  return dict(inputs=tokens, targets=tokens, positions=tokens, segment_ids=tokens + 1, frame_index=tokens,
              loss_mask=tokens, video=np.zeros((1, 2, 32, 32, 3), np.uint8))


def converted(streams, model, stream: str) -> dict:
  backbone = getattr(model.config.video, f"{stream}_backbone")
  return resnet_weights.load_resnet(streams[stream][0], backbone)[1]


@pytest.mark.slow  # over 7 s
def test_initial_state_starts_the_video_streams_from_the_checkpoints(streams):
  from lrr_jax import run_objects  # pylint: disable=g-import-not-at-top
  from lrr_jax.train import loop, partitioning, trainer  # pylint: disable=g-import-not-at-top
  config = typed(lrr_run_config(streams))
  model = lrr_model(lrr_run_config(streams))
  optimizer = trainer.make_optimizer(config.optimizer)
  init, _, shardings = trainer.make_sharded_training(
      model, optimizer, trainer.learning_rate_schedule(config.optimizer), example_batch(),
      partitioning.make_mesh(config.mesh.shape()), partitioning.DEFAULT_RULES)
  fresh = flax.traverse_util.flatten_dict(init(jax.random.key(config.seed)).params)
  state = loop.initial_state(config.seed, init, shardings, lambda v: run_objects.insert_pretrained(config, v))

  for stream, (_, torch_model) in streams.items():
    ours = state.params["video_encoder"][f"{stream}_stream"]
    jax.tree.map(np.testing.assert_array_equal, ours, converted(streams, model, stream)["params"])
    jax.tree.map(np.testing.assert_array_equal, state.batch_stats["video_encoder"][f"{stream}_stream"],
                 converted(streams, model, stream)["batch_stats"])  # the running statistics too
    stem = torch_model.embedder.embedder.convolution.weight.detach().numpy()
    np.testing.assert_array_equal(ours["stem"]["conv"]["kernel"], stem.transpose(2, 3, 1, 0))
  for path, value in flax.traverse_util.flatten_dict(state.params).items():
    if path[1] not in ("static_stream", "motion_stream"):
      np.testing.assert_array_equal(value, fresh[path], err_msg="/".join(path))
  assert jax.tree.leaves(jax.tree.map(lambda x, s: x.sharding == s, state.params, shardings.params)) == [
      True] * len(jax.tree.leaves(state.params))


def test_both_collections_are_filled_and_boxes_kept(streams):
  config = lrr_run_config(streams)
  model = lrr_model(config)
  batch = example_batch()
  abstract = jax.eval_shape(model.init, jax.random.key(0), batch["inputs"], batch["positions"],
                            batch["segment_ids"], batch["frame_index"], batch["video"])
  variables = insert_backbones(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract), config)
  for stream in streams:
    expected = converted(streams, model, stream)
    for collection in ("params", "batch_stats"):
      ours = flax.linen.meta.unbox(variables[collection]["video_encoder"][f"{stream}_stream"])
      jax.tree.map(np.testing.assert_array_equal, ours, expected[collection])
  assert isinstance(variables["params"]["video_encoder"]["static_stream"]["stem"]["conv"]["kernel"],
                    flax.linen.Partitioned)
  assert not np.asarray(variables["params"]["decoder"]["final_layer_norm"]["scale"].unbox()).any()  # untouched


def test_stream_errors_name_the_config_key(streams):
  config = lrr_run_config(streams)
  config.model.video.motion_init_from = config.model.video.static_init_from  # width 8 for a width-4 stream
  with pytest.raises(WeightsFileError, match=r"^config.model.video.motion_init_from: .*static.* holds a ResNet-6 "
                     r"\(.*width 8\), but the model's backbone is a ResNet-6 \(.*width 4\)"):
    insert_backbones({}, config)
  config.model.video.coordinate_channels = True
  with pytest.raises(ValueError, match=r"config.model.video.static_init_from is set with "
                     r"config.model.video.coordinate_channels=True"):
    insert_backbones({}, config)


@pytest.mark.parametrize("layout", ["Hugging Face", "torchvision"])
def test_a_truncated_backbone_loads_its_stages_and_ignores_the_later_ones(tiny, tmp_path, layout):
  """grid_stage=2 (conv2_x) of a two-stage checkpoint: its first stage equals transformers' first stage output."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  directory, state = tiny
  config = dataclasses.replace(TINY_CONFIG, grid_stage=2)
  found, variables = resnet_weights.load_resnet(directory if layout == "Hugging Face" else saved(tmp_path, state),
                                                config)
  assert found == config and not any(name.startswith("stage_1") for name in variables["params"])
  model = transformers.ResNetModel.from_pretrained(directory).eval()
  images = np.random.RandomState(0).randn(1, 3, 32, 32).astype(np.float32)
  with torch.no_grad():
    expected = model(torch.from_numpy(images), output_hidden_states=True).hidden_states[1].numpy()
  ours = np.asarray(forward(config)(variables, jnp.asarray(images.transpose(0, 2, 3, 1))))
  np.testing.assert_allclose(ours, expected.transpose(0, 2, 3, 1), rtol=0, atol=1e-4)
