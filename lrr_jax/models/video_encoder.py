"""The two-stream video encoder: static and motion CNN streams, fused, then spatiotemporal attention.

- Static stream: each frame's ResNet grid features.
- Motion stream: a (smaller) ResNet over frame differences at a lower resolution, resized to the static grid.
- Fusion: concatenation and a linear map to `width`, plus spatial and temporal position embeddings.
- Factorised attention (TimeSformer's divided space-time): per grid cell across frames (causal in time,
  optionally only a window of `temporal_window` frames, the query's own included), then within each frame, then
  an MLP. Both streams' fused tokens go through it: the window bounds what either stream's features can read.

Frames of several packed examples may share one row: `frame_segment_ids` keeps them apart (0 = padding).
Output: float[B, T, h*w, width]. A frame's output depends only on frames at or before it.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrr_jax.models import attention as attention_lib
from lrr_jax.models import layers
from lrr_jax.models import resnet
from lrr_jax.models import remat
from lrr_jax.models import scan

Array = jax.Array
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class VideoEncoderConfig:
  static_backbone: resnet.ResNetConfig = resnet.RESNET_CONFIGS["resnet101"]
  motion_backbone: resnet.ResNetConfig = resnet.RESNET_CONFIGS["resnet18"]
  two_stream: bool = True  # False: static stream only (the paper's ablation)
  motion_downsample: int = 2  # the motion stream sees frames at 1/motion_downsample resolution
  width: int = 768
  num_layers: int = 2
  num_heads: int = 8
  mlp_dim: int = 3072
  temporal_window: int = 0  # frame q reads frames q - temporal_window + 1 .. q (0: every frame up to q)
  max_frames: int = 64
  grid_size: int = 64  # max grid cells per frame (h * w), for the spatial position embedding
  position_init_std: float = 0.02  # larger makes "where" visible from the start (training from scratch)
  coordinate_channels: bool = False  # CoordConv: pixel (row, col) as 2 more input channels of the static stream
  dropout_rate: float = 0.0
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention: str = "auto"  # space-time attention implementation (`attention.IMPLEMENTATIONS`)
  scan_layers: bool = False  # the space-time blocks as one scan (params stacked as `blocks`)
  remat_policy: str = "none"  # of each space-time block (`remat.POLICIES`)

  def __post_init__(self):
    remat.check_policy(self.remat_policy, "VideoEncoderConfig.remat_policy")
    if self.attention not in attention_lib.IMPLEMENTATIONS:
      raise ValueError(f"VideoEncoderConfig.attention={self.attention!r}; expected one of "
                       f"{attention_lib.IMPLEMENTATIONS}.")
    if self.width % self.num_heads:
      raise ValueError(f"VideoEncoderConfig.width={self.width} is not divisible by num_heads={self.num_heads}.")


def normalize_frames(video: Array) -> Array:
  """uint8 (or [0, 255] float) frames -> ImageNet-normalised float32."""
  pixels = video.astype(jnp.float32) / 255.0
  return (pixels - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def frame_positions(frame_segment_ids: Array) -> Array:
  """int[B, T]: each frame's index within its own packed example."""
  t = jnp.arange(frame_segment_ids.shape[1])
  starts_segment = jnp.concatenate(
      [jnp.ones_like(frame_segment_ids[:, :1], bool), frame_segment_ids[:, 1:] != frame_segment_ids[:, :-1]], 1)
  segment_start = jax.lax.cummax(jnp.where(starts_segment, t, 0), axis=1)
  return t - segment_start


def temporal_visibility(frame_segment_ids: Array, window: int) -> attention_lib.Visibility:
  """Frame q reads frame k <= q of its own example (and q - k < window if window). int[B, T] -> [B, T, T]."""
  return attention_lib.Visibility(frame_segment_ids, frame_segment_ids, causal=True, window=window)


def with_coordinates(frames: Array) -> Array:
  """float[N, H, W, 3] -> [N, H, W, 5]: each pixel's row and column in [-1, 1] appended (CoordConv).

  CNN filters are translation-invariant; with these channels a feature can say *where* it fired, so a
  cross-attention query that finds an object also reads its position (and even a uniform average over the
  grid carries it, which is what lets the attention learn where to look in the first place).
  """
  n, height, width, _ = frames.shape
  rows = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, height)[:, None], (height, width))
  cols = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, width)[None, :], (height, width))
  coordinates = jnp.broadcast_to(jnp.stack([rows, cols], -1)[None], (n, height, width, 2))
  return jnp.concatenate([frames, coordinates.astype(frames.dtype)], -1)


def frame_differences(frames: Array, frame_segment_ids: Array) -> Array:
  """frames[t] - frames[t-1] within each example; zero at an example's first frame."""
  previous = jnp.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
  continues = frame_positions(frame_segment_ids) > 0
  return jnp.where(continues[:, :, None, None, None], frames - previous, 0.0)


