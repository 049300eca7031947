"""Checks of a run config before a run starts: values that would train wrongly or fail late, and changes that
resuming a workdir's checkpoint would silently mix into it.

`validate(config, num_devices, num_processes)` lists every bad value, each naming its key (`check` raises them
together): unknown keys and wrong types (`run_config.RunConfig.from_config_dict`), then values out of range, then
a model that cannot hold its prompts or whose BatchNorm backbones have neither weights nor `from_scratch`; it
needs no data and compiles nothing. `check_resume` compares the config that wrote a checkpoint
with the one resuming it and refuses any change but those of `FREE_ON_RESUME`, unless
`config.resume_with_changes`.
"""
import dataclasses
import json
import math
import pathlib
from typing import Any, Mapping

import ml_collections

from lrr_jax import files
from lrr_jax import run_config
from lrr_jax import run_objects
from lrr_jax.data import datasets
from lrr_jax.train import partitioning

ConfigDict = ml_collections.ConfigDict
RunConfig = run_config.RunConfig
ConfigError = run_config.ConfigError

# Keys that may differ between the run that wrote a checkpoint and a run resuming it: what is logged, saved,
# evaluated or searched, and how the same updates are laid out (processes, mesh, micro-batches, remat, loss
# chunks), equal up to float rounding, and how many threads and buffers read the data (the batches are the same).
# A section's name covers its keys. Everything else (seed, data, world, model, batch_size,
# num_steps, which sets the schedule's optimizer.total_steps, optimizer) changes the arithmetic.
# eval.max_new_tokens is free unless it changes the positions of a model trained from scratch
# (`RunConfig.max_positions`).
FREE_ON_RESUME = ("log_every", "checkpoint.every", "checkpoint.keep", "eval", "search", "distributed", "mesh",
                  "grad_accum_steps", "device_memory_gib", "model.remat_policy", "model.decoder.remat_policy",
                  "model.video.remat_policy", "model.video.static_backbone.remat_policy",
                  "model.video.motion_backbone.remat_policy", "model.loss_chunk_size", "resume_with_changes",
                  "profile", "peak_flops_per_device", "compilation_cache_dir", "data.read_threads",
                  "data.prefetch_buffer", "data.worker_buffer")
_ABSENT = "<absent>"


# Values.

def _lookup(config: RunConfig, key: str) -> Any:
  """`config.<key>` (dotted; a section may be a dataclass or a mapping), or None if absent."""
  value = config
  for part in key.split("."):
    value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
  return value


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_keys(config: RunConfig) -> list[str]:
  keys = ["num_steps", "batch_size", "log_every", "optimizer.lr", "optimizer.clip_norm",
          "data.max_length", "eval.batch_size", "eval.max_new_tokens", "checkpoint.keep", "data.read_threads",
          "data.worker_buffer"]
  if config.frames_from_world:
    keys += ["data.num_train", "data.num_eval", "world.num_frames", "world.resolution"]
  else:
    keys += ["data.num_frames", "data.resolution"]
  if not (config.data.tokenizer or config.model.init_from):
    keys.append("data.vocab_size")  # the BPE trained on the data
  return keys


NON_NEGATIVE = ("grad_accum_steps", "device_memory_gib", "optimizer.warmup_steps", "optimizer.weight_decay",
                "checkpoint.every", "eval.every", "eval.num_examples", "data.worker_count", "data.prefetch_buffer")


def range_errors(config: RunConfig) -> list[str]:
  """Values outside their range: counts, sizes and rates that must be > 0 or >= 0, Adam's betas in [0, 1)."""
  bounds = [(key, lambda v: v > 0, "must be > 0") for key in _positive_keys(config)]
  bounds += [(key, lambda v: v >= 0, "must be >= 0") for key in NON_NEGATIVE]
  bounds += [(key, lambda v: 0 <= v < 1, "must be in [0, 1)") for key in ("optimizer.b1", "optimizer.b2")]
  bounds.append(("optimizer.final_fraction", lambda v: 0 <= v <= 1, "must be in [0, 1]"))
  bounds.append(("data.surrogate_prompt_prob", lambda v: 0 <= v <= 1, "must be in [0, 1]"))
  bounds.append(("data.world_seed", lambda v: v >= -1 and v == int(v), "must be an integer >= -1 (-1: seed)"))
  errors = []
  for key, holds, expected in bounds:
    value = _lookup(config, key)
    if not (_is_number(value) and holds(value)):
      errors.append(f"config.{key}={value!r} {expected}.")
  return errors


