"""Read a pretrained ResNet-18/34/50/101/152 into our `ResNet`'s variables (params and BatchNorm statistics).

Two layouts, told apart by their tensor names:
- torchvision: a state dict file, `resnet101-*.pth` (`torch.save`'s zip, read without torch by `torch_pickle`)
  or `.safetensors`, keys `conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
  `layer1.0.downsample.0.weight`, `fc.weight`... (timm's ResNets use the same names);
- Hugging Face: a directory with `config.json` (model_type "resnet") and the weights `hf_weights` reads, keys
  `embedder.embedder.convolution.weight`, `encoder.stages.0.layers.0.shortcut.normalization.running_mean`...
  (`ResNetModel`, or `ResNetForImageClassification`, whose keys start with `resnet.`).
Both are v1.5, as ours: the stride is in the bottleneck's 3x3 convolution. The architecture (blocks per stage,
basic or bottleneck, width) is read from the tensors; the classifier and `num_batches_tracked` are dropped, and
so are the stages after the backbone's `grid_stage` (a truncated backbone, e.g. conv4_x of a ResNet-101, loads
the same checkpoint; only the stages it builds are read).
"""
import dataclasses
import functools
import os
import pathlib
from typing import Any, Callable, Mapping

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lrr_jax.convert import hf_opt
from lrr_jax.convert import hf_weights
from lrr_jax.convert import safetensors_file
from lrr_jax.convert import torch_pickle
from lrr_jax import files
from lrr_jax.models import resnet
from lrr_jax.models import video_encoder

PathLike = str | os.PathLike
WeightsFileError = safetensors_file.WeightsFileError
Module = tuple[str, ...]  # a ConvNorm's path in our ResNet: ("stem",), ("stage_1_block_0", "shortcut")


def _stage_block(module: Module) -> tuple[int, int, str]:
  """("stage_1_block_0", "conv_norm_2") -> (1, 0, "conv_norm_2")."""
  _, stage, _, block = module[0].split("_")
  return int(stage), int(block), module[1]


def torchvision_names(module: Module) -> tuple[str, str]:
  """Our ConvNorm at `module` -> the prefixes of its convolution and its BatchNorm in a torchvision ResNet."""
  if module == ("stem",):
    return "conv1", "bn1"
  stage, block, part = _stage_block(module)
  prefix = f"layer{stage + 1}.{block}"
  if part == "shortcut":
    return f"{prefix}.downsample.0", f"{prefix}.downsample.1"
  index = part.removeprefix("conv_norm_")
  return f"{prefix}.conv{index}", f"{prefix}.bn{index}"


def hf_names(module: Module) -> tuple[str, str]:
  """Our ConvNorm at `module` -> the prefixes of its convolution and its BatchNorm in a Hugging Face ResNet."""
  if module == ("stem",):
    part = "embedder.embedder"
  else:
    stage, block, name = _stage_block(module)
    inner = "shortcut" if name == "shortcut" else f"layer.{int(name.removeprefix('conv_norm_')) - 1}"
    part = f"encoder.stages.{stage}.layers.{block}.{inner}"
  return f"{part}.convolution", f"{part}.normalization"


@dataclasses.dataclass(frozen=True)
class Layout:
  name: str
  names: Callable[[Module], tuple[str, str]]
  classifier: str  # prefix of the classifier's tensors, which a backbone drops
  stage: Callable[[int], str]  # our stage index -> the prefix of its tensors


LAYOUTS = (Layout("torchvision", torchvision_names, "fc.", lambda k: f"layer{k + 1}."),
           Layout("Hugging Face", hf_names, "classifier.", lambda k: f"encoder.stages.{k}."))
# Our variable (collection, leaf) -> (0: the conv's prefix / 1: the norm's, their tensor's suffix).
TENSORS = {("params", "conv", "kernel"): (0, "weight"), ("params", "norm", "scale"): (1, "weight"),
           ("params", "norm", "bias"): (1, "bias"), ("batch_stats", "norm", "mean"): (1, "running_mean"),
           ("batch_stats", "norm", "var"): (1, "running_var")}


def read_checkpoint(path: PathLike) -> dict[str, np.ndarray]:
  """Every tensor of a state dict file (`torch.save` zip, or `.safetensors`) or of a Hugging Face ResNet
  directory (whose config.json must describe a v1.5 ResNet with ReLUs)."""
  path = pathlib.Path(path)
  if path.is_dir():
    _check_hf_config(path)
    weights = hf_weights.read_weights(path)
    return {name.removeprefix("resnet."): value for name, value in weights.items()}
  if not path.is_file():
    raise WeightsFileError(f"{path} is missing: expected a ResNet state dict file or a Hugging Face directory.")
  if path.suffix == ".safetensors":
    return safetensors_file.read_safetensors(path)
  return torch_pickle.read_state_dict(path)


