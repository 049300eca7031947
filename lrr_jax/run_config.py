"""A run's config, typed: every section of a config file (`configs/*.py`) as a frozen dataclass, built from the
ml_collections ConfigDict in one place, `RunConfig.from_config_dict`, which refuses every unknown key at once
(each named with the closest known one) and values of the wrong type, before any work.

Sections are declared beside their users: the loop's fields (`train.loop.TrainConfig`: seed, batch, steps,
and `optimizer`, `mesh`, `checkpoint`, `profile`), `distributed` (`train.distributed.DistributedConfig`), the
pipeline's read options (`data.pipeline.ReadOptions`, part of `DataConfig`), `search`
(`inference.search.SearchConfig`, whose sampling the file spells flat: `temperature`, `top_k`, `top_p`); the
rest here. `world` and `model` hold only what the file sets, a builder's or a size preset's values standing
for the rest: their keys are the fields of `data.worlds.cater.CaterConfig` and of the model's dataclasses.
"""
import collections.abc
import dataclasses
import difflib
import types
import typing
from typing import Any, Callable, Mapping

import ml_collections

from lrr_jax.data import pipeline
from lrr_jax.data.worlds import cater as cater_world
from lrr_jax.inference import sampling
from lrr_jax.inference import search
from lrr_jax.models import decoder
from lrr_jax.models import lrr
from lrr_jax.models import resnet
from lrr_jax.models import video_encoder
from lrr_jax.train import distributed
from lrr_jax.train import loop

Schema = dict[str, Any]  # key -> None (a value) or the Schema of a nested section


class ConfigError(ValueError):
  """A config that cannot run as given."""


