"""The LRR model: two-stream video encoder + OPT decoder with top-down cross-attention.

Training: `model.apply(variables, tokens, positions, segment_ids, frame_index, video)` gives logits over a
packed sequence. Decoding: `encode_video` once, `init_cache`, then `decode` for the prompt (with `visual`,
which projects the video into the cache) and for each new token (without it).

Sequence conventions, all int32[B, S]: `positions` count from 0 within each packed example;
`segment_ids` number the packed examples from 1 (0 = padding); `frame_index` is the last frame (along the
row's frame axis) a token may see, -1 for none. `frame_segment_ids` int[B, T] assigns frames to examples.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrr_jax.models import cross_attention
from lrr_jax.models import decoder as decoder_lib
from lrr_jax.models import resnet
from lrr_jax.models import video_encoder as video_lib

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LRRConfig:
  decoder: decoder_lib.DecoderConfig = decoder_lib.OPT_CONFIGS["opt-125m"]
  video: video_lib.VideoEncoderConfig = video_lib.VideoEncoderConfig()
  # >0: only the first this many vocabulary rows are ever predicted; the rest pad the embedding to a size
  # that divides over the mesh (`tensor`) and get the lowest logit.
  num_predicted_tokens: int = 0
  # >0: the training loss projects hidden states onto the vocabulary this many positions at a time (the
  # float32 logits [B, S, vocab] never exist whole, forward or backward); 0: all at once.
  loss_chunk_size: int = 0


# config.model keys that set the field of the same name in the decoder, the video encoder and both backbones:
# `dtype` is the compute dtype (parameters, optimizer state and the loss stay in `param_dtype` / float32).
MODEL_WIDE = ("scan_layers", "remat_policy", "dtype")


def lrr_config(size: str, video_overrides: dict[str, Any] | None = None, **decoder_overrides: Any) -> LRRConfig:
  """Preset sizes: 'tiny' (tests and the CPU demo), 'opt-125m' and 'opt-1.3b' (ResNet-101, as the paper).

  `video_overrides` replace VideoEncoderConfig fields; the other keyword arguments DecoderConfig fields.
  """
  config = _preset(size, **decoder_overrides)
  return dataclasses.replace(config, video=dataclasses.replace(config.video, **(video_overrides or {})))


def config_from_dict(model: dict[str, Any], **decoder_defaults: Any) -> LRRConfig:
  """The model of a run config's `model` section in one step: `size` picks the preset, then `decoder`,
  `video`, `video.static_backbone` and `video.motion_backbone` override DecoderConfig, VideoEncoderConfig and
  ResNetConfig fields (None: the preset's); the weights to start from (`init_from`, `video.static_init_from`,
  `video.motion_init_from`) are skipped, but with `video.from_scratch` a backbone without a checkpoint trains
  its BatchNorm statistics (`train_batch_norm`, unless its own key says otherwise). `scan_layers`, `remat_policy` and `dtype` (`MODEL_WIDE`) set those
  fields of every part at once (a part's own key wins); `loss_chunk_size` is LRRConfig's. `decoder_defaults` replace the preset's decoder fields that
  `decoder` leaves None (e.g. the run's vocabulary). Unknown keys raise, naming `config.model.<key>`."""
  model = dict(model)
  size = model.pop("size")
  model.pop("init_from", None)  # read by the entry points (weights), not part of the architecture
  _check_keys(model, {"decoder", "video", "loss_chunk_size", *MODEL_WIDE}, "config.model")
  # model-wide switches: every part's field, unless the part's own key says otherwise
  wide = {k: model[k] for k in MODEL_WIDE if model.get(k) is not None}
  decoder = {**wide, **_overrides(model.get("decoder"), decoder_lib.DecoderConfig, "config.model.decoder")}
  video = dict(model.get("video") or {})
  # backbone checkpoints, read like init_from
  pretrained = {f"{s}_backbone": bool(video.pop(f"{s}_init_from", None)) for s in ("static", "motion")}
  from_scratch = bool(video.pop("from_scratch", None))
  backbones = {name: {**wide, **({"train_batch_norm": True} if from_scratch and not pretrained[name] else {}),
                      **_overrides(video.pop(name, None), resnet.ResNetConfig, f"config.model.video.{name}")}
               for name in ("static_backbone", "motion_backbone")}
  video = {**wide, **_overrides(video, video_lib.VideoEncoderConfig, "config.model.video")}
  config = _preset(size, **{**decoder_defaults, **decoder})
  backbones = {name: dataclasses.replace(getattr(config.video, name), **fields)
               for name, fields in backbones.items()}
  if model.get("loss_chunk_size") is not None:
    config = dataclasses.replace(config, loss_chunk_size=model["loss_chunk_size"])
  return dataclasses.replace(config, video=dataclasses.replace(config.video, **video, **backbones))


def _check_keys(section: dict[str, Any], allowed: set[str], where: str) -> None:
  unknown = sorted(set(section) - allowed)
  if unknown:
    raise ValueError(f"Unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; expected one of "
                     f"{sorted(allowed)}.")


def _overrides(section: dict[str, Any] | None, config_class: type, where: str) -> dict[str, Any]:
  """The fields of `section` that are set (not None), checked against `config_class`'s fields; lists
  become tuples (JSON has no tuples)."""
  section = dict(section or {})
  _check_keys(section, {f.name for f in dataclasses.fields(config_class)}, where)
  return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if v is not None}


def _preset(size: str, **decoder_overrides: Any) -> LRRConfig:
  if size == "tiny":
    tiny_backbone = resnet.RESNET_CONFIGS["tiny"]
    video = video_lib.VideoEncoderConfig(
        static_backbone=tiny_backbone, motion_backbone=dataclasses.replace(tiny_backbone, width=4),
        width=32, num_layers=1, num_heads=2, mlp_dim=64, max_frames=16, grid_size=64)
    dec = decoder_lib.decoder_config("tiny", **{**dict(cross_attention_layers=(0, 1), cross_attention_heads=8,
                                                       cross_attention_query_scale=5.0), **decoder_overrides})
    return LRRConfig(decoder=dec, video=video)
  if size in ("opt-125m", "opt-1.3b"):
    dec = decoder_lib.decoder_config(size, **decoder_overrides)
    if not dec.cross_attention_layers:  # after every other layer, from the second
      dec = dataclasses.replace(dec, cross_attention_layers=tuple(range(1, dec.num_layers, 2)))
    video = video_lib.VideoEncoderConfig(width=dec.hidden_size, num_heads=dec.num_heads,
                                         mlp_dim=4 * dec.hidden_size)
    return LRRConfig(decoder=dec, video=video)
  raise ValueError(f"Unknown LRR size {size!r}; expected 'tiny', 'opt-125m' or 'opt-1.3b'.")


def visual_memory(grid_tokens: Array, frame_segment_ids: Array) -> cross_attention.VisualMemory:
  """[B, T, N, D] encoder output -> the flat memory the cross-attention reads, with each token's frame."""
  b, t, n, d = grid_tokens.shape
  frame_index = jnp.broadcast_to(jnp.repeat(jnp.arange(t, dtype=jnp.int32), n)[None], (b, t * n))
  return cross_attention.VisualMemory(grid_tokens.reshape(b, t * n, d), frame_index,
                                      jnp.repeat(frame_segment_ids.astype(jnp.int32), n, axis=1))


class LRRModel(nn.Module):
  config: LRRConfig

  def setup(self):
    self.video_encoder = video_lib.VideoEncoder(self.config.video)
    self.decoder = decoder_lib.Decoder(self.config.decoder)

  def encode_video(self, video: Array, frame_segment_ids: Array | None = None,
                   deterministic: bool = True) -> cross_attention.VisualMemory:
    """video uint8[B, T, H, W, 3] -> the encoded video as the decoder reads it."""
    if frame_segment_ids is None:
      frame_segment_ids = jnp.ones(video.shape[:2], jnp.int32)
    grid_tokens = self.video_encoder(video, frame_segment_ids, deterministic)
    return visual_memory(grid_tokens, frame_segment_ids)

  def __call__(self, tokens: Array, positions: Array, segment_ids: Array, frame_index: Array,
               video: Array | None, frame_segment_ids: Array | None = None,
               deterministic: bool = True) -> Array:
    """Logits float32[B, S, vocab] over a packed sequence (teacher forcing)."""
    return self.output_logits(self.features(tokens, positions, segment_ids, frame_index, video,
                                            frame_segment_ids, deterministic))

  def features(self, tokens: Array, positions: Array, segment_ids: Array, frame_index: Array,
               video: Array | None, frame_segment_ids: Array | None = None,
               deterministic: bool = True) -> Array:
    """The decoder's last hidden states [B, S, embed_dim], which `output_logits` maps to logits (a loss can
    project them a chunk of the sequence at a time)."""
    visual = None if video is None else self.encode_video(video, frame_segment_ids, deterministic)
    hidden, _ = self.decoder.features(tokens, positions, segment_ids, frame_index=frame_index, visual=visual,
                                      deterministic=deterministic)
    return hidden

  def output_logits(self, hidden: Array) -> Array:
    """Hidden states [..., embed_dim] -> float32 logits [..., vocab], padding rows of the vocabulary lowest."""
    return self._mask_padding_rows(self.decoder.logits(hidden))

  def decode(self, tokens: Array, positions: Array, segment_ids: Array, frame_index: Array,
             cache: decoder_lib.Cache, cache_index: Array,
             visual: cross_attention.VisualMemory | None = None,
             last_only: bool = False) -> tuple[Array, decoder_lib.Cache]:
    """Cached decoding: writes `tokens` at cache slots [cache_index, cache_index + S) and returns logits
    [B, S, vocab], or [B, 1, vocab] of the last column with `last_only` (a prefill: the vocabulary projection
    of the other S - 1 columns, which XLA does not prune, is most of a long prompt's cost at a 50k vocabulary)."""
    hidden, cache = self.decoder.features(tokens, positions, segment_ids, frame_index=frame_index, visual=visual,
                                          cache=cache, cache_index=cache_index, deterministic=True)
    return self.output_logits(hidden[:, -1:] if last_only else hidden), cache

  def _mask_padding_rows(self, logits: Array) -> Array:
    """Logits of the vocabulary's padding rows (beyond `num_predicted_tokens`) at the lowest value."""
    count = self.config.num_predicted_tokens
    if not count or count >= logits.shape[-1]:
      return logits
    return jnp.where(jnp.arange(logits.shape[-1]) < count, logits, jnp.finfo(logits.dtype).min)


def relayout(variables: dict[str, Any], source: LRRConfig, target: LRRConfig) -> dict[str, Any]:
  """`LRRModel` variables (any collections: params, batch_stats) laid out for `source` -> for `target`: each
  part (decoder, video blocks, each ResNet stream) stacked or unstacked where their `scan_layers` differ."""
  parts = [(("decoder",), source.decoder, target.decoder, decoder_lib.stack_layers, decoder_lib.unstack_layers),
           (("video_encoder",), source.video, target.video, video_lib.stack_blocks, video_lib.unstack_blocks)]
  for stream in ("static", "motion"):
    name = f"{stream}_backbone"
    parts.append((("video_encoder", f"{stream}_stream"), getattr(source.video, name),
                  getattr(target.video, name), resnet.stack_blocks, resnet.unstack_blocks))
  variables = jax.tree.map(lambda x: x, dict(variables), is_leaf=lambda x: not isinstance(x, dict))
  for collection in variables:
    for path, before, after, stack, unstack in parts:
      parent = variables[collection]
      for key in path[:-1]:
        parent = parent.get(key, {})
      if path[-1] not in parent or before.scan_layers == after.scan_layers:
        continue
      convert, config = (stack, before) if after.scan_layers else (unstack, after)
      parent[path[-1]] = convert(dict(parent[path[-1]]), config)
  return variables


def init_cache(config: LRRConfig, batch_size: int, max_length: int,
               visual: cross_attention.VisualMemory | None = None) -> decoder_lib.Cache:
  """An empty KV cache sized for `max_length` tokens and the encoded video `visual` (if any)."""
  num_visual = 0 if visual is None else visual.tokens.shape[1]
  return decoder_lib.init_cache(config.decoder, batch_size, max_length, num_visual)
