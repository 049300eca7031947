"""From a run config to the objects a run is made of, in one place for every entry point.

`lrr_jax.main` (training), `lrr_jax.infer`, `lrr_jax.evaluation.scaling`, the notebooks and the benchmarks
build their data, model, evaluator and searcher here, so nothing else derives a data directory, a frame shape
or a model config from a config. A run's workdir holds `run.json` (what `load_run` needs to rebuild it: the
config, the tokenizer's path, the data directory; and a record of each start of the run) beside the
checkpoints under `ckpt/`.
"""
import dataclasses
import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from lrr_jax.convert import hf_opt
from lrr_jax.data import encoding
from lrr_jax.data import files
from lrr_jax.data import fingerprints
from lrr_jax.data import pipeline
from lrr_jax.data import prepare
from lrr_jax.data import records
from lrr_jax.data import surrogate
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.builders import video_files
from lrr_jax.evaluation import evaluator as evaluator_lib
from lrr_jax.evaluation import mixture as mixture_eval
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import scorers
from lrr_jax.inference import search
from lrr_jax.inference import surrogate_answer
from lrr_jax.models import lrr
from lrr_jax.train import checkpoint
from lrr_jax.train import distributed
from lrr_jax.train import metrics as metrics_lib
from lrr_jax.train import trainer

RUN_FILE = "run.json"
ConfigDict = ml_collections.ConfigDict


# Data.

def enable_compilation_cache(config: ConfigDict, min_compile_seconds: float = 1.0) -> str:
  """Turn on JAX's persistent compilation cache at `config.compilation_cache_dir` ('' or absent: off, returns
  ''); before the first compile. Programs that compiled in `min_compile_seconds` or more are stored (JAX's
  default 1 s leaves out the many small ones), and a later process compiling the same program on the same
  kind of devices loads it. Local or gs:// (shared by the hosts of a pod)."""
  directory = str(config.get("compilation_cache_dir", "") or "")
  if directory:
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  return directory


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


def sources(config: ConfigDict) -> list[Source]:
  """The run's datasets: `data.mixture`'s (dataset, builder config, weight) entries, or else `data.dataset`
  with `data.builder_config`. A mixture entry's manual_dir and eval_split are `data.sources.<dataset>.*` where
  set, else `data.manual_dir`, `data.eval_split` (`lrr_jax.config_checks` checks the entries)."""
  data = config.data
  manual_dir, eval_split = data.get("manual_dir") or "", data.get("eval_split", "test")
  mixture = data.get("mixture") or ()
  if not mixture:
    return [Source(data.dataset, data.dataset, data.get("builder_config", "tiny"), 1.0, manual_dir, eval_split)]
  names = [dataset for dataset, _, _ in mixture]
  result = []
  for dataset, builder_config, weight in mixture:
    own = (data.get("sources") or {}).get(dataset) or {}
    name = dataset if names.count(dataset) == 1 else f"{dataset}/{builder_config}"
    result.append(Source(name, dataset, builder_config, float(weight), own.get("manual_dir") or manual_dir,
                         own.get("eval_split") or eval_split))
  return result


def frames_from_world(config: ConfigDict) -> bool:
  """Whether the run's frames are a generated world's (`config.world`), not `data.num_frames` / `resolution`."""
  mixture = config.data.get("mixture") or ()
  first = mixture[0][0] if mixture and isinstance(mixture[0], (tuple, list)) else config.data.dataset
  return str(first).startswith("generated_")


def data_dir(config: ConfigDict, workdir: str | pathlib.Path) -> str:
  """Where the run's dataset is written: `data.data_dir`, else `<workdir>/data` (either may be gs://)."""
  return str(files.as_path(config.data.data_dir or files.as_path(workdir) / "data"))


def video_shape(config: ConfigDict) -> tuple[int, int]:
  """(num_frames, resolution) of the model's input: a generated world's, or `data.*` for a released dataset."""
  frames = config.world if frames_from_world(config) else config.data
  return frames.num_frames, frames.resolution


def world_seed(config: ConfigDict) -> int:
  """The seed a generated world is written with: `data.world_seed`, or `seed` where that is -1 (or absent)."""
  value = config.data.get("world_seed", -1)
  return config.seed if value is None or value < 0 else value


