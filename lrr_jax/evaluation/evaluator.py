"""Evaluate params on held-out records: greedy generation, then each task's metrics from the generated text.

CATER: top-1, top-5 and L1 grid distance of the snitch's cell; Something-Else: top-1 and top-5 of the action
class; ACRE: accuracy per split and query type; STAR: accuracy per question type. Top-5 ranks the task's
closed answer set by the model's likelihood after its own rationale (`inference.ranking`).
"""
from typing import Any, Sequence

import numpy as np
import tqdm

from lrr_jax.data import encoding
from lrr_jax.data import pipeline
from lrr_jax.data import rationales
from lrr_jax.data import records
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.worlds import cater
from lrr_jax.evaluation import answers as answers_eval
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import ranking

CATER_DATASETS = ("generated_cater", "cater")
GROUP_KEYS = {"generated_acre": ("split", "query_type"), "acre": ("split", "query_type"), "star": ("question_type",)}


def answer_candidates(dataset: str, num_classes: int = 0) -> list[str] | None:
  """The closed answer set that top-5 ranks (None: the task reports accuracy only)."""
  if dataset in CATER_DATASETS:
    return [cater.answer_text(cell) for cell in range(cater.GRID ** 2)]
  if dataset == "something_else":
    if num_classes <= 0:
      raise ValueError("Something-Else top-5 needs config.eval.num_classes (the number of action classes).")
    return [str(c) for c in range(num_classes)]
  return None


def top_k_accuracy(logprobs: np.ndarray, labels: np.ndarray, k: int) -> float:
  """Share of rows whose label is among the k most likely candidates (float[B, K] log-probabilities)."""
  top = np.argsort(-logprobs, axis=1, kind="stable")[:, :k]
  return float(np.mean([label in row for label, row in zip(labels, top)]))


class Evaluator:
  """Greedy generation on a test source and the task's scores; jitted once, reusable during training."""

  def __init__(self, model, tokenizer: tokenizer_lib.Tokenizer, source: Any, dataset: str, variant: str,
               max_length: int, max_new_tokens: int, batch_size: int, num_classes: int = 0,
               frames: tuple[int, int] | None = None):
    """frames: (num_frames, resolution) that videos are fitted to, as the training pipeline fits them."""
    self.frames = frames
    self.tokenizer, self.source, self.dataset, self.variant = tokenizer, source, dataset, variant
    self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
    self.generator = generate_lib.Generator(model, max_length + max_new_tokens, tokenizer.frame_markers(),
                                            tokenizer.token_id("<CONCLUSION>"))
    self.candidates = answer_candidates(dataset, num_classes)

  def __call__(self, params, num_examples: int | None = None) -> tuple[dict[str, float], list[str]]:
    """(scores, responses) over the first `num_examples` test records (all when None)."""
    count = len(self.source) if not num_examples else min(num_examples, len(self.source))
    rows = [self.source[i] for i in range(count)]
    examples = [records.read_example(r, self.variant, f"test record {i}") for i, r in enumerate(rows)]
    labels = np.array([int(r["label"]) for r in rows])
    responses, logprobs = [], []
    for start in tqdm.trange(0, count, self.batch_size, desc="evaluate", unit="batch", leave=False):
      batch = slice(start, start + self.batch_size)
      video = np.stack([self._video(r, start + i) for i, r in enumerate(rows[batch])])
      prompts = [encoding.encode_prompt(e, self.tokenizer) for e in examples[batch]]
      tokens, texts = self._generate({"params": params}, video, prompts)
      responses += texts
      if self.candidates:
        logprobs.append(self._rank({"params": params}, video, examples[batch], prompts, tokens))
    scores = self._scores(responses, examples, labels, [records.read_metadata(r) for r in rows])
    if self.candidates:
      ranked = np.concatenate(logprobs)
      scores.update(top1_ranked=top_k_accuracy(ranked, labels, 1), top5=top_k_accuracy(ranked, labels, 5))
    return scores, responses

  def _video(self, record, index: int) -> np.ndarray:
    frames = np.asarray(record["frames"])
    if self.frames is None:
      return frames
    return pipeline.fit_frames(frames, *self.frames, f"test record {index}")[0]

  def _generate(self, variables, video: np.ndarray, prompts) -> tuple[list[list[int]], list[str]]:
    """The greedy responses' tokens (without the final `</s>`) and texts; prompts as `encode_prompt` gives."""
    prompt = generate_lib.left_pad([p for p, _ in prompts], [f for _, f in prompts], self.tokenizer.pad_id)
    sampled = generate_lib.generate(self.generator, variables, prompt, video, [[self.tokenizer.eos_id]],
                                    self.max_new_tokens)
    tokens = []
    for row, length in zip(np.asarray(sampled.tokens), np.asarray(sampled.lengths)):
      row = row[:length].tolist()
      tokens.append(row[:-1] if row and row[-1] == self.tokenizer.eos_id else row)
    return tokens, [self.tokenizer.decode(t) for t in tokens]

  def _rank(self, variables, video: np.ndarray, examples, prompts, responses: Sequence[list[int]]
            ) -> np.ndarray:
    """float[B, K]: each candidate answer's log-probability after the example's own rationale."""
    markers = [self.tokenizer.encode("answer"), self.tokenizer.encode(" answer")]
    ending = answer_ending(examples[0], self.tokenizer)
    candidates = [self.tokenizer.encode(f" {c}") + ending for c in self.candidates]
    continuations = [ranking.answer_prefix(r, markers) for r in responses]
    return ranking.candidate_logprobs(self.generator, variables, video, prompts, continuations, candidates,
                                      self.tokenizer.pad_id)

  def _scores(self, responses, examples, labels, metadata) -> dict[str, float]:
    if self.dataset in CATER_DATASETS:
      return cater_eval.cater_scores(responses, labels)
    keys = GROUP_KEYS.get(self.dataset, ())
    groups = {key: [str(m.get(key)) for m in metadata] for key in keys if key in metadata[0]}
    scores = answers_eval.answer_accuracy(responses, [e.answer for e in examples], groups)
    if self.dataset == "something_else":
      scores["top1"] = scores.pop("accuracy")
    if self.dataset in ("generated_acre", "acre"):
      scores["chance"] = 1.0 / 3
    return scores


def answer_ending(example: rationales.Example, tokenizer: tokenizer_lib.Tokenizer) -> list[int]:
  """The token that follows the answer in training text (`</CONCLUSION>`, or `</s>` when nothing follows)."""
  texts = [s.text for s in example.response]
  last = max(i for i, text in enumerate(texts) if text.endswith(f"answer {example.answer}"))
  following = [t for text in texts[last + 1:] for t in tokenizer.encode(text)]
  return following[:1] or [tokenizer.eos_id]