def batch_errors(config: RunConfig, num_devices: int, num_processes: int) -> list[str]:
  """The global batch must split evenly over the processes, the data-parallel devices (mesh.data x mesh.fsdp,
  a -1 resolved over `num_devices`) and the micro-batches of gradient accumulation (0: chosen to divide it)."""
  batch, accum = config.batch_size, config.grad_accum_steps
  try:
    sizes = partitioning.mesh_sizes(config.mesh.shape(), num_devices)
  except ValueError as e:
    return [f"config.mesh: {e}"]
  if not (_is_number(batch) and batch > 0 and _is_number(accum) and accum >= 0):
    return []  # range_errors names them
  errors = []
  if batch % num_processes:
    errors.append(f"config.batch_size={batch} (the global batch) does not divide over the {num_processes} "
                  "processes.")
  parallel = sizes["data"] * sizes["fsdp"]
  if batch % parallel:
    errors.append(f"config.batch_size={batch} does not divide over the {parallel} data-parallel devices "
                  f"(mesh.data={sizes['data']}, mesh.fsdp={sizes['fsdp']}).")
  if accum and batch % accum:
    errors.append(f"config.grad_accum_steps={accum} does not divide config.batch_size={batch} into equal "
                  "micro-batches.")
  return errors


def position_errors(config: RunConfig) -> list[str]:
  """The model config must build (known keys; the OPT at model.init_from readable) and hold the longest prompt
  plus the evaluation's budget."""
  try:
    model = run_objects.model_config(config)
  except (ValueError, OSError) as e:
    return [str(e)]
  error = run_objects.text_positions_error(config, model)
  return [error] if error else []


# Torchvision's ImageNet file of the recipe's backbones, by depth (for the advice of `backbone_errors`).
TORCHVISION_FILES = {18: "resnet18-f37072fd.pth", 101: "resnet101-cd907fc2.pth"}


def backbone_errors(config: RunConfig) -> list[str]:
  """Each BatchNorm stream the model builds (static; motion with `two_stream`) must start from a checkpoint
  (`model.video.<stream>_init_from`, local ones present) or be declared from scratch (`model.video.from_scratch`):
  from random weights, BatchNorm statistics that stay as loaded would stay at mean 0, variance 1. GroupNorm
  backbones (the tiny preset) train from scratch by design."""
  try:
    video = config.model.architecture().video
  except (ValueError, TypeError) as e:
    return [str(e)]
  errors = []
  for stream in ("static", "motion") if video.two_stream else ("static",):
    key, backbone = f"config.model.video.{stream}_init_from", getattr(video, f"{stream}_backbone")
    path = config.model.stream_init_from(stream)
    if path and not files.is_remote(path) and not files.as_path(path).exists():
      errors.append(f"{key}={path!r} does not exist.")
    elif not path and backbone.norm == "batch" and not config.model.from_scratch:
      depth = 2 + sum(backbone.stage_sizes) * (3 if backbone.bottleneck else 2)
      example = f" (e.g. {TORCHVISION_FILES[depth]})" if depth in TORCHVISION_FILES else ""
      errors.append(
          f"{key} is not set: the {stream} stream's ResNet-{depth} (BatchNorm) would train from random weights "
          "with its BatchNorm statistics frozen at mean 0, variance 1. Give it an ImageNet checkpoint, "
          f"--{key}=PATH: a torchvision state dict file{example} or a Hugging Face ResNet directory (e.g. "
          f"microsoft/resnet-{depth}'s); or train it from scratch, BatchNorm statistics included: "
          "--config.model.video.from_scratch=True.")
  return errors


def mixture_errors(config: RunConfig) -> list[str]:
  """`data.mixture`'s entries must be (dataset, builder config, weight > 0) of datasets this library writes,
  each once, all generated or all released (their frames come from one place); `data.sources` may only name
  datasets of the mixture."""
  mixture = config.data.mixture
  errors, seen, generated = [], set(), set()
  for i, entry in enumerate(mixture):
    key = f"config.data.mixture[{i}]"
    if not (isinstance(entry, (tuple, list)) and len(entry) == 3):
      errors.append(f"{key}={entry!r} must be a (dataset, builder config, weight) triple.")
      continue
    dataset, builder_config, weight = entry
    problem = datasets.builder_config_error(str(dataset), str(builder_config))
    if problem:
      errors.append(f"{key}: {problem}.")
    if not (_is_number(weight) and weight > 0):
      errors.append(f"{key}: the weight {weight!r} of {dataset}/{builder_config} must be > 0.")
    if (dataset, builder_config) in seen:
      errors.append(f"{key}: {dataset}/{builder_config} is in the mixture twice.")
    seen.add((dataset, builder_config))
    generated.add(str(dataset).startswith("generated_"))
  if len(generated) > 1:
    errors.append("config.data.mixture mixes generated and released datasets; their frames are read from "
                  "config.world and config.data respectively: train on one kind.")
  unknown = sorted(set(config.data.sources) - {d for d, *_ in seen})
  if unknown:
    errors.append(f"config.data.sources names {unknown}, not in config.data.mixture.")
  return errors