def builder_sizes(config: ConfigDict, dataset: str | None = None) -> dict[str, Any]:
  """The keyword arguments of `dataset`'s builder (default: the run's first): a generated CATER world's fields
  and sizes; a generated ACRE's sizes (its world is its split, the builder config), both seeded by `world_seed`;
  a released dataset's frame settings: written at `data.resolution`, stored as `data.frame_format` with
  `data.jpeg_quality` (those the config has)."""
  dataset = dataset or sources(config)[0].dataset
  if not dataset.startswith("generated_"):
    return {key: config.data[key] for key in ("resolution", "frame_format", "jpeg_quality") if key in config.data}
  sizes = dict(num_train=config.data.num_train, num_test=config.data.num_eval, seed=world_seed(config))
  return {**config.world.to_dict(), **sizes} if dataset == "generated_cater" else sizes


def dataset_builder(config: ConfigDict, directory: str, source: Source | None = None):
  """The TFDS builder of one of the run's datasets (default: its first) under `directory` (read from a local
  copy when `directory` is gs://)."""
  source = source or sources(config)[0]
  return prepare.local_builder(source.dataset, source.builder_config, directory,
                               **builder_sizes(config, source.dataset))


# config.data keys that are PipelineConfig fields of the same name (absent: the field's default).
DATA_KEYS = ("brightness_jitter", "contrast_jitter", "worker_count", "worker_buffer", "read_threads",
             "prefetch_buffer", "surrogate_prompt_prob")


def pipeline_config(config: ConfigDict, tokenizer_path: str) -> pipeline.PipelineConfig:
  """The train pipeline of this process (its share of the global `batch_size`)."""
  num_frames, resolution = video_shape(config)
  return pipeline.PipelineConfig(
      tokenizer_path=tokenizer_path, variant=config.data.variant, max_length=config.data.max_length,
      num_frames=num_frames, resolution=resolution, batch_size=distributed.local_batch_size(config.batch_size),
      seed=config.seed, **{key: config.data[key] for key in DATA_KEYS if key in config.data})


def build_data(config: ConfigDict, workdir: str | pathlib.Path):
  """Write the run's datasets if missing (generated worlds, or releases from their manual_dir) and a tokenizer
  (`data.tokenizer` or the OPT's at `model.init_from` if given, else a BPE trained on every dataset's train
  text); return the train pipeline (a mixture by weight), the held-out sources by name and the tokenizer."""
  directory = data_dir(config, workdir)
  given_tokenizer = config.data.get("tokenizer") or config.model.get("init_from")
  run_sources = sources(config)
  vocab_size = 0 if given_tokenizer else config.data.vocab_size
  own_tokenizer = vocab_size if len(run_sources) == 1 else 0  # a mixture's BPE covers all its datasets
  written = [distributed.primary_first(lambda s=s: prepare.prepare(  # written once, by process 0
      s.dataset, s.builder_config, directory, own_tokenizer, s.manual_dir or None,
      **builder_sizes(config, s.dataset))) for s in run_sources]
  builders = [dataset_builder(config, directory, s) for s in run_sources]
  if given_tokenizer:
    tokenizer_path = given_tokenizer
  elif len(run_sources) == 1:
    tokenizer_path = str(written[0] / "tokenizer.json")
  else:
    tokenizer_path = str(distributed.primary_first(
        lambda: prepare.mixture_tokenizer(builders, directory, vocab_size)))
  train_data = pipeline.make_dataset([(s.name, b.as_data_source("train"), s.weight)
                                      for s, b in zip(run_sources, builders)],
                                     pipeline_config(config, tokenizer_path), jax.process_index(),
                                     jax.process_count())
  test_sources = {s.name: b.as_data_source(s.eval_split) for s, b in zip(run_sources, builders)}
  return train_data, test_sources, tokenizer_lib.load(tokenizer_path)


# Model.

def max_positions(config: ConfigDict) -> int:
  """Positions of a model trained from scratch: the longest prompt plus the evaluation's budget (>= 256)."""
  return max(256, config.data.max_length + config.eval.max_new_tokens)


