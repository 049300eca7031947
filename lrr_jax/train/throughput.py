"""Step throughput as a researcher on a pod watches it: step time, tokens/s, TFLOP/s per device and MFU.

FLOPs per step: the compiled step's own count (`cost_analysis()`, per device, what XLA runs: the backward,
the optimizer and any rematerialised forward included), or, where that count is below the model FLOPs
(`analytic_train_flops`: 3 x the forward's matmuls, convolutions and attention products, divided over the
devices), the model FLOPs: XLA counts a loop's body once whatever its trip count (a scan over layers or
micro-batches). With remat the compiled count includes the recomputed forward, so its MFU reads as hardware
utilisation; `flops_source` in the log says which count a run uses. MFU = achieved FLOP/s per
device / the device's bf16 dense peak (`PEAK_FLOPS`, or `config.peak_flops_per_device`); on a device the
table does not know (a CPU) it is omitted, never reported as 0.
"""
import math
import time
from typing import Any

from lrr_jax.models import lrr
from lrr_jax.models import resnet

# bf16 dense peak FLOP/s per JAX device, matched as lower-cased substrings of `device_kind` in this order (the
# more specific first). TPUs: one JAX device per chip (megacore on v4 and v5p). Sources: Cloud TPU system
# architecture pages (v4: 275 TFLOP/s; v5e: 197; v5p: 459; v6e (Trillium): 918 per chip) and NVIDIA's data
# sheets, dense (no sparsity) Tensor Core bf16 (H100 SXM: 989.4, H100 PCIe: 756, H200 SXM: 989.4 (the H100's
# die with more HBM), A100: 312).
PEAK_FLOPS = (
    ("tpu v5 lite", 197e12), ("tpu v5e", 197e12), ("tpu v5p", 459e12), ("tpu v5", 459e12),
    ("tpu v6 lite", 918e12), ("tpu v6e", 918e12), ("tpu v4", 275e12),
    ("h100 pcie", 756e12), ("h100", 989.4e12), ("h200", 989.4e12), ("a100", 312e12),
)


def peak_flops_per_device(device_kind: str, override: float = 0.0) -> float | None:
  """The device's bf16 dense peak FLOP/s (`override` if > 0); None for a device the table does not know."""
  if override and override > 0:
    return float(override)
  kind = device_kind.lower()
  return next((peak for name, peak in PEAK_FLOPS if name in kind), None)