def validate(config: RunConfig | ConfigDict, num_devices: int, num_processes: int = 1) -> list[str]:
  """Every error of `config` (typed, or a ConfigDict typed here: its unknown keys and wrong types first) for a
  run over `num_devices` devices in `num_processes` processes (none: [])."""
  if not isinstance(config, RunConfig):
    try:
      config = RunConfig.from_config_dict(config)
    except ConfigError as e:
      return str(e).split("\n  ")[1:]
  errors = (mixture_errors(config) + range_errors(config)
            + batch_errors(config, num_devices, num_processes))
  if not errors:  # the model needs sane sizes to be built
    errors = position_errors(config) or backbone_errors(config)
  return errors


def check(config: RunConfig | ConfigDict, num_devices: int, num_processes: int = 1) -> None:
  """Raise ConfigError listing `validate`'s errors, if any."""
  errors = validate(config, num_devices, num_processes)
  if errors:
    raise ConfigError("Invalid config (nothing was run):\n  " + "\n  ".join(errors))


# Resuming.

def flatten(section: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """A nested config dict as {'optimizer.lr': 0.001, ...}; tuples as lists, nested ones too (as JSON holds
  them, e.g. data.mixture's entries)."""
  flat = {}
  for key, value in section.items():
    if isinstance(value, (dict, ConfigDict)):
      flat.update(flatten(dict(value), f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = json.loads(json.dumps(value)) if isinstance(value, tuple) else value
  return flat


def defaults() -> dict[str, Any]:
  """Every key of a config file with the value a run takes where the key is absent (the typed sections'
  defaults; `search` spelt flat, as in the files). A key added since runs were first written equals it."""
  values = dataclasses.asdict(RunConfig())
  values["search"] = run_config.flat_search(RunConfig().search)
  return flatten(values)


def _world_resolved(flat: dict[str, Any]) -> dict[str, Any]:
  """A flattened config with `data.world_seed` as the seed its world is written with (-1 or absent: `seed`,
  `RunConfig.world_seed`), so that a run of seed 0 given `world_seed=0` resumes one that ran without it."""
  value = flat.get("data.world_seed", -1)
  return {**flat, "data.world_seed": flat.get("seed") if value is None or value < 0 else value}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
  """{key: (old value, new value)} where two configs differ; an absent key equals its default (`defaults`;
  None: a preset's value) or an empty value (a key added since, such as an unset path). `data.world_seed`
  compares (and is reported) as the seed of the world written (`_world_resolved`)."""
  old, new = _world_resolved(flatten(old)), _world_resolved(flatten(new))
  default = defaults()
  changes = {}
  for key in sorted(set(old) | set(new)):
    before, after = old.get(key, default.get(key)), new.get(key, default.get(key))
    if before != after and not (key not in old and after in ("", (), [])):
      changes[key] = (old.get(key, _ABSENT), new.get(key, _ABSENT))
  return changes


def is_free(key: str) -> bool:
  return any(key == free or key.startswith(free + ".") for free in FREE_ON_RESUME)


def _positions(config: dict[str, Any]) -> int | None:
  """The decoder positions of a model trained from scratch (None: a pretrained OPT's own)."""
  typed = RunConfig.from_config_dict(config)
  if typed.model.init_from:
    return None
  return typed.model.decoder.get("max_positions") or typed.max_positions()


def resume_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
  """The changes between configs that change a resumed run's arithmetic (`config_changes` less the free keys)."""
  changes = config_changes(old, new)
  refused = {key: change for key, change in changes.items() if not is_free(key)}
  if "eval.max_new_tokens" in changes and _positions(old) != _positions(new):
    refused["eval.max_new_tokens"] = changes["eval.max_new_tokens"]  # the model's positions change
  return refused


def describe(changes: dict[str, tuple[Any, Any]]) -> str:
  return "; ".join(f"config.{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())


def check_resume(config: ConfigDict, previous: dict[str, Any] | None, step: int | None,
                 workdir: pathlib.Path) -> dict[str, tuple[Any, Any]]:
  """Before resuming the checkpoint at `step` in `workdir` (None: nothing to resume), that `config` changes
  nothing but free keys of `previous` (the config that wrote it, from run.json). Returns every change; raises
  ConfigError naming the refused ones unless `config.resume_with_changes`."""
  new = config.to_dict()
  changes = {} if previous is None else config_changes(previous, new)
  if step is None or config.get("resume_with_changes", False):
    return changes
  advice = (f"use another --workdir, or pass --config.resume_with_changes=True to resume anyway (free to change "
            f"on resume: {', '.join(FREE_ON_RESUME)}).")
  if previous is None:
    raise ConfigError(f"{workdir} has a checkpoint at step {step} but no run.json saying which config wrote it: "
                      + advice)
  refused = resume_changes(previous, new)
  if refused:
    raise ConfigError(f"{workdir} has a checkpoint at step {step} of a run with another config; resuming it "
                      f"would mix the two. Changed: {describe(refused)}. Set them back, {advice}")
  return changes