VOCAB_MULTIPLE = 128  # the embedding's rows, padded so that they divide over a tensor-parallel mesh axis


def model_config(config: ConfigDict, tokenizer_size: int = 0) -> lrr.LRRConfig:
  """The model `config.model` describes (`lrr.config_from_dict`), its vocabulary `data.vocab_size`; with
  `model.init_from`, the decoder has that OPT's architecture (a vocabulary grown to `tokenizer_size` for the
  tags the tokenizer added) and the run's own cross-attention, gates, dropout and dtypes. The embedding is
  padded to a multiple of VOCAB_MULTIPLE rows, which are never predicted."""
  model = lrr.config_from_dict(config.model.to_dict(), vocab_size=config.data.vocab_size,
                               max_positions=max_positions(config))
  decoder = model.decoder
  if config.model.get("init_from"):
    decoder = hf_opt.architecture_of(config.model.init_from, decoder)
    decoder = dataclasses.replace(decoder, vocab_size=max(decoder.vocab_size, tokenizer_size))
  tokens = decoder.vocab_size
  padded = -(-tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
  return dataclasses.replace(model, decoder=dataclasses.replace(decoder, vocab_size=padded),
                             num_predicted_tokens=tokens if padded != tokens else 0)


def make_model(config: ConfigDict, tokenizer: tokenizer_lib.Tokenizer) -> lrr.LRRModel:
  """The run's model; its vocabulary and positions must hold the tokenizer and the text."""
  pretrained = config.model.get("init_from")
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


def text_positions_error(config: ConfigDict, model: lrr.LRRConfig) -> str:
  """Why the longest prompt plus the evaluation's budget do not fit `model`'s positions ('' if they do)."""
  text_length = config.data.max_length + config.eval.max_new_tokens
  if text_length <= model.decoder.max_positions:
    return ""
  where = ("the OPT at config.model.init_from" if config.model.get("init_from") else
           "the model (config.model.decoder.max_positions, else max(256, this sum))")
  return (f"config.data.max_length + config.eval.max_new_tokens = {text_length} exceeds the "
          f"{model.decoder.max_positions} positions of {where}.")


def param_shapes(model: lrr.LRRModel) -> Any:
  """The shape of every parameter of `model` (a pytree of tuples), computed without allocating them."""
  return variable_shapes(model)["params"]


def variable_shapes(model: lrr.LRRModel) -> dict[str, Any]:
  """{"params": shapes, "batch_stats": shapes ({} without BatchNorm)}: `model`'s variables as pytrees of shape
  tuples, computed without allocating them."""
  tokens = np.zeros((1, 2), np.int32)
  video = np.zeros((1, 2, 32, 32, 3), np.uint8)
  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), tokens, tokens, tokens + 1, tokens, video))
  return {c: jax.tree.map(lambda x: tuple(x.shape), dict(abstract.get(c, {}))) for c in ("params", "batch_stats")}


# Evaluation and inference.

def make_evaluator(config: ConfigDict, model: lrr.LRRModel, source, tokenizer: tokenizer_lib.Tokenizer,
                   dataset: str | None = None) -> evaluator_lib.Evaluator:
  """The evaluator a run config describes (`data.*`, `eval.*`) on a held-out source of `dataset` (default:
  the run's first)."""
  return evaluator_lib.Evaluator(model, tokenizer, source, dataset or sources(config)[0].dataset,
                                 config.data.variant, config.data.max_length, config.eval.max_new_tokens,
                                 config.eval.batch_size, config.eval.get("num_classes", 0), frames=video_shape(config))


def make_run_evaluator(config: ConfigDict, model: lrr.LRRModel, test_sources: dict[str, Any],
                       tokenizer: tokenizer_lib.Tokenizer):
  """The evaluation of a run over its held-out sources by name (`build_data`'s): the one dataset's
  `Evaluator`, or for a mixture each dataset's, scored per dataset (`evaluation.mixture.PerDataset`)."""
  run_sources = {s.name: s for s in sources(config)}
  evaluators = {name: make_evaluator(config, model, source, tokenizer, run_sources[name].dataset)
                for name, source in test_sources.items()}
  if len(evaluators) == 1:
    return next(iter(evaluators.values()))
  return mixture_eval.PerDataset(evaluators)


