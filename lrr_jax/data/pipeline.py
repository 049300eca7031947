"""Grain pipelines over TFDS data sources (ArrayRecord): records -> model batches.

source -> index -> shuffle(seed) -> repeat -> epoch -> this process's shard -> encode (the frames kept of
`num_frames` decoded, JPEG/PNG or raw (`frame_codec`), resized antialiased to `resolution`, colour-jittered;
optional surrogate-task request inserted; tokenize, loss mask, pad) -> batch -> (worker processes: decoding,
augmentation and requests run there). Several sources mix with weights. The iterator's `get_state()`/
`set_state()` resume it exactly, and since every random choice derives from (seed, source, record index, epoch;
the request drawn before the jitter), a resumed run sees exactly the batches an
uninterrupted one would.
"""
import dataclasses
import functools
from typing import Any, Sequence

import zlib

from absl import logging
import grain
import numpy as np

from lrr_jax.data import encoding
from lrr_jax.data import frame_codec
from lrr_jax.data import frame_sampling
from lrr_jax.data import rationales
from lrr_jax.data import records
from lrr_jax.data import surrogate
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data import video_transforms


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadOptions:
  """How examples are read and augmented: the fields a run config's `data` section passes to the pipeline."""
  brightness_jitter: float = 0.0  # max relative change of a video's brightness (0: off)
  contrast_jitter: float = 0.0  # max relative change of a video's contrast (0: off)
  worker_count: int = 0  # >0: Grain worker processes (they need a __main__ guard and parsed absl flags)
  worker_buffer: int = 1  # batches each worker prepares ahead
  read_threads: int = 2  # threads reading and encoding records (in each worker, or in this process)
  prefetch_buffer: int = 4  # batches read ahead by those threads
  surrogate_prompt_prob: float = 0.0  # chance per example of a surrogate-task request inserted (surrogate.py)

  def read_options(self) -> dict[str, Any]:
    """These fields by name (of this object or of a subclass's)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(ReadOptions)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineConfig(ReadOptions):
  tokenizer_path: str
  variant: str = "full"
  max_length: int = 192
  num_frames: int = 8
  resolution: int = 32
  batch_size: int = 16  # per process
  seed: int = 0
  shuffle: bool = True
  num_epochs: int | None = None  # None: repeat forever


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str) -> tokenizer_lib.Tokenizer:
  return tokenizer_lib.load(path)


def fit_frames(frames: np.ndarray, num_frames: int, resolution: int, source: str) -> tuple[np.ndarray, np.ndarray]:
  """Sample (or repeat) frames to `num_frames` and resize to `resolution` (antialiased); also the kept indices."""
  return record_video({"frames": frames}, num_frames, resolution, source)


def record_video(record: dict[str, Any], num_frames: int, resolution: int, source: str
                 ) -> tuple[np.ndarray, np.ndarray]:
  """A record's frames (raw or encoded) sampled to `num_frames` (only those decoded) and resized
  (antialiased) to `resolution`: uint8[num_frames, resolution, resolution, 3], and the kept indices."""
  kept = frame_sampling.evenly_spaced(frame_codec.frame_count(record, source), num_frames)
  frames = frame_codec.decode(record, kept, source)
  return video_transforms.resize(frames, resolution), kept


class EncodeRecord(grain.transforms.Map):
  """(record index, epoch, record) -> the arrays of one example (see `encoding.encode_example`) plus its video."""

  def __init__(self, config: PipelineConfig, source_name: str, shards: Sequence[tuple[int, str]] = ()):
    """shards: (first record, file) of each file of the source, so that errors name the record's file."""
    self.config = config
    self.source_name = source_name
    self.shards = list(shards)

  def map(self, element: tuple[int, int, dict[str, Any]]) -> dict[str, np.ndarray]:
    index, epoch, record = element  # the record's index in its source; the epoch that draws it
    cfg, source = self.config, f"{self.source_name} record {index}{_in_file(self.shards, index)}"
    video, kept = record_video(record, cfg.num_frames, cfg.resolution, source)
    example = records.read_example(record, cfg.variant, source)
    rng = np.random.default_rng([cfg.seed, zlib.crc32(self.source_name.encode()), index, epoch])
    arrays = self._encode(example, rng, source)
    # Frame indices name the record's frames; map them onto the frames kept.
    arrays["frame_index"] = np.where(arrays["frame_index"] < 0, -1,
                                     np.searchsorted(kept, arrays["frame_index"], side="right") - 1
                                     ).astype(np.int32)
    arrays["video"] = video_transforms.colour_jitter(video, rng, cfg.brightness_jitter, cfg.contrast_jitter)
    arrays["record_index"] = np.int64(index)
    return arrays

  def _encode(self, example: rationales.Example, rng: np.random.Generator, source: str) -> dict[str, np.ndarray]:
    """The example's arrays, with a surrogate request inserted at random (`rng`: per seed, source, record and
    epoch); left unprompted when the request would not fit `max_length`."""
    cfg, tokenizer = self.config, _tokenizer(self.config.tokenizer_path)
    prompted, fact = surrogate.maybe_prompt(example, cfg.surrogate_prompt_prob, rng)
    if fact is not None:
      try:
        return encoding.encode_example(prompted, tokenizer, cfg.max_length, source)
      except ValueError as e:  # too long with the request: train on it unprompted
        logging.log_first_n(logging.WARNING, "%s; left without its surrogate request (raise "
                            "config.data.max_length to make room for one).", 1, e)
    return encoding.encode_example(example, tokenizer, cfg.max_length, source)