def _check_hf_config(path: pathlib.Path) -> None:
  """What the tensors cannot tell: where the stride is, the activation."""
  config_file = path / "config.json"
  try:
    hf = files.read_json(config_file, expect=dict)
  except FileNotFoundError as e:
    raise WeightsFileError(f"No config.json in {path}: expected a Hugging Face ResNet directory.") from e
  except ValueError as e:
    raise WeightsFileError(str(e)) from e
  expected = {"model_type": "resnet", "downsample_in_bottleneck": False, "downsample_in_first_stage": False,
              "hidden_act": "relu"}
  for key, value in expected.items():
    if hf.get(key, value) != value:
      raise WeightsFileError(f"{config_file} has {key}={hf[key]!r:.50}; our ResNet (v1.5) needs {value!r}.")


def find_layout(path: PathLike, weights: Mapping[str, np.ndarray]) -> Layout:
  """The layout whose stem convolution `weights` has; Hugging Face's only from a directory (its config.json
  says where the stride is)."""
  for layout in LAYOUTS:
    if f"{layout.names(('stem',))[0]}.weight" in weights:
      if layout.name == "Hugging Face" and not pathlib.Path(path).is_dir():
        raise WeightsFileError(f"{path} holds a Hugging Face ResNet's tensors: give its directory, whose "
                               "config.json is checked too.")
      return layout
  raise WeightsFileError(f"{path} is not a torchvision or Hugging Face ResNet: it has no conv1.weight or "
                         f"embedder.embedder.convolution.weight; its first tensors are {sorted(weights)[:5]}.")


def read_architecture(path: PathLike, weights: Mapping[str, np.ndarray], layout: Layout) -> dict[str, Any]:
  """The ResNetConfig fields `weights` imply: stage_sizes, bottleneck and width (the stem's channels)."""
  has_conv = lambda module: f"{layout.names(module)[0]}.weight" in weights
  stage_sizes = []
  while has_conv((f"stage_{len(stage_sizes)}_block_0", "conv_norm_1")):
    stage, blocks = len(stage_sizes), 1
    while has_conv((f"stage_{stage}_block_{blocks}", "conv_norm_1")):
      blocks += 1
    stage_sizes.append(blocks)
  stem = weights[f"{layout.names(('stem',))[0]}.weight"]
  if not stage_sizes or stem.ndim != 4:
    raise WeightsFileError(f"{path}: a {layout.name} ResNet's stem convolution (shape {stem.shape}) and "
                           "residual blocks are expected, but the blocks of its first stage are missing.")
  bottleneck = has_conv(("stage_0_block_0", "conv_norm_3"))
  return dict(stage_sizes=tuple(stage_sizes), bottleneck=bottleneck, width=int(stem.shape[0]))


def describe(config: resnet.ResNetConfig) -> str:
  """'ResNet-101 (stage_sizes (3, 4, 23, 3), bottleneck blocks, width 64)'."""
  depth = 2 + sum(config.stage_sizes) * (3 if config.bottleneck else 2)
  blocks = "bottleneck" if config.bottleneck else "basic"
  return f"ResNet-{depth} (stage_sizes {config.stage_sizes}, {blocks} blocks, width {config.width})"


def _check_architecture(path: PathLike, found: resnet.ResNetConfig, config: resnet.ResNetConfig) -> None:
  if found != config:
    raise WeightsFileError(f"{path} holds a {describe(found)}, but the model's backbone is a {describe(config)}.")
  if config.norm != "batch" or not config.stem_pool:
    raise WeightsFileError(f"{path}: a pretrained ResNet needs norm='batch' and stem_pool=True (it has "
                           f"BatchNorms and a max-pool after the stem); the backbone has norm={config.norm!r}, "
                           f"stem_pool={config.stem_pool}.")