SCORERS = {"judge": scorers.Judge, "likelihood": scorers.Likelihood}


def search_defaults() -> ConfigDict:
  """config.search's keys and defaults: stage-level beam search sampled as the LLaVA-CoT release samples
  (temperature 0.6, top-p 0.9), judged by the model itself; `scorer` names one of SCORERS;
  `backtrack_cutoff` (an absolute scorer) resamples a stage scoring below it, at most `max_retries` times."""
  return ConfigDict(dict(
      strategy="stage_beam", num_candidates=4, beam=1, scorer="judge", temperature=0.6, top_k=0, top_p=0.9,
      max_new_tokens=256, max_step_tokens=256, max_retries=4, seed=0,
      backtrack_cutoff=ml_collections.config_dict.placeholder(float)))


def search_config(config: ConfigDict, **overrides: Any) -> tuple[search.SearchConfig, scorers.Scorer]:
  """The search `config.search` describes, with `overrides` (None: the config's), and its scorer by name.
  A run config without a search section (written before it existed) gets `search_defaults()`."""
  section = search_defaults().to_dict()
  section.update(config.search.to_dict() if "search" in config else {})
  unknown = sorted(set(overrides) - set(section))
  if unknown:
    raise ValueError(f"Unknown search setting(s) {unknown}; config.search has {sorted(section)}.")
  section.update({k: v for k, v in overrides.items() if v is not None})
  if section["scorer"] not in SCORERS:
    raise ValueError(f"config.search.scorer={section['scorer']!r}; expected one of {sorted(SCORERS)}.")
  sampling = generate_lib.Sampling(section.pop("temperature"), section.pop("top_k"), section.pop("top_p"))
  scorer = SCORERS[section.pop("scorer")]()
  return search.SearchConfig(sampling=sampling, **section), scorer


# A trained run.

@dataclasses.dataclass
class Run:
  workdir: pathlib.Path
  config: ConfigDict
  model: lrr.LRRModel
  variables: dict[str, Any]  # what `model.apply` takes: {"params": ..., "batch_stats": ... with BatchNorm}
  tokenizer: tokenizer_lib.Tokenizer
  step: int
  data_dir: str

  @property
  def params(self) -> Any:
    return self.variables["params"]


def run_file(workdir: str | pathlib.Path):
  return files.as_path(workdir) / distributed.process_file_name(RUN_FILE)


def read_run_file(path: pathlib.Path) -> dict[str, Any] | None:
  """A run.json as written (None if there is none), with `starts`: a file from before run.json kept them
  ({config, tokenizer, data_dir, maybe max_positions}) reads as one start of unknown time."""
  if not path.is_file():
    return None
  meta = files.read_json(path, expect=dict)
  missing = sorted({"config", "tokenizer", "data_dir"} - set(meta))
  if missing:
    raise ValueError(f"{path} is malformed: it lacks {missing}.")
  meta.setdefault("starts", [dict(time=None, argv=None, resumed_from=None, changes=None, config=meta["config"])])
  return meta


def write_run_file(workdir: str | pathlib.Path, config: ConfigDict, tokenizer: tokenizer_lib.Tokenizer,
                   start: dict[str, Any], inputs: dict[str, dict[str, str]] | None = None) -> None:
  """`<workdir>/run.json`: what `load_run` rebuilds the run from (the latest config, the tokenizer, the data
  directory, the `inputs`' fingerprints) and `starts`, the record of every start of the run: this one is `start`
  (e.g. its time, command line, the step it resumed from, the keys it changed) with its config, after the
  earlier ones. Written atomically."""
  earlier = read_run_file(run_file(workdir))
  starts = (earlier["starts"] if earlier else []) + [{**start, "config": config.to_dict()}]
  files.write_atomic(run_file(workdir), json.dumps(
      {"config": config.to_dict(), "tokenizer": tokenizer.source, "data_dir": data_dir(config, workdir),
       **({"inputs": inputs} if inputs else {}), "starts": starts}, indent=2))


