"""What every builder of a released dataset shares: its version, its config's frame size, its record features."""
import dataclasses

import tensorflow_datasets as tfds

from lrr_jax.data import records


@dataclasses.dataclass
class ReleaseConfig(tfds.core.BuilderConfig):
  resolution: int = 64  # frames are resized to resolution x resolution


class ReleaseBuilder(tfds.core.GeneratorBasedBuilder):
  """A release read from `manual_dir` (subclasses say what goes there in MANUAL_DOWNLOAD_INSTRUCTIONS) into
  records (`records.py`) of square frames of `builder_config.resolution`. Abstract: TFDS registers subclasses."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    res = self.builder_config.resolution
    return tfds.core.DatasetInfo(builder=self, features=records.features(res, res))
