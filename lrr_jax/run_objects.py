"""From a typed run config (`run_config.RunConfig`) to the objects a run is made of: its data, model (with
pretrained weights inserted), evaluator and search, for every entry point.

`lrr_jax.main` (training), `lrr_jax.infer`, `lrr_jax.scaling`, the notebooks and the benchmarks
build them here, so nothing else derives a data directory, a frame shape or a model config from a config.
"""
import dataclasses
import functools
import pathlib
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import numpy as np

from lrr_jax import run_config as run_config_lib
from lrr_jax.convert import hf_opt
from lrr_jax.convert import resnet_weights
from lrr_jax import files
from lrr_jax.data import pipeline
from lrr_jax.data import datasets
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.evaluation import evaluator as evaluator_lib
from lrr_jax.evaluation import mixture as mixture_eval
from lrr_jax.evaluation import oracle
from lrr_jax.inference import release_judge
from lrr_jax.inference import scorers
from lrr_jax.inference import search
from lrr_jax.models import lrr
from lrr_jax.train import distributed

RunConfig = run_config_lib.RunConfig
Source = run_config_lib.Source


def enable_compilation_cache(directory: str, min_compile_seconds: float = 1.0) -> str:
  """Turn on JAX's persistent compilation cache at `directory` (config.compilation_cache_dir; '': off, returns
  ''); before the first compile. Programs that compiled in `min_compile_seconds` or more are stored (JAX's
  default 1 s leaves out the many small ones), and a later process compiling the same program on the same
  kind of devices loads it. Local or gs:// (shared by the hosts of a pod)."""
  if directory:
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  return directory


# Data.

def data_dir(config: RunConfig, workdir: str | pathlib.Path) -> str:
  """Where the run's dataset is written: `data.data_dir`, else `<workdir>/data` (either may be gs://)."""
  return str(files.as_path(config.data.data_dir or files.as_path(workdir) / "data"))


def builder_sizes(config: RunConfig, dataset: str | None = None) -> dict[str, Any]:
  """The keyword arguments of `dataset`'s builder (default: the run's first): a generated CATER world's fields
  (those `config.world` sets) and sizes; a generated ACRE's sizes (its world is its split, the builder config),
  both seeded by `world_seed`; a released dataset's frame settings: written at `data.resolution`, stored as
  `data.frame_format` with `data.jpeg_quality` (those set)."""
  dataset = dataset or config.sources()[0].dataset
  data = config.data
  if not dataset.startswith("generated_"):
    settings = dict(resolution=data.resolution or None, frame_format=data.frame_format,
                    jpeg_quality=data.jpeg_quality)
    return {key: value for key, value in settings.items() if value is not None}
  sizes = dict(num_train=data.num_train, num_test=data.num_eval, seed=config.world_seed())
  return {**config.world, **sizes} if dataset == "generated_cater" else sizes


def dataset_builder(config: RunConfig, directory: str, source: Source | None = None):
  """The TFDS builder of one of the run's datasets (default: its first) under `directory` (read from a local
  copy when `directory` is gs://)."""
  source = source or config.sources()[0]
  return datasets.local_builder(source.dataset, source.builder_config, directory,
                               **builder_sizes(config, source.dataset))


def pipeline_config(config: RunConfig, tokenizer_path: str) -> pipeline.PipelineConfig:
  """The train pipeline of this process (its share of the global `batch_size`)."""
  num_frames, resolution = config.video_shape()
  return pipeline.PipelineConfig(
      tokenizer_path=tokenizer_path, variant=config.data.variant, max_length=config.data.max_length,
      num_frames=num_frames, resolution=resolution, batch_size=distributed.local_batch_size(config.batch_size),
      seed=config.seed, **config.data.read_options())


