"""A trained run, loaded from its workdir for inference: config, model, params, tokenizer, test examples.

`lrr_jax.main` writes `<workdir>/run.json` (the config, the tokenizer's path, the data directory) and
checkpoints under `<workdir>/ckpt`; only the params are restored.
"""
import dataclasses
import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from lrr_jax.convert import hf_opt
from lrr_jax.data import encoding
from lrr_jax.data import pipeline
from lrr_jax.data import prepare
from lrr_jax.data import records
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.evaluation import evaluator as evaluator_lib
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import scorers
from lrr_jax.inference import search
from lrr_jax.models import lrr


@dataclasses.dataclass
class Run:
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  model: lrr.LRRModel
  params: Any
  tokenizer: tokenizer_lib.Tokenizer
  step: int
  data_dir: str


def load_run(workdir: str | pathlib.Path, step: int | None = None) -> Run:
  """The run in `workdir` at checkpoint `step` (default: the latest). Errors name the missing or bad file."""
  workdir = pathlib.Path(workdir).expanduser().absolute()
  run_file = workdir / "run.json"
  if not run_file.is_file():
    raise FileNotFoundError(f"{run_file} is missing: {workdir} is not a workdir written by lrr_jax.main.")
  try:
    meta = json.loads(run_file.read_text())
    config = ml_collections.ConfigDict(meta["config"])
  except (json.JSONDecodeError, KeyError) as e:
    raise ValueError(f"{run_file} is malformed: {e}") from e
  tokenizer = tokenizer_lib.load(meta["tokenizer"])
  model = lrr.LRRModel(model_config(config, meta["max_positions"], tokenizer.vocab_size))
  params, step = restore_params(workdir / "ckpt", model, step)
  return Run(workdir, config, model, params, tokenizer, step, meta["data_dir"])


def model_config(config: ml_collections.ConfigDict, max_positions: int, tokenizer_size: int = 0
                 ) -> lrr.LRRConfig:
  """The model a run config describes; with `model.init_from`, the decoder has that OPT's architecture
  (sizes, positions, a vocabulary grown to `tokenizer_size` for the tags the tokenizer added) and the run's
  own cross-attention, gates and dropout."""
  model = lrr.config_from_run(config.model.to_dict(), config.data.vocab_size, max_positions)
  if not config.model.get("init_from"):
    return model
  decoder = hf_opt.architecture_of(config.model.init_from, model.decoder)
  decoder = dataclasses.replace(decoder, vocab_size=max(decoder.vocab_size, tokenizer_size))
  return dataclasses.replace(model, decoder=decoder)


def restore_params(directory: pathlib.Path, model: lrr.LRRModel, step: int | None = None) -> tuple[Any, int]:
  """Params of checkpoint `step` (default latest) in `directory`, checked against `model`'s shapes."""
  if not directory.is_dir():
    raise FileNotFoundError(f"No checkpoint directory {directory}.")
  manager = ocp.CheckpointManager(directory)
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise FileNotFoundError(f"No checkpoint {'at all' if step is None else f'for step {step}'} in {directory} "
                            f"(steps: {list(manager.all_steps())}).")
  try:  # as host arrays: whatever mesh or number of processes saved it
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(directory / str(step) / "state").item_metadata
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    params = checkpointer.restore(directory / str(step) / "state", restore_args=as_numpy)["params"]
  except Exception as e:  # orbax raises many kinds on a damaged checkpoint
    raise ValueError(f"Checkpoint {directory / str(step)} cannot be read: {e}") from e
  expected = _param_shapes(model)
  found = jax.tree.map(lambda x: tuple(x.shape), params)
  if expected != found:
    raise ValueError(f"Checkpoint {directory / str(step)} holds params of another model shape than the run "
                     "config describes.")
  return params, step


def _param_shapes(model: lrr.LRRModel) -> Any:
  tokens = np.zeros((1, 2), np.int32)
  video = np.zeros((1, 2, 32, 32, 3), np.uint8)
  abstract = jax.eval_shape(model.init, jax.random.key(0), tokens, tokens, tokens + 1, tokens, video)
  return jax.tree.map(lambda x: tuple(x.shape), nn.unbox(abstract)["params"])


def video_shape(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(num_frames, resolution) of the model's input: a generated world's, or `data.*` for a released dataset."""
  frames = config.world if config.data.dataset.startswith("generated_") else config.data
  return frames.num_frames, frames.resolution


def test_source(run: Run):
  """The run's held-out split (`data.eval_split`, default test) as a random-access TFDS data source."""
  return prepare.run_builder(run.config, run.data_dir).as_data_source(run.config.data.get("eval_split", "test"))


def make_evaluator(config: ml_collections.ConfigDict, model: lrr.LRRModel, source,
                   tokenizer: tokenizer_lib.Tokenizer) -> evaluator_lib.Evaluator:
  """The evaluator a run config describes (`data.*`, `eval.*`) on a test source."""
  return evaluator_lib.Evaluator(model, tokenizer, source, config.data.dataset, config.data.variant,
                                 config.data.max_length, config.eval.max_new_tokens, config.eval.batch_size,
                                 config.eval.get("num_classes", 0), frames=video_shape(config))


def read_test_example(run: Run, source, index: int) -> dict[str, Any]:
  """Prompt ids and frames, the question text, the video and the label of test record `index`."""
  if not 0 <= index < len(source):
    raise IndexError(f"Test example {index} does not exist; the test split has {len(source)} records.")
  record = source[index]
  example = records.read_example(record, run.config.data.variant, f"test record {index}")
  prompt, frames = encoding.encode_prompt(example, run.tokenizer)
  video = pipeline.fit_frames(np.asarray(record["frames"]), *video_shape(run.config), f"test record {index}")[0]
  return dict(prompt=prompt, frames=frames, question=" ".join(s.text for s in example.question), video=video,
              label=int(record["label"]), answer=example.answer)


def make_searcher(run: Run, config: search.SearchConfig, scorer: scorers.Scorer) -> search.Searcher:
  """A searcher whose cache holds the longest prompt plus two token budgets (candidates' steps included)."""
  generator = generate_lib.Generator(run.model, run.config.data.max_length + 2 * config.max_new_tokens,
                                     run.tokenizer.frame_markers(), run.tokenizer.token_id("<CONCLUSION>"))
  return search.Searcher(generator, run.tokenizer, config, scorer)