def schema_of(config_class: type) -> Schema:
  """The keys a section of `config_class` takes; a field that is a dataclass is a nested section."""
  hints = typing.get_type_hints(config_class)
  return {f.name: schema_of(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else None
          for f in dataclasses.fields(config_class) if f.init}


def _mapping(keys: Schema | Callable[[], Schema], **extra: Any) -> Any:
  """A dataclass field holding a plain mapping whose keys must be those of `keys`."""
  return dataclasses.field(default_factory=dict, metadata=dict(keys=keys, **extra))


@dataclasses.dataclass(frozen=True)
class DatasetFiles:
  """config.data.sources.<dataset>: where one dataset of a mixture differs from config.data."""
  manual_dir: str = ""  # its released files ('': data.manual_dir)
  eval_split: str = ""  # its held-out split ('': data.eval_split)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig(pipeline.ReadOptions):
  """config.data, with the pipeline's read options (`ReadOptions`: jitter, workers, threads, buffers,
  surrogate_prompt_prob)."""
  dataset: str = "generated_cater"  # a dataset `lrr_jax.prepare` writes
  builder_config: str = "tiny"  # its TFDS builder config (generated ACRE: the split)
  data_dir: str = ""  # where datasets are written ('': <workdir>/data; local or gs://)
  manual_dir: str = ""  # a released dataset's files ('': written already, or generated)
  num_train: int = 4096  # generated worlds: training videos
  num_eval: int = 128  # generated worlds: held-out videos
  variant: str = "full"  # the rationale: full | no_tags | no_surrogate | direct
  max_length: int = 192  # tokens per training example
  vocab_size: int = 512  # the BPE trained on the data (unused with data.tokenizer or model.init_from)
  tokenizer: str = ""  # a local tokenizer.json (or HF model directory) instead of the BPE
  eval_split: str = "test"  # the held-out split evaluated
  num_frames: int = 0  # released datasets: frames the model sees (generated: world.num_frames)
  resolution: int = 0  # released datasets: frame size in pixels (generated: world.resolution)
  frame_format: str | None = None  # released datasets: frames stored as jpeg | png (None: the builder's)
  jpeg_quality: int | None = None  # released datasets: JPEG quality (None: the builder's)
  mixture: tuple = ()  # ((dataset, builder config, weight), ...): joint training in place of dataset
  sources: Mapping[str, DatasetFiles] = dataclasses.field(default_factory=dict)  # a mixture's per dataset
  world_seed: int = -1  # the seed a generated world is written with (-1: config.seed)


def _model_schema() -> Schema:
  video = schema_of(video_encoder.VideoEncoderConfig)
  return dict(decoder=schema_of(decoder.DecoderConfig), video={**video, "static_init_from": None,
                                                               "motion_init_from": None, "from_scratch": None})


@dataclasses.dataclass(frozen=True)
class ModelSection:
  """config.model: a size preset and the fields the config sets over it (None: the preset's)."""
  size: str = "tiny"  # the preset: tiny | opt-125m | opt-1.3b
  init_from: str = ""  # a local Hugging Face OPT directory whose weights (and architecture) the decoder takes
  scan_layers: bool | None = None  # every part's scan_layers (a part's own key wins)
  remat_policy: str | None = None  # every part's remat_policy (`models.remat.POLICIES`)
  dtype: str | None = None  # every part's compute dtype, e.g. bfloat16
  loss_chunk_size: int | None = None  # LRRConfig.loss_chunk_size
  decoder: Mapping[str, Any] = _mapping(lambda: _model_schema()["decoder"])  # DecoderConfig fields
  # VideoEncoderConfig fields; static_backbone / motion_backbone: ResNetConfig fields; static_init_from /
  # motion_init_from: a ResNet checkpoint (torchvision file or HF directory) for that stream; from_scratch:
  # the BatchNorm streams without one train from random weights, their BatchNorm statistics too (ours)
  video: Mapping[str, Any] = _mapping(lambda: _model_schema()["video"])

  def architecture(self, **decoder_defaults: Any) -> lrr.LRRConfig:
    """The model these keys describe (`lrr.config_from_dict`), `decoder_defaults` under the decoder's keys."""
    return lrr.config_from_dict(dataclasses.asdict(self), **decoder_defaults)

  def stream_init_from(self, stream: str) -> str:
    """The checkpoint a video stream ('static' or 'motion') starts from ('': none)."""
    return self.video.get(f"{stream}_init_from") or ""

  @property
  def from_scratch(self) -> bool:
    """Whether the video streams without a checkpoint train from scratch (`model.video.from_scratch`)."""
    return bool(self.video.get("from_scratch"))


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """config.eval: greedy generation on the held-out split, at the end and during training."""
  batch_size: int = 64  # rows per generation batch
  max_new_tokens: int = 190  # the response's budget
  every: int = 400  # steps between evaluations during training (0: only at the end)
  num_examples: int = 64  # records evaluated during training (0: all)
  num_classes: int = 0  # classes for top-5 accuracy (0: none)


def _search_keys() -> Schema:
  return {**{k: None for k in schema_of(search.SearchConfig) if k != "sampling"},
          **schema_of(sampling.Sampling)}


def search_from_flat(values: Mapping[str, Any]) -> search.SearchConfig:
  """config.search (the sampling's fields flat beside the others) as a SearchConfig."""
  values = dict(values)
  picked = {k: values.pop(k) for k in schema_of(sampling.Sampling) if k in values}
  defaults = search.SearchConfig().sampling
  return search.SearchConfig(sampling=dataclasses.replace(defaults, **picked), **values)


def flat_search(config: search.SearchConfig) -> dict[str, Any]:
  """The inverse of `search_from_flat`."""
  values = dataclasses.asdict(config)
  return {**values.pop("sampling"), **values}


@dataclasses.dataclass(frozen=True)
class Source:
  """One dataset of a run. name: its key in the scores (`<name>/<metric>` for a mixture): the dataset, or
  `<dataset>/<builder config>` where a mixture holds the dataset twice."""
  name: str
  dataset: str
  builder_config: str
  weight: float  # its share of the training batches, relative to the others'
  manual_dir: str  # where a released dataset's files are ('' : written already, or generated)
  eval_split: str


DistributedConfig, SearchConfig = distributed.DistributedConfig, search.SearchConfig  # unshadowed by fields


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig(loop.TrainConfig):
  """A whole run config: the loop's fields (`TrainConfig`) and the sections below."""
  resume_with_changes: bool = False  # resume a checkpoint with a config that changes its arithmetic
  compilation_cache_dir: str = ""  # a persistent XLA compilation cache ('': off; local or gs://)
  distributed: DistributedConfig = DistributedConfig()  # joining the processes of a multi-host run
  world: Mapping[str, Any] = _mapping(lambda: schema_of(cater_world.CaterConfig))  # a generated world's fields
  data: DataConfig = DataConfig()  # the datasets, their tokenizer and how examples are read
  model: ModelSection = ModelSection()  # the architecture and the weights it starts from
  eval: EvalConfig = EvalConfig()  # greedy generation on the held-out split
  search: SearchConfig = dataclasses.field(  # inference-time scaling (`lrr_jax.infer`, `lrr_jax.scaling`)
      default=SearchConfig(), metadata=dict(keys=_search_keys, build=search_from_flat))

  @classmethod
  def from_config_dict(cls, config: ml_collections.ConfigDict | Mapping[str, Any]) -> "RunConfig":
    """The typed config; raises ConfigError naming every unknown key (with the closest known one) and every
    value of the wrong type."""
    values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    errors: list[str] = []
    built = _build(cls, values, "config", errors)
    if errors:
      raise ConfigError("Invalid config (nothing was run):\n  " + "\n  ".join(sorted(errors)))
    return built

  def sources(self) -> list[Source]:
    """The run's datasets: `data.mixture`'s (dataset, builder config, weight) entries, or else `data.dataset`
    with `data.builder_config`; a mixture entry's manual_dir and eval_split are `data.sources.<dataset>`'s
    where set, else `data.manual_dir`, `data.eval_split`."""
    data = self.data
    if not data.mixture:
      return [Source(data.dataset, data.dataset, data.builder_config, 1.0, data.manual_dir, data.eval_split)]
    names = [dataset for dataset, _, _ in data.mixture]
    result = []
    for dataset, builder_config, weight in data.mixture:
      own = data.sources.get(dataset) or DatasetFiles()
      name = dataset if names.count(dataset) == 1 else f"{dataset}/{builder_config}"
      result.append(Source(name, dataset, builder_config, float(weight), own.manual_dir or data.manual_dir,
                           own.eval_split or data.eval_split))
    return result

  @property
  def frames_from_world(self) -> bool:
    """Whether the frames are a generated world's (`world`), not `data.num_frames` / `data.resolution`."""
    mixture = self.data.mixture
    first = mixture[0][0] if mixture and isinstance(mixture[0], (tuple, list)) else self.data.dataset
    return str(first).startswith("generated_")

  def video_shape(self) -> tuple[int, int]:
    """(num_frames, resolution) of the model's input: the generated world's, or `data.*`'s."""
    if self.frames_from_world:
      return self.world.get("num_frames", 0), self.world.get("resolution", 0)
    return self.data.num_frames, self.data.resolution

  def world_seed(self) -> int:
    """The seed a generated world is written with: `data.world_seed`, or `seed` where that is -1."""
    return self.seed if self.data.world_seed < 0 else self.data.world_seed

  def max_positions(self) -> int:
    """Positions of a model trained from scratch: the longest prompt plus the evaluation's budget (>= 256)."""
    return max(256, self.data.max_length + self.eval.max_new_tokens)


# Building and checking.

def closest_key(key: str, known: list[str]) -> str | None:
  """The known key `key` most likely meant: a near spelling, or the initials of its words ('learning_rate'
  -> 'lr')."""
  near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
  initials = "".join(word[:1] for word in key.split("_"))
  return (near or [k for k in known if len(k) > 1 and k == initials] or
          difflib.get_close_matches(key, known, n=1, cutoff=0.0) or [None])[0]


def key_errors(values: Mapping[str, Any], schema: Schema, where: str) -> list[str]:
  """Every key of `values` (nested) that `schema` lacks, named in full with the closest known key."""
  errors = []
  for key, value in values.items():
    if key not in schema:
      guess = closest_key(str(key), sorted(schema))
      errors.append(f"{where}.{key} is not a config key" + (f" (did you mean {where}.{guess}?)" if guess else
                                                            " (the section takes none)"))
    elif isinstance(schema[key], dict) and isinstance(value, Mapping):
      errors += key_errors(value, schema[key], f"{where}.{key}")
  return errors


def _build(config_class: type, values: Any, where: str, errors: list[str]) -> Any:
  """`config_class` from a section's values (absent keys: the defaults); errors appended to `errors`."""
  if not isinstance(values, Mapping):
    errors.append(f"{where}={values!r} must be a section (a dict of keys).")
    return config_class()
  fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}
  errors += key_errors({k: None for k in values if k not in fields}, dict.fromkeys(fields), where)
  hints = typing.get_type_hints(config_class)
  known = {k: _field_value(hints[k], fields[k], v, f"{where}.{k}", errors) for k, v in values.items() if k in fields}
  try:
    return config_class(**known)
  except (TypeError, ValueError) as e:
    errors.append(f"{where}: {e}")
    return config_class()