def run_inputs(config: ConfigDict, tokenizer_source: str, directory: str,
               names: tuple[str, ...] | None = None) -> dict[str, dict[str, str]]:
  """Fingerprints (`data.fingerprints`) of the run's inputs by name: the tokenizer, `model.init_from`,
  `model.video.<stream>_init_from` (those set) and each dataset (`data:<name>`) under `directory`; `names`:
  only those."""
  video = config.model.get("video") or {}
  inputs = {"tokenizer": (tokenizer_source, "file"), "model.init_from": (config.model.get("init_from"), "tree"),
            **{f"model.video.{s}_init_from": (video.get(f"{s}_init_from"), "tree") for s in ("static", "motion")}}
  inputs = {name: value for name, value in inputs.items() if value[0] and (names is None or name in names)}
  for source in sources(config):
    if names is None or f"data:{source.name}" in names:
      inputs[f"data:{source.name}"] = (dataset_builder(config, directory, source).data_dir, "dataset")
  return fingerprints.fingerprint(inputs)


def run_config(meta: dict[str, Any]) -> ConfigDict:
  """run.json's config in today's schema. Before every DecoderConfig field sat under `model.decoder`,
  `model.dropout_rate` and `model.gate_init` (absent: 0.0) were beside it and the positions were recorded as
  `max_positions`; they move under `model.decoder`."""
  config = json.loads(json.dumps(meta["config"]))  # a copy
  model = config["model"]
  if "dropout_rate" in model or "gate_init" in model or "max_positions" in meta:
    decoder = model.setdefault("decoder", {})
    for key in ("dropout_rate", "gate_init"):
      decoder.setdefault(key, model.pop(key, 0.0))
    if "max_positions" in meta and meta["max_positions"] != max_positions(ConfigDict(config)):
      decoder.setdefault("max_positions", meta["max_positions"])
  return ConfigDict(config)


def latest_checkpoint(workdir: str | pathlib.Path) -> int | None:
  """The step of the latest checkpoint under `<workdir>/ckpt` (None: none)."""
  directory = files.as_path(workdir) / "ckpt"
  if not directory.is_dir():
    return None
  checkpointer = checkpoint.Checkpointer(directory, save_every=0)
  step = checkpointer.latest_step()
  checkpointer.close()
  return step


def results_file(workdir: str | pathlib.Path):
  """`<workdir>/results.json` (this process's)."""
  return workdir / distributed.process_file_name("results.json")


def earlier_results(workdir) -> list[dict]:
  """Every results.json the workdir had, oldest first: the current one and those it kept."""
  path = results_file(files.as_path(workdir))
  if not path.is_file():
    return []
  earlier = files.read_json(path, expect=dict)
  return earlier.pop("earlier_results", []) + [earlier]


def last_train_metrics(workdir, step: int) -> dict[str, float]:
  """The train metrics a finished run logged at `step` (metrics.jsonl), for a run stopped before results.json."""
  rows = [row for row in metrics_lib.read_jsonl(workdir) if row["step"] == step and "loss" in row]
  return {k: v for k, v in rows[-1].items() if k != "step"} if rows else {}


def load_run(workdir: str | pathlib.Path, step: int | None = None, accept_changed_inputs: bool = False) -> Run:
  """The run in `workdir` at checkpoint `step` (default: the latest). Errors name the missing or bad file; an
  input recorded in run.json (tokenizer, dataset) that changed since is refused (`fingerprints.InputChanged`)
  unless `accept_changed_inputs`, and so is a tokenizer with more tokens than the model's embedding rows."""
  workdir = files.as_path(workdir)
  path = workdir / RUN_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: {workdir} is not a workdir written by lrr_jax.main.")
  meta = read_run_file(path)
  config = run_config(meta)
  recorded = meta.get("inputs") or {}  # a run.json from before fingerprints has none
  fingerprints.check(recorded, run_inputs(config, meta["tokenizer"], meta["data_dir"], tuple(recorded)),
                     str(workdir), accept_changed_inputs)
  tokenizer = tokenizer_lib.load(meta["tokenizer"])
  model = lrr.LRRModel(model_config(config, tokenizer.vocab_size))
  check_embedding_rows(model.config, tokenizer)
  variables, step = checkpoint.restore_variables(workdir / "ckpt", variable_shapes(model), step)
  variables = trainer.model_variables(variables["params"], variables["batch_stats"])
  return Run(workdir, config, model, variables, tokenizer, step, meta["data_dir"])