def _resnet_forward_flops(config: resnet.ResNetConfig, images: int, height: int, width: int,
                          channels: int) -> float:
  """Convolution (and projection) multiply-adds x 2 of `images` frames through the backbone; every conv pads
  to keep ceil(size / stride)."""
  flops, h, w = 0.0, height, width

  def conv(c_in: int, c_out: int, kernel: int, stride: int) -> None:
    nonlocal flops, h, w
    h, w = -(-h // stride), -(-w // stride)
    flops += 2.0 * images * h * w * kernel * kernel * c_in * c_out

  conv(channels, config.width, 7, 2)
  if config.stem_pool:
    h, w = -(-h // 2), -(-w // 2)
  c_in = config.width
  for stage, blocks in enumerate(config.stage_sizes[:config.num_stages]):
    features = config.width * 2 ** stage
    out = 4 * features if config.bottleneck else features
    for block in range(blocks):
      stride = 2 if stage > 0 and block == 0 else 1
      if config.bottleneck:
        conv(c_in, features, 1, 1)
        conv(features, features, 3, stride)
        conv(features, out, 1, 1)
      else:
        conv(c_in, features, 3, stride)
        conv(features, features, 3, 1)
      if c_in != out or stride != 1:  # the shortcut's 1x1 at the block's output size
        flops += 2.0 * images * h * w * c_in * out
      c_in = out
  if config.projection_dim:
    flops += 2.0 * images * h * w * c_in * config.projection_dim
  return flops


def analytic_train_flops(config: lrr.LRRConfig, batch: int, length: int, frames: int, height: int,
                         width: int) -> float:
  """Model FLOPs of one train step over the whole batch: 3 x the forward (the backward costs two forwards).

  Forward, 2 FLOPs per multiply-add, counting every matmul, convolution and attention product (full score
  matrices, as the kernels compute them; norms, softmax and activations are left out):
  - ResNets: the static stream on `frames` frames of height x width (+2 CoordConv channels), the motion stream
    at 1 / motion_downsample;
  - video encoder: fusion projection, then per block temporal attention (over frames), spatial attention
    (over grid cells) and the MLP, on every grid token;
  - decoder: per token and layer 4 h^2 (q, k, v, out) + 2 h ffn, attention 2 S h; the tied output projection
    (and project_in/out);
  - cross-attention blocks: per token queries and output (2 h^2), FFN, attention over all T x grid visual
    tokens; keys and values projected once per visual token and block.
  """
  video, dec = config.video, config.decoder
  images = batch * frames
  static_channels = 5 if video.coordinate_channels else 3
  forward = _resnet_forward_flops(video.static_backbone, images, height, width, static_channels)
  channels = video.static_backbone.out_channels
  if video.two_stream:
    d = max(video.motion_downsample, 1)
    forward += _resnet_forward_flops(video.motion_backbone, images, height // d, width // d, 3)
    channels += video.motion_backbone.out_channels
  stride = video.static_backbone.stride
  grid = -(-height // stride) * -(-width // stride)
  visual_tokens = batch * frames * grid
  e = video.width
  forward += 2.0 * visual_tokens * channels * e
  forward += video.num_layers * visual_tokens * 2.0 * (2 * 4 * e * e + 2 * e * video.mlp_dim + 2 * (frames + grid) * e)

  h, tokens = dec.hidden_size, batch * length
  embed = dec.word_embed_proj_dim or h
  per_layer = 2.0 * (4 * h * h + 2 * h * dec.ffn_dim + 2 * length * h)
  forward += tokens * (dec.num_layers * per_layer + 2.0 * dec.vocab_size * embed)
  if embed != h:
    forward += tokens * 2.0 * 2 * embed * h
  cross_ffn = dec.cross_attention_ffn_dim or dec.ffn_dim
  per_block = tokens * 2.0 * (2 * h * h + 2 * h * cross_ffn + 2 * frames * grid * h) + visual_tokens * 2.0 * 2 * e * h
  forward += len(dec.cross_attention_layers) * per_block
  return 3.0 * forward


def compiled_flops(compiled: Any) -> float | None:
  """FLOPs per device of a compiled program from XLA's cost analysis (None when it gives none)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  # some backends have no cost analysis
    return None
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float((cost or {}).get("flops", 0.0))
  return flops if flops > 0 and math.isfinite(flops) else None


def step_flops(compiled: Any, model_flops_per_device: float) -> tuple[float, str]:
  """(FLOPs per device per step, "compiled" or "analytic"): the compiled step's count, unless it is below the
  model FLOPs (`analytic_train_flops` / devices), which it covers whenever XLA counts every op once: then a loop
  was counted for one trip (a scan over layers or micro-batches) and the model FLOPs are the better figure."""
  counted = compiled_flops(compiled)
  if counted is None or counted < 0.9 * model_flops_per_device:
    return model_flops_per_device, "analytic"
  return counted, "compiled"


class StepTimer:
  """Seconds per step over an interval of steps, excluding what `restart` leaves out (the first step, which
  compiles, and evaluations): call `restart(step)` after them, `per_step(step)` when logging."""

  def __init__(self):
    self.time, self.step = None, None

  def restart(self, step: int) -> None:
    self.time, self.step = time.perf_counter(), step

  def per_step(self, step: int) -> float | None:
    """Mean seconds per step since the last restart or call, or None when no timed step ran."""
    if self.time is None or step <= self.step:
      return None
    now = time.perf_counter()
    seconds = (now - self.time) / (step - self.step)
    self.time, self.step = now, step
    return seconds


def step_metrics(seconds: float, examples: int, tokens: float, flops_per_device: float | None,
                 peak: float | None) -> dict[str, float]:
  """Throughput scalars of a step taking `seconds`: step_time_s, examples_per_s, tokens_per_s and, where the
  FLOPs (and the peak) are known, tflops_per_device (and mfu)."""
  scalars = {"step_time_s": seconds, "examples_per_s": examples / seconds, "tokens_per_s": tokens / seconds}
  if flops_per_device:
    scalars["tflops_per_device"] = flops_per_device / seconds / 1e12
    if peak:
      scalars["mfu"] = flops_per_device / seconds / peak
  return scalars