def _field_value(hint: Any, field: dataclasses.Field, value: Any, where: str, errors: list[str]) -> Any:
  """A field's value from the config's: a nested section built, a mapping's keys checked, a value typed."""
  keys = field.metadata.get("keys")
  if keys is not None:
    if not isinstance(value, Mapping):
      errors.append(f"{where}={value!r} must be a section (a dict of keys).")
      return field.default if field.default is not dataclasses.MISSING else field.default_factory()
    errors += key_errors(value, keys() if callable(keys) else keys, where)
    build = field.metadata.get("build")
    if build is None:
      return _tuples(dict(value))
    try:
      return build(_tuples(value))
    except (TypeError, ValueError) as e:
      errors.append(f"{where}: {e}")
      return field.default
  if dataclasses.is_dataclass(hint):
    return _build(hint, value, where, errors)
  if typing.get_origin(hint) is collections.abc.Mapping:
    section = typing.get_args(hint)[1]
    return {k: _build(section, v, f"{where}.{k}", errors) for k, v in (value or {}).items()}
  return _typed(hint, value, where, errors)


def _typed(hint: Any, value: Any, where: str, errors: list[str]) -> Any:
  """`value` checked against a leaf field's type (int for float allowed; lists become tuples)."""
  union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
  options = typing.get_args(hint) if union else (hint,)
  if value is None and type(None) in options:
    return None
  base = [typing.get_origin(o) or o for o in options if o is not type(None)][0]
  if base is tuple and isinstance(value, (list, tuple)):
    return _tuples(value)
  if base is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if base is Any or (isinstance(value, base) and not (base is int and isinstance(value, bool))):
    return value
  errors.append(f"{where}={value!r} must be of type {getattr(base, '__name__', base)}.")
  return value


def _tuples(value: Any) -> Any:
  """JSON's lists as tuples, nested ones too (a config's tuples read back from run.json)."""
  if isinstance(value, (list, tuple)):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, Mapping):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def override_error(argv: list[str], error: Exception) -> str:
  """The message for a `--config.<key>=value` override of a key the config file lacks (ml_collections raises
  a bare KeyError, maybe with a 'Did you mean' of the last part): the full key and the closest known one."""
  while error.args and isinstance(error.args[0], Exception):  # AttributeError(KeyError(...))
    error = error.args[0]
  text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
  name = text.split("\n")[0].strip("'\"")
  flags = [a.split("=")[0] for a in argv if a.startswith("--config.")]
  bad = next((f for f in flags if f.split(".")[-1] == name), None) or next(
      (f for f in flags if f".{name}" in f), f"--config.{name}")
  key = bad.removeprefix("--")
  guess = text.split('Did you mean "')[1].split('"')[0] if 'Did you mean "' in text else ""
  hint = f" (did you mean {key.rsplit('.', 1)[0]}.{guess}?)" if guess else ""
  return f"{key} is not a config key{hint}: {bad}= names no key of the config file; nothing was run."
