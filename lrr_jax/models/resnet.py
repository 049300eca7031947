"""ResNet v1.5 (stride in the 3x3 convolution) returning grid features of a chosen stage.

LRR reads frames through a CNN's grid features rather than a pooled vector: `ResNet` returns
float[B, h, w, C] (no global pooling) of stage `grid_stage` (by default its last), optionally projected to
the LM width. At 224 px an ImageNet ResNet's last stage (conv5_x) gives 7x7; conv4_x (`grid_stage=4`) 14x14,
the later stages are then not built. BatchNorm uses its running statistics (a frozen, pretrained backbone)
unless `train_batch_norm`; `norm="group"` (the tiny preset) is for training from scratch.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrr_jax.models import layers
from lrr_jax.models import remat
from lrr_jax.models import scan

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  """Depth and width of the backbone; the stride of the stage giving the grid sets its size."""
  stage_sizes: tuple[int, ...] = (3, 4, 23, 3)
  bottleneck: bool = True
  width: int = 64  # channels of the stem and the first stage (before the bottleneck expansion)
  norm: str = "batch"  # "batch" (running statistics) or "group"
  # BatchNorm in training: False, normalise with the running statistics, which stay as loaded (a frozen,
  # pretrained backbone); True, normalise with the batch's statistics and update the running averages
  # (momentum 0.9) in `batch_stats` (a backbone trained with its BatchNorm). Evaluation always uses them.
  train_batch_norm: bool = False
  num_groups: int = 32
  stem_pool: bool = True  # 3x3/2 max-pool after the 7x7/2 stem
  # The stage whose output is the grid, named as He et al. name them (2: conv2_x, the first stage, ...,
  # len(stage_sizes) + 1: the last); 0: the last. Stages after it are not built.
  grid_stage: int = 0
  projection_dim: int = 0  # >0: Dense from the grid stage's channels to this width
  dtype: str = "float32"
  param_dtype: str = "float32"
  # The blocks after the first of each stage (all of one shape) as one scan, stacked as `stage_<s>_blocks`.
  scan_layers: bool = False
  remat_policy: str = "none"  # of each residual block (`remat.POLICIES`)

  def __post_init__(self):
    remat.check_policy(self.remat_policy, "ResNetConfig.remat_policy")
    if self.norm not in ("batch", "group"):
      raise ValueError(f"ResNetConfig.norm={self.norm!r}; expected 'batch' or 'group'.")
    last = len(self.stage_sizes) + 1
    if self.grid_stage != 0 and not 2 <= self.grid_stage <= last:
      raise ValueError(f"ResNetConfig.grid_stage={self.grid_stage}: a ResNet of {len(self.stage_sizes)} stages "
                       f"(stage_sizes {tuple(self.stage_sizes)}) has stages 2 (conv2_x) to {last}; 0 is its last.")

  @property
  def num_stages(self) -> int:
    """Stages built: up to the one giving the grid."""
    return self.grid_stage - 1 if self.grid_stage else len(self.stage_sizes)

  @property
  def stride(self) -> int:
    """Input pixels per grid cell along each side."""
    return 2 * (2 if self.stem_pool else 1) * 2 ** (self.num_stages - 1)

  @property
  def out_channels(self) -> int:
    return self.projection_dim or self.width * 2 ** (self.num_stages - 1) * (4 if self.bottleneck else 1)


RESNET_CONFIGS = {
    "resnet18": ResNetConfig(stage_sizes=(2, 2, 2, 2), bottleneck=False),
    "resnet50": ResNetConfig(stage_sizes=(3, 4, 6, 3)),
    "resnet101": ResNetConfig(stage_sizes=(3, 4, 23, 3)),
    "tiny": ResNetConfig(stage_sizes=(1, 1), bottleneck=False, width=8, norm="group", num_groups=4,
                         stem_pool=False),
}


def resnet_config(name: str, **overrides: Any) -> ResNetConfig:
  """A named ResNet ('resnet18', 'resnet50', 'resnet101', 'tiny') with fields overridden."""
  if name not in RESNET_CONFIGS:
    raise ValueError(f"Unknown ResNet {name!r}; expected one of {sorted(RESNET_CONFIGS)}.")
  return dataclasses.replace(RESNET_CONFIGS[name], **overrides)


class ConvNorm(nn.Module):
  """Convolution (no bias) followed by the configured normalisation."""
  config: ResNetConfig
  features: int
  kernel_size: int
  strides: int = 1
  zero_init_norm: bool = False  # the last norm of a residual branch starts at zero
  training: bool = False  # with `config.train_batch_norm`: batch statistics, running averages updated

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    kwargs = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    pad = (self.kernel_size - 1) // 2
    x = nn.Conv(self.features, (self.kernel_size,) * 2, (self.strides,) * 2, padding=[(pad, pad)] * 2,
                use_bias=False, name="conv", kernel_init=layers.partitioned(
                    nn.initializers.kaiming_normal(), ("conv_height", "conv_width", "conv_in", "conv_out")),
                **kwargs)(x)
    scale_init = nn.initializers.zeros_init() if self.zero_init_norm else nn.initializers.ones_init()
    norm_kwargs = dict(scale_init=layers.partitioned(scale_init, ("norm",)),
                       bias_init=layers.partitioned(nn.initializers.zeros_init(), ("norm",)), name="norm",
                       **kwargs)
    if cfg.norm == "batch":
      batch_statistics = self.training and cfg.train_batch_norm
      return nn.BatchNorm(use_running_average=not batch_statistics, momentum=0.9, epsilon=1e-5, **norm_kwargs)(x)
    return nn.GroupNorm(num_groups=min(cfg.num_groups, self.features), epsilon=1e-5, **norm_kwargs)(x)


class ResidualBlock(nn.Module):
  """Basic (two 3x3) or bottleneck (1x1, 3x3 with the stride, 1x1 x4) residual block."""
  config: ResNetConfig
  features: int
  strides: int
  training: bool = False

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, None]:
    """x: [B, H, W, C] -> (the block's output, None): a scan body's (carry, outputs)."""
    cfg = self.config
    if cfg.bottleneck:
      out_features = 4 * self.features
      y = nn.relu(ConvNorm(cfg, self.features, 1, name="conv_norm_1", training=self.training)(x))
      y = nn.relu(ConvNorm(cfg, self.features, 3, self.strides, name="conv_norm_2", training=self.training)(y))
      y = ConvNorm(cfg, out_features, 1, zero_init_norm=True, name="conv_norm_3", training=self.training)(y)
    else:
      out_features = self.features
      y = nn.relu(ConvNorm(cfg, self.features, 3, self.strides, name="conv_norm_1", training=self.training)(x))
      y = ConvNorm(cfg, self.features, 3, zero_init_norm=True, name="conv_norm_2", training=self.training)(y)
    if x.shape[-1] != out_features or self.strides != 1:
      x = ConvNorm(cfg, out_features, 1, self.strides, name="shortcut", training=self.training)(x)
    return nn.relu(x + y), None


def stack_blocks(variables: dict[str, Any], config: ResNetConfig) -> dict[str, Any]:
  """A `ResNet`'s variables (one collection) from the unrolled layout (`stage_<s>_block_<b>`) to the scanned
  one (`stage_<s>_block_0`, then `stage_<s>_blocks` stacking the others)."""
  stacked = {name: v for name, v in variables.items() if not _repeated_block(name)}
  for stage, num_blocks in enumerate(config.stage_sizes[:config.num_stages]):
    if num_blocks > 1:
      stacked[f"stage_{stage}_blocks"] = scan.stack([variables[f"stage_{stage}_block_{b}"]
                                                     for b in range(1, num_blocks)])
  return stacked


def unstack_blocks(variables: dict[str, Any], config: ResNetConfig) -> dict[str, Any]:
  """The inverse of `stack_blocks`: scanned layout -> unrolled layout."""
  unrolled = {name: v for name, v in variables.items() if not name.endswith("_blocks")}
  for stage, num_blocks in enumerate(config.stage_sizes[:config.num_stages]):
    if num_blocks > 1:
      for b, block in enumerate(scan.unstack(variables[f"stage_{stage}_blocks"], num_blocks - 1), start=1):
        unrolled[f"stage_{stage}_block_{b}"] = block
  return unrolled


def _repeated_block(name: str) -> bool:
  """stage_<s>_block_<b> with b > 0."""
  return name.startswith("stage_") and "_block_" in name and not name.endswith("_block_0")


class ResNet(nn.Module):
  """images float[B, H, W, 3] (normalised) -> grid features float[B, H/stride, W/stride, out_channels]."""
  config: ResNetConfig
  training: bool = False  # with `config.train_batch_norm`: BatchNorm on batch statistics (mutable batch_stats)

  @nn.compact
  def __call__(self, images: Array) -> Array:
    cfg = self.config
    x = nn.relu(ConvNorm(cfg, cfg.width, 7, 2, name="stem", training=self.training)(images.astype(jnp.dtype(cfg.dtype))))
    if cfg.stem_pool:
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    block_class = remat.remat(ResidualBlock, cfg.remat_policy)
    for stage, num_blocks in enumerate(cfg.stage_sizes[:cfg.num_stages]):
      features = cfg.width * 2 ** stage
      x, _ = block_class(cfg, features, 2 if stage > 0 else 1, self.training, name=f"stage_{stage}_block_0")(x)
      if cfg.scan_layers and num_blocks > 1:
        x, _ = scan.scanned(block_class, num_blocks - 1, in_axes=())(cfg, features, 1, self.training,
                                                                     name=f"stage_{stage}_blocks")(x)
      else:
        for block in range(1, num_blocks):
          x, _ = block_class(cfg, features, 1, self.training, name=f"stage_{stage}_block_{block}")(x)
    if cfg.projection_dim:
      x = layers.dense(cfg.projection_dim, ("conv_out", "embed"), name="projection",
                       dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))(x)
    return x
