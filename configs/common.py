"""What the config files share: their argument parser, the model section and the search section.

Config files import only ml_collections, never the library (reading a config imports no JAX). Every field of
the model's dataclasses is a key of `config.model` (None: the preset's value), so that any of them can be set
from the command line: `--config.model.decoder.remat_policy=full`,
`--config.model.video.static_backbone.norm=group`. `lrr_jax.run_config.RunConfig.from_config_dict` types the
whole config and refuses unknown keys; `lrr_jax.models.lrr.config_from_dict` builds the model.
"""
from typing import Any

import ml_collections
from ml_collections import config_dict

# The fields of the model's dataclasses with the types their command-line values parse to: DecoderConfig
# (lrr_jax/models/decoder.py), VideoEncoderConfig (video_encoder.py, its two ResNet backbones apart) and
# ResNetConfig (resnet.py); tests/test_configs.py checks them against the dataclasses.
DECODER_FIELDS = dict(
    vocab_size=int, hidden_size=int, num_layers=int, num_heads=int, ffn_dim=int, max_positions=int,
    word_embed_proj_dim=int, layer_norm_before=bool, remove_final_layer_norm=bool, enable_bias=bool,
    layer_norm_affine=bool, activation=str, dropout_rate=float, attention_dropout_rate=float, init_std=float,
    cross_attention_layers=tuple, cross_attention_heads=int, cross_attention_ffn_dim=int, gate_init=float,
    cross_attention_query_scale=float, cross_attention_frames=int, dtype=str, param_dtype=str, remat_policy=str,
    scan_layers=bool,
    attention=str)
VIDEO_FIELDS = dict(
    two_stream=bool, motion_downsample=int, width=int, num_layers=int, num_heads=int, mlp_dim=int,
    temporal_window=int, max_frames=int, grid_size=int, position_init_std=float, coordinate_channels=bool,
    dropout_rate=float, dtype=str, param_dtype=str, attention=str, scan_layers=bool, remat_policy=str)
BACKBONE_FIELDS = dict(
    stage_sizes=tuple, bottleneck=bool, width=int, norm=str, train_batch_norm=bool, num_groups=int,
    stem_pool=bool, grid_stage=int, projection_dim=int, dtype=str, param_dtype=str, scan_layers=bool,
    remat_policy=str)
# config.search's keys and defaults: stage-level beam search sampled as the LLaVA-CoT release samples
# (temperature 0.6, top-p 0.9), judged by the model itself (`scorer`: judge | release_judge | likelihood |
# oracle, lrr_jax.run_objects.SCORERS); token budgets ours, for small models (configs/released.py sets its own);
# `backtrack_cutoff` (an absolute scorer) resamples a stage scoring below it, at most `max_retries` times.
SEARCH_DEFAULTS = dict(strategy="stage_beam", num_candidates=4, beam=1, scorer="judge", temperature=0.6, top_k=0,
                       top_p=0.9, max_new_tokens=256, max_step_tokens=256, max_retries=4, seed=0)


def parse_arg(arg: str | None, **defaults: str) -> dict[str, str]:
  """'a=1,b=x' -> {'a': '1', 'b': 'x'} over `defaults`; unknown keys are an error."""
  values = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"Unknown config arg {key!r}; expected one of {sorted(defaults)}.")
    values[key] = value
  return values


def placeholders(fields: dict[str, type], nested: dict[str, ml_collections.ConfigDict] | None = None,
                 **values: Any) -> ml_collections.ConfigDict:
  """A ConfigDict with a key per field of `fields` (name -> type): typed placeholders (None) or `values`;
  the sections `nested` beside them."""
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"No model field(s) {unknown}; expected some of {sorted(fields)}.")
  section = {name: config_dict.FieldReference(values.get(name), field_type=kind) for name, kind in fields.items()}
  return ml_collections.ConfigDict({**section, **(nested or {})})