def check_embedding_rows(model: lrr.LRRConfig, tokenizer: tokenizer_lib.Tokenizer) -> None:
  """Refuse a tokenizer whose ids reach past the model's (unpadded) embedding rows."""
  rows = model.num_predicted_tokens or model.decoder.vocab_size
  if tokenizer.vocab_size > rows:
    raise ValueError(f"The tokenizer {tokenizer.source} has {tokenizer.vocab_size} tokens, more than the "
                     f"{rows} embedding rows of the run's model: it is not the tokenizer the run was trained with.")


def test_source(run: Run):
  """The held-out split (`data.eval_split`, default test) of the run's (first) dataset as a random-access TFDS
  data source."""
  first = sources(run.config)[0]
  return dataset_builder(run.config, run.data_dir, first).as_data_source(first.eval_split)


def read_test_example(run: Run, source, index: int) -> dict[str, Any]:
  """Prompt ids and frames, the question text, the video, the label of held-out record `index` and the
  surrogate-task facts its rationale states (`surrogate.facts`)."""
  if not 0 <= index < len(source):
    raise IndexError(f"Test example {index} does not exist; the test split has {len(source)} records.")
  record = source[index]
  example = records.read_example(record, run.config.data.variant, f"test record {index}")
  prompt, frames = encoding.encode_prompt(example, run.tokenizer)
  video = pipeline.record_video(record, *video_shape(run.config), f"test record {index}")[0]
  return dict(prompt=prompt, frames=frames, question=" ".join(s.text for s in example.question), video=video,
              label=int(record["label"]), answer=example.answer, facts=surrogate.facts(example))


def video_prompt(run: Run, path: str | pathlib.Path, question: str) -> dict[str, Any]:
  """A user's video file as the run's model sees its input (frames sampled evenly, resized) and the prompt."""
  num_frames, resolution = video_shape(run.config)
  frames, _ = video_files.decode_video(pathlib.Path(path), resolution)
  video = pipeline.fit_frames(np.stack(frames), num_frames, resolution, str(path))[0]
  prompt = [run.tokenizer.eos_id] + run.tokenizer.encode(question)
  return dict(prompt=prompt, frames=[num_frames - 1] * len(prompt), question=question, video=video, label=None)


def make_generator(run: Run, cache_length: int) -> generate_lib.Generator:
  """Cached generation with the run's model, applying the frame rule with its tokenizer's markers."""
  return generate_lib.Generator(run.model, cache_length, run.tokenizer.frame_markers(),
                                run.tokenizer.token_id("<CONCLUSION>"))


def search_generator(run: Run, config: search.SearchConfig) -> generate_lib.Generator:
  """A generator for `config`'s searches: its cache holds the longest prompt plus two token budgets (candidates'
  steps included)."""
  return make_generator(run, run.config.data.max_length + 2 * config.max_new_tokens)


def make_searcher(run: Run, config: search.SearchConfig, scorer: scorers.Scorer,
                  generator: generate_lib.Generator | None = None) -> search.Searcher:
  """A searcher on `generator` (default: a new `search_generator`); searches that share one share its compiled
  programs."""
  return search.Searcher(generator or search_generator(run, config), run.tokenizer, config, scorer)


def ask_surrogate(run: Run, example: dict[str, Any], request: str,
                  max_new_tokens: int = 64) -> surrogate_answer.SurrogateAnswer:
  """The run's answer to a surrogate request ('track snitch at frame 5', `surrogate.parse_request`) asked
  after `example`'s question (`read_test_example` or `video_prompt`), as training prompts one."""
  task, frame = surrogate.parse_request(request)
  if frame >= len(example["video"]):
    raise ValueError(f"Surrogate request {request!r} asks about frame {frame}; the model sees frames 0 to "
                     f"{len(example['video']) - 1}.")
  generator = make_generator(run, len(example["prompt"]) + 64 + max_new_tokens)  # 64: room for the request
  return surrogate_answer.ask(generator, run.tokenizer, run.variables, example["video"], example["prompt"],
                              example["frames"], task, frame, max_new_tokens)