def build_data(config: RunConfig, workdir: str | pathlib.Path):
  """Write the run's datasets if missing (generated worlds, or releases from their manual_dir) and a tokenizer
  (`data.tokenizer` or the OPT's at `model.init_from` if given, else a BPE trained on every dataset's train
  text); return the train pipeline (a mixture by weight), the held-out sources by name and the tokenizer."""
  directory = data_dir(config, workdir)
  given_tokenizer = config.data.tokenizer or config.model.init_from
  run_sources = config.sources()
  vocab_size = 0 if given_tokenizer else config.data.vocab_size
  own_tokenizer = vocab_size if len(run_sources) == 1 else 0  # a mixture's BPE covers all its datasets
  written = [distributed.primary_first(lambda s=s: datasets.prepare(  # written once, by process 0
      s.dataset, s.builder_config, directory, own_tokenizer, s.manual_dir or None,
      **builder_sizes(config, s.dataset))) for s in run_sources]
  builders = [dataset_builder(config, directory, s) for s in run_sources]
  if given_tokenizer:
    tokenizer_path = given_tokenizer
  elif len(run_sources) == 1:
    tokenizer_path = str(written[0] / "tokenizer.json")
  else:
    tokenizer_path = str(distributed.primary_first(
        lambda: datasets.mixture_tokenizer(builders, directory, vocab_size)))
  train_data = pipeline.make_dataset([(s.name, b.as_data_source("train"), s.weight)
                                      for s, b in zip(run_sources, builders)],
                                     pipeline_config(config, tokenizer_path), jax.process_index(),
                                     jax.process_count())
  test_sources = {s.name: b.as_data_source(s.eval_split) for s, b in zip(run_sources, builders)}
  return train_data, test_sources, tokenizer_lib.load(tokenizer_path)


# Model.

VOCAB_MULTIPLE = 128  # the embedding's rows, padded so that they divide over a tensor-parallel mesh axis


def model_config(config: RunConfig, tokenizer_size: int = 0) -> lrr.LRRConfig:
  """The model `config.model` describes (`ModelSection.architecture`), its vocabulary `data.vocab_size`; with
  `model.init_from`, the decoder has that OPT's architecture (a vocabulary grown to `tokenizer_size` for the
  tags the tokenizer added) and the run's own cross-attention, gates, dropout and dtypes. The embedding is
  padded to a multiple of VOCAB_MULTIPLE rows, which are never predicted."""
  model = config.model.architecture(vocab_size=config.data.vocab_size, max_positions=config.max_positions())
  decoder = model.decoder
  if config.model.init_from:
    decoder = hf_opt.architecture_of(config.model.init_from, decoder)
    decoder = dataclasses.replace(decoder, vocab_size=max(decoder.vocab_size, tokenizer_size))
  tokens = decoder.vocab_size
  padded = -(-tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
  return dataclasses.replace(model, decoder=dataclasses.replace(decoder, vocab_size=padded),
                             num_predicted_tokens=tokens if padded != tokens else 0)


def make_model(config: RunConfig, tokenizer: tokenizer_lib.Tokenizer) -> lrr.LRRModel:
  """The run's model; its vocabulary and positions must hold the tokenizer and the text."""
  pretrained = config.model.init_from
  config_ = model_config(config, tokenizer.vocab_size if pretrained else 0)
  vocab = hf_opt.read_config(pretrained).vocab_size if pretrained else config.data.vocab_size
  where = "the OPT at config.model.init_from" if pretrained else "config.data.vocab_size"
  own_tokens = tokenizer.base_size if pretrained else tokenizer.vocab_size  # added tags get new rows
  if own_tokens > vocab:
    raise ValueError(f"The tokenizer {tokenizer.source} has {own_tokens} tokens, more than the "
                     f"model's vocabulary of {vocab} ({where}).")
  positions_error = text_positions_error(config, config_)
  if positions_error:
    raise ValueError(positions_error)
  return lrr.LRRModel(config_)


def text_positions_error(config: RunConfig, model: lrr.LRRConfig) -> str:
  """Why the longest prompt plus the evaluation's budget do not fit `model`'s positions ('' if they do)."""
  text_length = config.data.max_length + config.eval.max_new_tokens
  if text_length <= model.decoder.max_positions:
    return ""
  where = ("the OPT at config.model.init_from" if config.model.init_from else
           "the model (config.model.decoder.max_positions, else max(256, this sum))")
  return (f"config.data.max_length + config.eval.max_new_tokens = {text_length} exceeds the "
          f"{model.decoder.max_positions} positions of {where}.")


def variable_shapes(model: lrr.LRRModel) -> dict[str, Any]:
  """{"params": shapes, "batch_stats": shapes ({} without BatchNorm)}: `model`'s variables as pytrees of shape
  tuples, computed without allocating them."""
  tokens = np.zeros((1, 2), np.int32)
  video = np.zeros((1, 2, 32, 32, 3), np.uint8)
  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), tokens, tokens, tokens + 1, tokens, video))
  return {c: jax.tree.map(lambda x: tuple(x.shape), dict(abstract.get(c, {}))) for c in ("params", "batch_stats")}


def param_shapes(model: lrr.LRRModel) -> Any:
  """The shape of every parameter of `model` (a pytree of tuples), computed without allocating them."""
  return variable_shapes(model)["params"]