def model_section(size: str, decoder_values: dict[str, Any] | None = None,
                  video_values: dict[str, Any] | None = None, init_from: str = "") -> ml_collections.ConfigDict:
  """config.model: the preset `size`, every DecoderConfig / VideoEncoderConfig / ResNetConfig field (set to
  `*_values` or left to the preset), the model-wide switches `scan_layers`, `remat_policy`, `dtype` (compute;
  e.g. bfloat16) and `loss_chunk_size` (None: the parts' own values; see `lrr.config_from_dict`), and the weights to start from: `init_from`, a local Hugging Face OPT
  directory; `video.static_init_from` / `video.motion_init_from` (also in `video_values`), a ResNet
  checkpoint (torchvision state dict file or Hugging Face directory) for that stream's backbone, or
  `video.from_scratch=True`: the BatchNorm backbones without one train from random weights, their BatchNorm
  statistics too (ours; without either, a run with a BatchNorm backbone is refused)."""
  video_values = dict(video_values or {})
  backbones = {name: placeholders(BACKBONE_FIELDS, **video_values.pop(name, {}))
               for name in ("static_backbone", "motion_backbone")}
  backbone_weights = {key: video_values.pop(key, "") for key in ("static_init_from", "motion_init_from")}
  # None (not False): a run written before the key existed resumes unchanged
  backbone_weights["from_scratch"] = config_dict.FieldReference(video_values.pop("from_scratch", None),
                                                                field_type=bool)
  video = placeholders(VIDEO_FIELDS, nested=backbones, **video_values)
  video.update(backbone_weights)
  wide = dict(scan_layers=config_dict.FieldReference(None, field_type=bool),
              remat_policy=config_dict.FieldReference(None, field_type=str),
              dtype=config_dict.FieldReference(None, field_type=str),
              loss_chunk_size=config_dict.FieldReference(None, field_type=int))
  return ml_collections.ConfigDict(dict(
      size=size, init_from=init_from, decoder=placeholders(DECODER_FIELDS, **(decoder_values or {})),
      video=video, **wide))


def search_section(**values: Any) -> ml_collections.ConfigDict:
  """config.search (SEARCH_DEFAULTS with `values`): the inference-time scaling strategy that `lrr_jax.infer`
  and `lrr_jax.scaling` run; their flags override it."""
  section = ml_collections.ConfigDict(dict(SEARCH_DEFAULTS, backtrack_cutoff=config_dict.placeholder(float)))
  unknown = sorted(set(values) - set(section))
  if unknown:
    raise ValueError(f"config.search has no key(s) {unknown}; expected {sorted(section)}.")
  section.update(values)
  return section


def mesh_section(data: int = -1, fsdp: int = 1, tensor: int = 1, **dcn: int) -> ml_collections.ConfigDict:
  """config.mesh: sizes within a slice (one may be -1: the devices left), across slices (`dcn_data`,
  `dcn_fsdp`, `dcn_tensor`; multi-slice), and `rules`, the logical-axis rules (pairs of a logical axis and
  mesh axes; empty: `partitioning.DEFAULT_RULES`), e.g. `--config.mesh.rules="(('embed', ('fsdp', 'data')),)"`."""
  section = dict(data=data, fsdp=fsdp, tensor=tensor, dcn_data=1, dcn_fsdp=1, dcn_tensor=1, rules=())
  unknown = sorted(set(dcn) - {"dcn_data", "dcn_fsdp", "dcn_tensor"})
  if unknown:
    raise ValueError(f"config.mesh has no key(s) {unknown}.")
  section.update(dcn)
  return ml_collections.ConfigDict(section)


def encoder_ablations(windows: tuple[int, ...]) -> list[dict[str, Any]]:
  """The video encoder's ablations as a sweep's overrides: the static stream alone (LRR's two-stream ablation),
  then temporal attention over a window of tau frames (the current one included), for each tau in `windows` (0,
  the default: every frame up to the current one)."""
  return [{"model.video.two_stream": False}] + [{"model.video.temporal_window": tau} for tau in windows]
