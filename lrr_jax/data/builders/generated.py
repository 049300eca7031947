"""TFDS builders for the generated worlds, so that they read exactly like the real datasets.

  builder = GeneratedCater(config=cater_builder_config("tiny"), data_dir=..., file_format="array_record")
  builder.download_and_prepare(); source = builder.as_data_source("train")
"""
import dataclasses
import hashlib

import numpy as np
import tensorflow_datasets as tfds

from lrr_jax.data import rationales
from lrr_jax.data import records
from lrr_jax.data.worlds import acre
from lrr_jax.data.worlds import cater

CHUNK = 256  # videos rendered at once


@dataclasses.dataclass
class GeneratedConfig(tfds.core.BuilderConfig):
  world: object = None  # cater.CaterConfig or acre.AcreConfig
  num_train: int = 1024
  num_test: int = 128
  seed: int = 0


def cater_builder_config(name: str, **overrides) -> GeneratedConfig:
  """'tiny' (the CPU demo's world), 'static' or 'moving' (camera), with fields of CaterConfig overridden."""
  worlds = {"tiny": cater.CaterConfig(num_objects=4, num_cones=1),
            "static": cater.CaterConfig(num_frames=16, resolution=64, num_objects=8),
            "moving": cater.CaterConfig(num_frames=16, resolution=64, num_objects=8, moving_camera=True)}
  if name not in worlds:
    raise ValueError(f"Unknown generated CATER config {name!r}; expected one of {sorted(worlds)}.")
  description = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
  sizes = {k: overrides.pop(k) for k in ("num_train", "num_test", "seed") if k in overrides}
  if description:  # TFDS wants custom configs named apart from the built-in ones
    name = f"{name}_{hashlib.sha1(description.encode()).hexdigest()[:10]}"
  return GeneratedConfig(name=name, description=description or None,
                         world=dataclasses.replace(worlds[name.split("_")[0]], **overrides), **sizes)


class GeneratedCater(tfds.core.GeneratorBasedBuilder):
  """Generated CATER videos: where is the snitch at the end? Label: its final cell (36 classes)."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [cater_builder_config(name) for name in ("tiny", "static", "moving")]

  def _info(self) -> tfds.core.DatasetInfo:
    world = self.builder_config.world
    return tfds.core.DatasetInfo(builder=self, features=records.features(world.resolution, world.resolution))

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    return {"train": self._generate_examples(cfg.num_train, cfg.seed),
            "test": self._generate_examples(cfg.num_test, cfg.seed + 1_000_003)}

  def _generate_examples(self, num_videos: int, seed: int):
    world = self.builder_config.world
    for chunk, start in enumerate(range(0, num_videos, CHUNK)):
      videos = cater.generate(world, min(CHUNK, num_videos - start), seed=seed * 100_003 + chunk)
      for n in range(len(videos)):
        examples = {v: cater.rationale_example(videos, n, v) for v in rationales.VARIANTS}
        yield start + n, records.make_record(videos.frames[n], examples, int(videos.label[n]),
                                             camera="moving" if world.moving_camera else "static")


class GeneratedAcre(tfds.core.GeneratorBasedBuilder):
  """Generated ACRE queries: 6 context panels and the query panel as 7 frames; on / off / undetermined."""
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.1.0": "The query panel's fact re-identifies its objects in the context panels (<reid>)."}
  BUILDER_CONFIGS = [GeneratedConfig(name=split, world=acre.AcreConfig(split=split)) for split in acre.SPLITS]

  def _info(self) -> tfds.core.DatasetInfo:
    res = self.builder_config.world.resolution
    return tfds.core.DatasetInfo(builder=self, features=records.features(res, res))

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    return {"train": self._generate_examples(cfg.num_train, cfg.seed, True),
            "test": self._generate_examples(cfg.num_test, cfg.seed, False)}

  def _generate_examples(self, num_problems: int, seed: int, train: bool):
    world = self.builder_config.world
    for p, problem in enumerate(acre.generate(world, num_problems, seed, train)):
      for q, (_, query_type, answer) in enumerate(problem.queries):
        frames = np.concatenate([problem.context_frames, problem.query_frames[q:q + 1]])
        examples = {v: acre.rationale_example(problem, q, v) for v in rationales.VARIANTS}
        yield f"{p}_{q}", records.make_record(frames, examples, acre.ANSWERS.index(answer), split=world.split,
                                              query_type=query_type)