def _in_file(shards: Sequence[tuple[int, str]], index: int) -> str:
  """' (in <file>)' for the shard holding record `index`, or '' when the files are unknown."""
  files = [name for first, name in shards if first <= index]
  return f" (in {files[-1]})" if files else ""


class NamedSource:
  """A data source whose failed reads raise an error naming the dataset, the record and its file."""

  def __init__(self, source: Any, name: str, files: Sequence[str] = ()):
    self.source, self.name = source, name
    self.shards = _shards(source)
    info = getattr(source, "dataset_info", None)
    self.files = list(files) or ([f"{info.data_dir} ({getattr(source, 'split', '?')} split)"] if info else [])

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> Any:
    try:
      return self.source[index]
    except Exception as e:  # array_record and TFDS raise many kinds, none naming the file
      where = _in_file(self.shards, index) or f" (in {self.files})"
      raise ValueError(f"{self.name}: record {index} could not be read{where}: {e}") from e


def _shards(source: Any) -> list[tuple[int, str]]:
  """(first record, file) of each ArrayRecord file behind a TFDS or Grain source (read from array_record's
  read instructions; [] where a source does not expose them)."""
  reader = getattr(source, "data_source", source)
  instructions = getattr(reader, "_read_instructions", None) or []
  shards, first = [], 0
  for instruction in instructions:
    shards.append((first, str(instruction.filename)))
    first += int(instruction.num_records)
  return shards


def open_array_record(paths: Sequence[str], name: str) -> NamedSource:
  """A Grain ArrayRecord source over `paths` (records written directly), failing with the file named."""
  try:
    return NamedSource(grain.sources.ArrayRecordDataSource(list(paths)), name, paths)
  except Exception as e:
    raise ValueError(f"{name}: cannot open {list(paths)}: {e}") from e


def _indexed(num_records: int, draw: int, record: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
  """(record index, epoch, record): Grain hands a map over the source the draw's index over all epochs of
  the repeated, shuffled data."""
  return draw % num_records, draw // num_records, record


def _one_source(source: Any, name: str, config: PipelineConfig, process_index: int,
                process_count: int) -> grain.MapDataset:
  if len(source) < process_count:
    raise ValueError(f"{name} has {len(source)} records, fewer than the {process_count} processes reading it.")
  source = source if isinstance(source, NamedSource) else NamedSource(source, name)
  dataset = grain.MapDataset.source(source).map_with_index(functools.partial(_indexed, len(source)))
  if config.shuffle:
    dataset = dataset.shuffle(seed=config.seed)  # each epoch in another order
  dataset = dataset.repeat(config.num_epochs)
  return dataset[process_index::process_count].map(EncodeRecord(config, name, source.shards))


def make_dataset(sources: Sequence[tuple[str, Any, float]], config: PipelineConfig, process_index: int = 0,
                 process_count: int = 1) -> grain.IterDataset:
  """Batches from `sources`, a list of (name, data source, mixture weight), for one process.

  Each process reads every `process_count`-th record (after the shared shuffle), so processes see disjoint
  shards that together cover the data. Call with `jax.process_index()`, `jax.process_count()`.
  """
  datasets = [_one_source(src, name, config, process_index, process_count) for name, src, _ in sources]
  dataset = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, [w for _, _, w in sources])
  dataset = dataset.batch(config.batch_size, drop_remainder=True).to_iter_dataset(
      grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=config.prefetch_buffer))
  if config.worker_count:
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.worker_count,
                                                               per_worker_buffer_size=config.worker_buffer))
  return dataset
