"""A trained run's inference: its held-out examples and a user's video as the model's input, cached generators,
searchers and surrogate-task questions (`lrr_jax.infer`, `lrr_jax.scaling`, the notebooks)."""
import pathlib
from typing import Any

import numpy as np

from lrr_jax import run_config
from lrr_jax import run_objects
from lrr_jax import run_records
from lrr_jax.data import encoding
from lrr_jax.data import pipeline
from lrr_jax.data import records
from lrr_jax.data import surrogate
from lrr_jax.data.builders import video_files
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import scorers
from lrr_jax.inference import search
from lrr_jax.inference import surrogate_answer

Run = run_records.Run


def test_source(run: Run, source: run_config.Source | None = None):
  """The held-out split (`data.eval_split`, default test) of the run's dataset `source` (default: its first) as
  a random-access TFDS data source."""
  source = source or run.config.sources()[0]
  return run_objects.dataset_builder(run.config, run.data_dir, source).as_data_source(source.eval_split)


def read_test_example(run: Run, source, index: int) -> dict[str, Any]:
  """Prompt ids and frames, the question text, the video, the label of held-out record `index`, the
  surrogate-task facts its rationale states (`surrogate.facts`) and that true rationale in the run's variant
  (`reference`: what `scorers.Oracle` checks candidates against)."""
  if not 0 <= index < len(source):
    raise IndexError(f"Test example {index} does not exist; the test split has {len(source)} records.")
  record = source[index]
  example = records.read_example(record, run.config.data.variant, f"test record {index}")
  prompt, frames = encoding.encode_prompt(example, run.tokenizer)
  video = pipeline.record_video(record, *run.config.video_shape(), f"test record {index}")[0]
  return dict(prompt=prompt, frames=frames, question=" ".join(s.text for s in example.question), video=video,
              label=int(record["label"]), answer=example.answer, facts=surrogate.facts(example),
              reference=example.response_text)


def video_prompt(run: Run, path: str | pathlib.Path, question: str) -> dict[str, Any]:
  """A user's video file as the run's model sees its input (frames sampled evenly, resized) and the prompt."""
  num_frames, resolution = run.config.video_shape()
  frames, _ = video_files.decode_video(pathlib.Path(path), resolution, num_frames=num_frames)  # refused if fewer
  video = pipeline.fit_frames(np.stack(frames), num_frames, resolution, str(path))[0]
  prompt = [run.tokenizer.eos_id] + run.tokenizer.encode(question)
  return dict(prompt=prompt, frames=[num_frames - 1] * len(prompt), question=question, video=video, label=None,
              reference=None)


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