@functools.lru_cache(maxsize=4)
def _variable_shapes(config: resnet.ResNetConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  """(collection, *path) -> shape of every variable of `ResNet(config)` on RGB images, without projection."""
  model = resnet.ResNet(dataclasses.replace(config, projection_dim=0))
  abstract = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  flat = flax.traverse_util.flatten_dict(abstract, is_leaf=lambda _, v: isinstance(v, nn.Partitioned))
  return {path: (v.value if isinstance(v, nn.Partitioned) else v).shape for path, v in flat.items()}


def _convert(path: PathLike, weights: Mapping[str, np.ndarray], layout: Layout,
             config: resnet.ResNetConfig) -> dict[str, Any]:
  """Our variables from `weights`, each shape checked; an error names any tensor left unused."""
  variables, used = {}, set()
  param_dtype = np.dtype(jnp.dtype(config.param_dtype))
  for ours, shape in _variable_shapes(config).items():
    collection, module, leaf = ours[0], ours[1:-2], ours[-2:]
    prefix, suffix = TENSORS[(collection,) + leaf]
    theirs = f"{layout.names(module)[prefix]}.{suffix}"
    if theirs not in weights:
      raise WeightsFileError(f"{path}: tensor {theirs} (for {'/'.join(ours[1:])}) is missing.")
    value = np.asarray(weights[theirs], np.float32)
    value = value.transpose(2, 3, 1, 0) if leaf == ("conv", "kernel") else value  # OIHW -> HWIO
    if value.shape != shape:
      raise WeightsFileError(f"{path}: tensor {theirs} has shape {weights[theirs].shape}, but "
                             f"{'/'.join(ours[1:])} of a {describe(config)} needs {shape}"
                             + (" (HWIO; theirs is OIHW)." if leaf == ("conv", "kernel") else "."))
    variables[ours] = value.astype(param_dtype if collection == "params" else np.float32)
    used.add(theirs)
  not_built = tuple(layout.stage(k) for k in range(config.num_stages, len(config.stage_sizes)))
  dropped = (layout.classifier,) + not_built  # the classifier; the stages after the grid stage
  unused = sorted(name for name in weights if name not in used and not name.startswith(dropped)
                  and not name.endswith("num_batches_tracked"))
  if unused:
    raise WeightsFileError(f"{path}: tensors {unused[:5]} (of {len(unused)}) are not part of a {layout.name} "
                           f"{describe(config)}.")
  return flax.traverse_util.unflatten_dict(variables)


def load_resnet(path: PathLike, config: resnet.ResNetConfig | None = None
                ) -> tuple[resnet.ResNetConfig, dict[str, Any]]:
  """Read the pretrained ResNet at `path` for `ResNet(config)`.

  Args:
    path: a torchvision state dict file (`.pth` zip or `.safetensors`) or a Hugging Face ResNet directory;
      local (`~` expanded) or gs://, copied into the local cache first (`files.localize`).
    config: the backbone the run uses; None: the checkpoint's own architecture (ResNetConfig's other defaults).
  Returns:
    The architecture found (`config` itself when given) and {"params": ..., "batch_stats": ...} laid out as
    `ResNet`'s variables without the projection (params in `param_dtype`, statistics in float32), the
    repeated blocks of each stage stacked if `config.scan_layers`.
  Raises:
    WeightsFileError: a missing or unreadable file, a state dict that is not a ResNet's, another architecture
      than `config`'s, or a tensor of the wrong shape (named).
  """
  path = files.localize(path)  # `~` expanded; a gs:// file or directory read from the local cache
  weights = read_checkpoint(path)
  layout = find_layout(path, weights)
  found = dataclasses.replace(config or resnet.ResNetConfig(), **read_architecture(path, weights, layout))
  _check_architecture(path, found, config or found)
  variables = _convert(path, weights, layout, dataclasses.replace(found, scan_layers=False, remat_policy="none"))
  if found.scan_layers:
    variables = {collection: resnet.stack_blocks(tree, found) for collection, tree in variables.items()}
  return found, variables


STREAMS = ("static", "motion")  # config.model.video.<stream>_init_from -> the video encoder's <stream>_stream


def insert_pretrained_backbones(variables: Mapping[str, Any], paths: Mapping[str, str],
                                model: video_encoder.VideoEncoderConfig) -> dict[str, Any]:
  """`variables` of an `LRRModel` with each video stream whose checkpoint `paths[stream]` names (static,
  motion; config.model.video.<stream>_init_from) loaded from it, in every collection `variables` has
  ("params" and/or "batch_stats"); logical-partitioning boxes are kept. `model`: the run's video encoder.

  The motion stream reads frame differences at 1/motion_downsample resolution; an RGB-pretrained ResNet is
  allowed there too (its filters still respond to edges of what moved), as a starting point to fine-tune.
  """
  if not any(paths.values()):
    return dict(variables)
  variables = dict(variables)
  for stream, path in paths.items():
    if not path:
      continue
    key = f"config.model.video.{stream}_init_from"
    if stream == "motion" and not model.two_stream:
      raise ValueError(f"{key} is set, but config.model.video.two_stream is False: there is no motion stream.")
    if stream == "static" and model.coordinate_channels:
      raise ValueError(f"{key} is set with config.model.video.coordinate_channels=True: a pretrained stem reads "
                       "3 (RGB) channels, CoordConv gives it 5; set coordinate_channels=False.")
    backbone = getattr(model, f"{stream}_backbone")
    try:
      _, pretrained = load_resnet(path, backbone)
    except WeightsFileError as e:
      raise WeightsFileError(f"{key}: {e}") from e
    for collection in set(pretrained) & set(variables):
      variables[collection] = hf_opt.insert_pretrained(variables[collection], pretrained[collection],
                                                       at=("video_encoder", f"{stream}_stream"))
    logging.info("The %s stream starts from %s (%s).", stream, path, describe(backbone))
  return variables