def insert_pretrained(config: RunConfig, variables: dict[str, Any]) -> dict[str, Any]:
  """A fresh model's variables with the pretrained weights the config names: with `model.init_from`, the
  decoder's are the local Hugging Face OPT's (but the rows of the tags the tokenizer appended after its own
  tokens, which start fresh); with `model.video.static_init_from` / `motion_init_from`, that
  video stream's params and BatchNorm statistics are the ResNet checkpoint's. Unchanged objects without any."""
  params = variables["params"]
  if config.model.init_from:
    layout = config.model.architecture().decoder  # scanned or not, as the run's params
    scanned = dict(scan_layers=True, cross_attention_layers=layout.cross_attention_layers)
    _, pretrained = hf_opt.load_hf_opt(config.model.init_from, **(scanned if layout.scan_layers else {}))
    logging.info("Decoder initialised from %s", config.model.init_from)
    tokenizer = tokenizer_lib.load(config.data.tokenizer or config.model.init_from)
    tags = range(tokenizer.base_size, tokenizer.vocab_size)  # the ids `tokenizer_lib.load` appended
    params = hf_opt.insert_pretrained(params, pretrained, fresh_rows=tags)
  return resnet_weights.insert_pretrained_backbones(
      {"params": params, "batch_stats": variables["batch_stats"]},
      {s: config.model.stream_init_from(s) for s in resnet_weights.STREAMS}, config.model.architecture().video)


# Evaluation and search.

def make_evaluator(config: RunConfig, model: lrr.LRRModel, source, tokenizer: tokenizer_lib.Tokenizer,
                   dataset: str | None = None) -> evaluator_lib.Evaluator:
  """The evaluator a run config describes (`data.*`, `eval.*`) on a held-out source of `dataset` (default:
  the run's first)."""
  return evaluator_lib.Evaluator(model, tokenizer, source, dataset or config.sources()[0].dataset,
                                 config.data.variant, config.data.max_length, config.eval.max_new_tokens,
                                 config.eval.batch_size, config.eval.num_classes, frames=config.video_shape())


def make_run_evaluator(config: RunConfig, model: lrr.LRRModel, test_sources: dict[str, Any],
                       tokenizer: tokenizer_lib.Tokenizer):
  """The evaluation of a run over its held-out sources by name (`build_data`'s): the one dataset's
  `Evaluator`, or for a mixture each dataset's, scored per dataset (`evaluation.mixture.PerDataset`)."""
  run_sources = {s.name: s for s in config.sources()}
  evaluators = {name: make_evaluator(config, model, source, tokenizer, run_sources[name].dataset)
                for name, source in test_sources.items()}
  if len(evaluators) == 1:
    return next(iter(evaluators.values()))
  return mixture_eval.PerDataset(evaluators)


# Scorers by name (`config.search.scorer`, `--scorer(s)`): `judge` (the model's next token " 1" / " 2"),
# `release_judge` (the LLaVA-CoT release's judge: generated "Since ..., I choose response [1/2].", a correctness
# check at REASONING), `likelihood`, and `oracle` (ours: the example's true rationale checks each candidate,
# `evaluation.oracle`; only where the example has one, e.g. held-out records).
SCORERS = {"judge": scorers.Judge, "likelihood": scorers.Likelihood, "oracle": scorers.Oracle,
           "release_judge": release_judge.ReleaseJudge}


def make_scorer(name: str, config: RunConfig, dataset: str | None = None) -> scorers.Scorer:
  """The scorer `name` of SCORERS for a run: the oracle's check reads the facts of `dataset` (default: the
  run's first)."""
  if name == "oracle":
    return scorers.Oracle(functools.partial(oracle.reference_score, dataset or config.sources()[0].dataset))
  return SCORERS[name]()


def search_config(config: RunConfig, **overrides: Any) -> tuple[search.SearchConfig, scorers.Scorer]:
  """The search `config.search` describes, with `overrides` of its keys (None: the config's), and its scorer
  by name."""
  section = run_config_lib.flat_search(config.search)
  unknown = sorted(set(overrides) - set(section))
  if unknown:
    raise ValueError(f"Unknown search setting(s) {unknown}; config.search has {sorted(section)}.")
  section.update({k: v for k, v in overrides.items() if v is not None})
  if section["scorer"] not in SCORERS:
    raise ValueError(f"config.search.scorer={section['scorer']!r}; expected one of {sorted(SCORERS)}.")
  searched = run_config_lib.search_from_flat(section)
  return searched, make_scorer(searched.scorer, config)
