"""What the config files share: their argument parser, the model section and the search section.

Every field of the model's dataclasses is a key of `config.model` (None: the preset's value), so that any of
them can be set from the command line: `--config.model.decoder.remat=True`,
`--config.model.video.static_backbone.norm=group`. `lrr_jax.models.lrr.config_from_dict` reads the section.
"""
import dataclasses
import types
import typing
from typing import Any

import ml_collections
from ml_collections import config_dict

from lrr_jax import experiment
from lrr_jax.models import decoder
from lrr_jax.models import resnet
from lrr_jax.models import video_encoder


def parse_arg(arg: str | None, **defaults: str) -> dict[str, str]:
  """'a=1,b=x' -> {'a': '1', 'b': 'x'} over `defaults`; unknown keys are an error."""
  values = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"Unknown config arg {key!r}; expected one of {sorted(defaults)}.")
    values[key] = value
  return values


def _field_type(annotation: Any) -> type:
  """The type a placeholder of a dataclass field takes: `tuple[int, ...]` -> tuple, `float | None` -> float."""
  if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
    annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
  return typing.get_origin(annotation) or annotation


def placeholders(config_class: type, nested: dict[str, ml_collections.ConfigDict] | None = None,
                 **values: Any) -> ml_collections.ConfigDict:
  """A ConfigDict with a key per field of `config_class`: typed placeholders (None) or `values`; fields
  named in `nested` are those sections."""
  hints = typing.get_type_hints(config_class)
  section = dict(nested or {})
  for field in dataclasses.fields(config_class):
    if field.name not in section:
      section[field.name] = config_dict.FieldReference(values.pop(field.name, None),
                                                       field_type=_field_type(hints[field.name]))
  if values:
    raise ValueError(f"{config_class.__name__} has no field(s) {sorted(values)}.")
  return ml_collections.ConfigDict(section)


def model_section(size: str, decoder_values: dict[str, Any] | None = None,
                  video_values: dict[str, Any] | None = None, init_from: str = "") -> ml_collections.ConfigDict:
  """config.model: the preset `size`, every DecoderConfig / VideoEncoderConfig / ResNetConfig field (set to
  `*_values` or left to the preset), the model-wide switches `scan_layers`, `remat_policy`, `dtype` (compute;
  e.g. bfloat16) and `loss_chunk_size` (None: the parts' own values; see `lrr.config_from_dict`), and the weights to start from: `init_from`, a local Hugging Face OPT
  directory; `video.static_init_from` / `video.motion_init_from` (also in `video_values`), a local ResNet
  checkpoint (torchvision state dict file or Hugging Face directory) for that stream's backbone."""
  video_values = dict(video_values or {})
  backbones = {name: placeholders(resnet.ResNetConfig, **video_values.pop(name, {}))
               for name in ("static_backbone", "motion_backbone")}
  backbone_weights = {key: video_values.pop(key, "") for key in ("static_init_from", "motion_init_from")}
  video = placeholders(video_encoder.VideoEncoderConfig, nested=backbones, **video_values)
  video.update(backbone_weights)
  wide = dict(scan_layers=config_dict.FieldReference(None, field_type=bool),
              remat_policy=config_dict.FieldReference(None, field_type=str),
              dtype=config_dict.FieldReference(None, field_type=str),
              loss_chunk_size=config_dict.FieldReference(None, field_type=int))
  return ml_collections.ConfigDict(dict(
      size=size, init_from=init_from, decoder=placeholders(decoder.DecoderConfig, **(decoder_values or {})),
      video=video, **wide))


def search_section(**values: Any) -> ml_collections.ConfigDict:
  """config.search (`lrr_jax.experiment.search_defaults` with `values`): the inference-time scaling strategy
  that `lrr_jax.infer` and `lrr_jax.evaluation.scaling` run; their flags override it."""
  section = experiment.search_defaults()
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
  then temporal attention over only the previous tau frames, for each tau in `windows` (0, the default: all)."""
  return [{"model.video.two_stream": False}] + [{"model.video.temporal_window": tau} for tau in windows]
