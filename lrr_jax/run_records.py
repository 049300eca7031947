"""The records of a run directory: `run.json` (what `load_run` rebuilds the run from: the config, the tokenizer's
path, the data directory, the inputs' fingerprints; and a record of each start), `results.json`, and the
migrations that let run.json files of earlier versions load in today's schema.
"""
import dataclasses
import json
import pathlib
from typing import Any

from lrr_jax import run_config as run_config_lib
from lrr_jax import run_objects
from lrr_jax import files
from lrr_jax.data import fingerprints
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.models import lrr
from lrr_jax.train import checkpoint
from lrr_jax.train import distributed
from lrr_jax.train import metrics as metrics_lib
from lrr_jax.train import trainer

RUN_FILE = "run.json"
RunConfig = run_config_lib.RunConfig
# config.search as runs written before the section existed searched (then `search_defaults()` of the library).
SEARCH_BEFORE_SECTION = dict(strategy="stage_beam", num_candidates=4, beam=1, scorer="judge", temperature=0.6,
                             top_k=0, top_p=0.9, max_new_tokens=256, max_step_tokens=256, max_retries=4, seed=0,
                             backtrack_cutoff=None)


@dataclasses.dataclass
class Run:
  workdir: pathlib.Path
  config: RunConfig
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


def write_run_file(workdir: str | pathlib.Path, values: dict[str, Any], tokenizer: tokenizer_lib.Tokenizer,
                   start: dict[str, Any], inputs: dict[str, dict[str, str]] | None = None) -> None:
  """`<workdir>/run.json`: what `load_run` rebuilds the run from (the latest config's `values`, as the config
  file and command line gave them; the tokenizer, the data directory, the `inputs`' fingerprints) and `starts`,
  the record of every start of the run: this one is `start` (e.g. its time, command line, the step it resumed
  from, the keys it changed) with its config, after the earlier ones. Written atomically."""
  values = json.loads(json.dumps(values))
  earlier = read_run_file(run_file(workdir))
  starts = (earlier["starts"] if earlier else []) + [{**start, "config": values}]
  directory = run_objects.data_dir(RunConfig.from_config_dict(values), workdir)
  files.write_atomic(run_file(workdir), json.dumps(
      {"config": values, "tokenizer": tokenizer.source, "data_dir": directory,
       **({"inputs": inputs} if inputs else {}), "starts": starts}, indent=2))


def record_in_start(workdir: str | pathlib.Path, **fields: Any) -> None:
  """Add `fields` to run.json's latest start (e.g. `micro_batches`: what grad_accum_steps=0 chose)."""
  meta = read_run_file(run_file(workdir))
  if meta is None:
    raise FileNotFoundError(f"No {RUN_FILE} in {workdir} to record {sorted(fields)} in.")
  meta["starts"][-1].update(json.loads(json.dumps(fields)))
  files.write_atomic(run_file(workdir), json.dumps(meta, indent=2))


def run_inputs(config: RunConfig, tokenizer_source: str, directory: str,
               names: tuple[str, ...] | None = None) -> dict[str, dict[str, str]]:
  """Fingerprints (`data.fingerprints`) of the run's inputs by name: the tokenizer, `model.init_from`,
  `model.video.<stream>_init_from` (those set) and each dataset (`data:<name>`) under `directory`; `names`:
  only those."""
  inputs = {"tokenizer": (tokenizer_source, "file"), "model.init_from": (config.model.init_from, "tree"),
            **{f"model.video.{s}_init_from": (config.model.stream_init_from(s), "tree") for s in ("static", "motion")}}
  inputs = {name: value for name, value in inputs.items() if value[0] and (names is None or name in names)}
  for source in config.sources():
    if names is None or f"data:{source.name}" in names:
      inputs[f"data:{source.name}"] = (run_objects.dataset_builder(config, directory, source).data_dir, "dataset")
  return fingerprints.fingerprint(inputs)


def config_values(meta: dict[str, Any]) -> dict[str, Any]:
  """run.json's config in today's schema (a copy). Before every DecoderConfig field sat under `model.decoder`,
  `model.dropout_rate` and `model.gate_init` (absent: 0.0) were beside it and the positions were recorded as
  `max_positions`; they move under `model.decoder`. `model.decoder.remat` (a bool) is now
  `remat_policy='full'`. A run without `search` searched with `SEARCH_BEFORE_SECTION`."""
  config = json.loads(json.dumps(meta["config"]))
  model = config["model"]
  decoder = model.setdefault("decoder", {})
  if "dropout_rate" in model or "gate_init" in model or "max_positions" in meta:
    for key in ("dropout_rate", "gate_init"):
      decoder.setdefault(key, model.pop(key, 0.0))
  if decoder.pop("remat", None) and decoder.get("remat_policy") in (None, "none"):
    decoder["remat_policy"] = "full"
  config.setdefault("search", dict(SEARCH_BEFORE_SECTION))
  if "max_positions" in meta and meta["max_positions"] != RunConfig.from_config_dict(config).max_positions():
    decoder.setdefault("max_positions", meta["max_positions"])
  return config


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
  return files.as_path(workdir) / distributed.process_file_name("results.json")


def earlier_results(workdir) -> list[dict]:
  """Every results.json the workdir had, oldest first: the current one and those it kept."""
  path = results_file(workdir)
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
  config = RunConfig.from_config_dict(config_values(meta))
  recorded = meta.get("inputs") or {}  # a run.json from before fingerprints has none
  fingerprints.check(recorded, run_inputs(config, meta["tokenizer"], meta["data_dir"], tuple(recorded)),
                     str(workdir), accept_changed_inputs)
  tokenizer = tokenizer_lib.load(meta["tokenizer"])
  model = lrr.LRRModel(run_objects.model_config(config, tokenizer.vocab_size))
  check_embedding_rows(model.config, tokenizer)
  variables, step = checkpoint.restore_variables(workdir / "ckpt", run_objects.variable_shapes(model), step)
  variables = trainer.model_variables(variables["params"], variables["batch_stats"])
  return Run(workdir, config, model, variables, tokenizer, step, meta["data_dir"])


def check_embedding_rows(model: lrr.LRRConfig, tokenizer: tokenizer_lib.Tokenizer) -> None:
  """Refuse a tokenizer whose ids reach past the model's (unpadded) embedding rows."""
  rows = model.num_predicted_tokens or model.decoder.vocab_size
  if tokenizer.vocab_size > rows:
    raise ValueError(f"The tokenizer {tokenizer.source} has {tokenizer.vocab_size} tokens, more than the "
                     f"{rows} embedding rows of the run's model: it is not the tokenizer the run was trained with.")