class SpaceTimeBlock(nn.Module):
  """Pre-LN divided attention: temporal (per grid cell), spatial (per frame), MLP."""
  config: VideoEncoderConfig

  @nn.compact
  def __call__(self, x: Array, time_visibility: attention_lib.Visibility,
               deterministic: bool) -> tuple[Array, None]:
    """x: [B, T, N, D] -> (the same shape, None): a scan body's (carry, outputs)."""
    cfg = self.config
    b, t, n, d = x.shape
    kwargs = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    attention = lambda name: attention_lib.MultiHeadAttention(
        cfg.num_heads, d // cfg.num_heads, d, dropout_rate=cfg.dropout_rate, implementation=cfg.attention,
        name=name, **kwargs)
    h = layers.layer_norm(name="temporal_norm", **kwargs)(x)
    h = h.transpose(0, 2, 1, 3).reshape(b * n, t, d)
    per_cell = jax.tree.map(lambda ids: jnp.repeat(ids, n, axis=0), time_visibility)  # rows b * n + cell
    h = attention("temporal_attention")(h, h, per_cell, deterministic)
    x = x + h.reshape(b, n, t, d).transpose(0, 2, 1, 3)

    h = layers.layer_norm(name="spatial_norm", **kwargs)(x).reshape(b * t, n, d)
    x = x + attention("spatial_attention")(h, h, None, deterministic).reshape(b, t, n, d)

    h = layers.layer_norm(name="mlp_norm", **kwargs)(x)
    x = x + layers.FeedForward(cfg.mlp_dim, d, "gelu", name="mlp", **kwargs)(h)
    return nn.with_logical_constraint(x, ("activation_batch", "activation_frames", "activation_grid",
                                          "activation_embed")), None


def stack_blocks(variables: dict, config: VideoEncoderConfig) -> dict:
  """A `VideoEncoder`'s variables (one collection), unrolled (`block_<i>`) -> scanned (`blocks`); the ResNet
  streams keep their layout (`resnet.stack_blocks`)."""
  rest = {name: v for name, v in variables.items() if not name.startswith("block_")}
  return {**rest, "blocks": scan.stack([variables[f"block_{i}"] for i in range(config.num_layers)])}


def unstack_blocks(variables: dict, config: VideoEncoderConfig) -> dict:
  """The inverse of `stack_blocks`."""
  rest = {name: v for name, v in variables.items() if name != "blocks"}
  return {**rest, **{f"block_{i}": block for i, block in enumerate(scan.unstack(variables["blocks"],
                                                                              config.num_layers))}}


class VideoEncoder(nn.Module):
  """video uint8[B, T, H, W, 3] -> grid tokens float[B, T, h*w, width]."""
  config: VideoEncoderConfig

  @nn.compact
  def __call__(self, video: Array, frame_segment_ids: Array | None = None,
               deterministic: bool = True) -> Array:
    cfg = self.config
    b, t, height, width_px, _ = video.shape
    if frame_segment_ids is None:
      frame_segment_ids = jnp.ones((b, t), jnp.int32)
    kwargs = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    frames = normalize_frames(video)

    static_input = frames.reshape(b * t, height, width_px, 3)
    if cfg.coordinate_channels:
      static_input = with_coordinates(static_input)
    static = resnet.ResNet(cfg.static_backbone, not deterministic, name="static_stream")(static_input)
    _, gh, gw, _ = static.shape
    streams = [static]
    if cfg.two_stream:
      motion = frame_differences(frames, frame_segment_ids).reshape(b * t, height, width_px, 3)
      if cfg.motion_downsample > 1:
        motion = nn.avg_pool(motion, (cfg.motion_downsample,) * 2, (cfg.motion_downsample,) * 2)
      motion = resnet.ResNet(cfg.motion_backbone, not deterministic, name="motion_stream")(motion)
      motion = jax.image.resize(motion, (b * t, gh, gw, motion.shape[-1]), "nearest")
      streams.append(motion)
    fused = jnp.concatenate([s.astype(kwargs["dtype"]) for s in streams], axis=-1)
    x = layers.dense(cfg.width, ("conv_out", "embed"), name="fusion", **kwargs)(fused)
    x = x.reshape(b, t, gh * gw, cfg.width)

    if gh * gw > cfg.grid_size or t > cfg.max_frames:
      raise ValueError(f"Video of {t} frames with a {gh}x{gw} grid exceeds VideoEncoderConfig max_frames="
                       f"{cfg.max_frames} / grid_size={cfg.grid_size}.")
    embed_init = layers.partitioned(nn.initializers.normal(cfg.position_init_std), ("positions", "embed"))
    spatial = self.param("spatial_position", embed_init, (cfg.grid_size, cfg.width), kwargs["param_dtype"])
    temporal = self.param("temporal_position", embed_init, (cfg.max_frames, cfg.width), kwargs["param_dtype"])
    x = x + spatial[None, None, :gh * gw] + temporal[frame_positions(frame_segment_ids)][:, :, None]
    x = x.astype(kwargs["dtype"])

    time_visibility = temporal_visibility(frame_segment_ids, cfg.temporal_window)
    block_class = remat.remat(SpaceTimeBlock, cfg.remat_policy, static_argnums=(3,))
    if cfg.scan_layers:
      x, _ = scan.scanned(block_class, cfg.num_layers, in_axes=(nn.broadcast, nn.broadcast))(
          cfg, name="blocks")(x, time_visibility, deterministic)
    else:
      for i in range(cfg.num_layers):
        x, _ = block_class(cfg, name=f"block_{i}")(x, time_visibility, deterministic)
    return layers.layer_norm(name="output_norm", **kwargs)(x)
