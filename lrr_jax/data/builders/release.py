"""What every builder of a released dataset shares: its version, its config's frame size and storage, its
record features.

Frames are written at `resolution` (the recipes': 224) and encoded: JPEG at `jpeg_quality` by default, or
lossless PNG, or raw uint8 (`frame_format`); the pipeline decodes them in its workers. `release_config` gives a
builder config with other frame settings, under a name of its own, so datasets written with different
settings sit side by side.
"""
import dataclasses
import hashlib
from typing import Any

import tensorflow_datasets as tfds

from lrr_jax.data import frame_codec
from lrr_jax.data import records

FRAME_SETTINGS = ("resolution", "frame_format", "jpeg_quality")


@dataclasses.dataclass
class ReleaseConfig(tfds.core.BuilderConfig):
  resolution: int = 224  # frames are resized to resolution x resolution
  frame_format: str = "jpeg"  # how frames are stored: jpeg | png (lossless) | raw (uint8 arrays)
  jpeg_quality: int = 90


class ReleaseBuilder(tfds.core.GeneratorBasedBuilder):
  """A release read from `manual_dir` (subclasses say what goes there in MANUAL_DOWNLOAD_INSTRUCTIONS) into
  records (`records.py`) of square frames of `builder_config.resolution`. Abstract: TFDS registers subclasses."""
  VERSION = tfds.core.Version("2.1.0")
  RELEASE_NOTES = {"2.1.0": "ACRE, Something-Else and STAR rationales re-identify objects seen again (<reid>).",
                   "2.0.0": "Frames encoded (JPEG quality 90 by default, or PNG) at 224 px by default.",
                   "1.0.0": "Raw uint8 frames at 64 px."}

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    frame_codec.check_format(cfg.frame_format, cfg.jpeg_quality, f"{type(self).__name__} frame_format")
    return tfds.core.DatasetInfo(builder=self, features=records.features(cfg.resolution, cfg.resolution,
                                                                          cfg.frame_format))

  @classmethod
  def named_config(cls, name: str) -> tfds.core.BuilderConfig:
    """The builder config called `name` (subclasses may build configs from their names)."""
    configs = {config.name: config for config in cls.BUILDER_CONFIGS}
    if name not in configs:
      raise ValueError(f"Unknown {cls.__name__} config {name!r}; expected one of {sorted(configs)}.")
    return configs[name]

  def make_record(self, frames, examples, label: int, **metadata: Any) -> dict[str, Any]:
    """`records.make_record` with frames stored as the config says."""
    cfg = self.builder_config
    return records.make_record(frames, examples, label, frame_format=cfg.frame_format,
                               jpeg_quality=cfg.jpeg_quality, **metadata)


def release_config(builder_class: type, name: str, **settings: Any) -> tfds.core.BuilderConfig:
  """`builder_class`'s config `name` (`named_config`) with frame settings (`FRAME_SETTINGS`) replaced; the name
  is kept when they are its own, else `<name>_<hash of the settings>`."""
  base = builder_class.named_config(name)
  unknown = sorted(set(settings) - set(FRAME_SETTINGS))
  if unknown:
    raise ValueError(f"{builder_class.__name__} has no frame setting(s) {unknown}; expected {FRAME_SETTINGS}.")
  changed = {k: v for k, v in sorted(settings.items()) if v is not None and getattr(base, k) != v}
  if not changed:
    return base
  description = ", ".join(f"{k}={v}" for k, v in changed.items())
  return dataclasses.replace(base, name=f"{name}_{hashlib.sha1(description.encode()).hexdigest()[:10]}",
                             description=description, **changed)
