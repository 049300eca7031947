"""Evaluate params on held-out records: greedy generation, then each task's metrics from the generated text.

CATER: top-1, top-5 and L1 grid distance of the snitch's cell; Something-Else: top-1 and top-5 of the action
class; ACRE: accuracy per split and query type; STAR: accuracy per question type, `accuracy` their mean (the
paper's overall) and `accuracy_pooled` over all questions. Top-5 ranks the task's
closed answer set by the model's likelihood after its own rationale (`inference.ranking`).

Bounds: `config.data.max_length + config.eval.max_new_tokens` must fit the model's positions (checked at
construction); each batch's prompts, budget and answer ranking are checked before it runs, and its decode state
against memory, each with an error naming the record or the config keys.

Compilations: prompts are padded to a multiple of `PROMPT_WIDTH_MULTIPLE` tokens and a last, partial batch
to the batch's rows (repeating its last record; the repeats are dropped), so the programs compiled are bounded
by the prompt widths, not one per batch.

Stopping: `should_stop() -> bool` (e.g. a SIGTERM flag) is called after each batch; when it returns True while
records remain, the evaluation ends there and the scores cover the records done, with `num_examples` and
`partial: 1` added (keys present only on a partial evaluation).

Per record: `Evaluator.evaluate` also gives each record's value of every score that is a mean over records
(`task_outcomes`; top-5's hit), as `evaluation.outcomes` lines, so that intervals can resample records. The
scoring of responses (`score_records`, with `rank_answers` for top-5) is also the scaling table's
(`lrr_jax.scaling`), which scores searched responses.

Grounding: every task with per-frame facts also scores the facts each response states against the record's own
rationale, and the answer by case (`evaluation.grounding`: `grounding/*`, `top1/<case>`, `count/<case>`).
"""
import dataclasses
from typing import Any, Callable, Sequence

from absl import logging
import jax
import numpy as np
import tqdm

from lrr_jax.data import boxes
from lrr_jax.data import encoding
from lrr_jax.data import frame_codec
from lrr_jax.data import pipeline
from lrr_jax.data import rationales
from lrr_jax.data import records
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.worlds import cater
from lrr_jax.evaluation import answers as answers_eval
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.evaluation import grounding
from lrr_jax.evaluation import outcomes as outcomes_lib
from lrr_jax.evaluation import sharding
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import ranking
from lrr_jax.train import distributed

CATER_DATASETS = ("generated_cater", "cater")
# Prompts are left-padded to a multiple of this many tokens (at most config.data.max_length), and every batch of
# one evaluation to the same number of rows, so an evaluation compiles a few programs, not one per batch.
PROMPT_WIDTH_MULTIPLE = 64
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


def top_k_hits(logprobs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """int[B]: 1 where a row's label is among its k most likely candidates (float[B, K] log-probabilities)."""
  top = np.argsort(-logprobs, axis=1, kind="stable")[:, :k]
  return np.array([label in row for label, row in zip(labels, top)], np.int64).reshape(-1)


def top_k_accuracy(logprobs: np.ndarray, labels: np.ndarray, k: int) -> float:
  """Share of rows whose label is among the k most likely candidates (float[B, K] log-probabilities)."""
  return float(np.mean(top_k_hits(logprobs, labels, k)))


@dataclasses.dataclass
class Evaluation:
  """An evaluation's scores, responses (by dataset for a mixture) and per-record lines (`outcomes.rows`)."""
  scores: dict[str, float]
  responses: list[str] | dict[str, list[str]]
  examples: list[dict[str, Any]]


class Evaluator:
  """Greedy generation on a test source and the task's scores; jitted once, reusable during training."""

  def __init__(self, model, tokenizer: tokenizer_lib.Tokenizer, source: Any, dataset: str, variant: str,
               max_length: int, max_new_tokens: int, batch_size: int, num_classes: int = 0,
               frames: tuple[int, int] | None = None, memory_limit_bytes: int | None = None):
    """frames: (num_frames, resolution) that videos are fitted to, as the training pipeline fits them.

    max_length, max_new_tokens, batch_size: `config.data.max_length`, `config.eval.max_new_tokens`,
    `config.eval.batch_size`. memory_limit_bytes: a batch's decode-state limit (`generate.check_memory`).
    """
    positions = model.config.decoder.max_positions
    if max_length + max_new_tokens > positions:
      raise ValueError(f"config.data.max_length {max_length} + config.eval.max_new_tokens {max_new_tokens} = "
                       f"{max_length + max_new_tokens} > the {positions} positions of the model "
                       "(model.config.decoder.max_positions); lower one of them.")
    self.frames, self.memory_limit_bytes = frames, memory_limit_bytes
    self.tokenizer, self.source, self.dataset, self.variant = tokenizer, source, dataset, variant
    self.max_length, self.max_new_tokens, self.batch_size = max_length, max_new_tokens, batch_size
    self.generator = generate_lib.Generator(model, max_length + max_new_tokens, tokenizer.frame_markers(),
                                            tokenizer.token_id("<CONCLUSION>"))
    self.candidates = answer_candidates(dataset, num_classes)
    self.ranking_tokens = ranking_tokens(tokenizer, self.candidates)

  def __call__(self, variables, num_examples: int | None = None,
               should_stop: Callable[[], bool] | None = None) -> tuple[dict[str, float], list[str]]:
    """(scores, responses) of `evaluate`."""
    evaluation = self.evaluate(variables, num_examples, should_stop)
    return evaluation.scores, evaluation.responses

  def evaluate(self, variables, num_examples: int | None = None,
               should_stop: Callable[[], bool] | None = None) -> Evaluation:
    """Scores, responses and per-record lines over the first `num_examples` test records (all when None).

    variables: the model's ({"params": ..., and "batch_stats" for BatchNorm backbones}).
    With several processes each generates for every P-th record (`sharding.my_records`) with the whole variables
    (gathered if sharded across hosts) and all get every response and score; all must call this.
    should_stop: called after each batch (by every process, in step); True ends the evaluation there, with
    `num_examples` (records done) and `partial` (1) added to the scores.
    """
    count = len(self.source) if not num_examples else min(num_examples, len(self.source))
    variables = distributed.whole_arrays(variables)
    mine = sharding.my_records(count)
    rows = {i: self.source[i] for i in mine}
    examples = {i: records.read_example(rows[i], self.variant, f"test record {i}") for i in mine}
    responses, logprobs = [], []
    per_process = -(-count // jax.process_count())
    rows_per_batch = min(self.batch_size, max(per_process, 1))  # every batch of this evaluation: one shape
    for start in tqdm.trange(0, per_process, self.batch_size, desc="evaluate", unit="batch", leave=False):
      batch = mine[start:start + self.batch_size]  # empty on a process with fewer records: it still keeps step
      if batch:
        padded = batch + batch[-1:] * (rows_per_batch - len(batch))  # a partial batch: its last record repeated
        video = np.stack([self._video(rows[i], i) for i in padded])
        prompts = [encoding.encode_prompt(examples[i], self.tokenizer) for i in padded]
        self._check_batch(prompts, padded, video.shape[1], first=start == 0)
        tokens, texts = self._generate(variables, video, prompts)
        responses += texts[:len(batch)]
        if self.candidates:
          ranked = self._rank(variables, video, [examples[i] for i in padded], prompts, tokens)
          logprobs.append(ranked[:len(batch)])
      if should_stop is not None and start + self.batch_size < per_process and should_stop():
        logging.warning("Evaluation stopped by should_stop after %d of %d records.",
                        start + self.batch_size, per_process)
        count = min(count, (start + self.batch_size) * jax.process_count())
        break
    done = sharding.my_records(count)
    responses = sharding.gather_texts(responses[:len(done)], count)
    everything = [rows[i] if i in rows else self.source[i] for i in range(count)]  # each record read once
    read = [examples[i] if i in examples else records.read_example(r, self.variant, f"test record {i}")
            for i, r in enumerate(everything)]
    ranked = None
    if self.candidates:
      local = np.concatenate(logprobs)[:len(done)] if logprobs else np.zeros((0, len(self.candidates)))
      ranked = sharding.gather_rows(local, count)
    scored = score_records(self.dataset, responses, everything, read, ranked)
    scores = dict(scored.scores)
    if count < (len(self.source) if not num_examples else min(num_examples, len(self.source))):
      scores.update(num_examples=count, partial=1)
    lines = outcomes_lib.rows(range(count), scored.per_record, scored.groups, responses)
    return Evaluation(scores, responses, lines)

  def _check_batch(self, prompts, indices: Sequence[int], num_frames: int, first: bool) -> None:
    """Before a batch runs: each prompt fits `max_length` and, with the budget and the answer ranking, the
    model's positions; the (first) batch's decode state fits in memory. Errors name the record and config keys."""
    positions = self.generator.max_positions
    for index, (prompt, _) in zip(indices, prompts):
      need = len(prompt) + self.max_new_tokens + self.ranking_tokens
      if len(prompt) > self.max_length or need > positions:
        raise ValueError(f"Test record {index}: a prompt of {len(prompt)} tokens (config.data.max_length "
                         f"{self.max_length}) + config.eval.max_new_tokens {self.max_new_tokens} + "
                         f"{self.ranking_tokens} to rank the answers = {need}; it must fit the {positions} "
                         "positions of the model (model.config.decoder.max_positions).")
    if first:
      rows, config = len(prompts), self.generator.model.config
      needed = generate_lib.decode_state_bytes(config, rows, self.generator.cache_length,
                                               num_frames * config.video.grid_size, rows)
      generate_lib.check_memory(needed, f"config.eval.batch_size={self.batch_size}: {rows} rows of "
                                f"{self.generator.cache_length} cache slots (config.data.max_length + "
                                "config.eval.max_new_tokens)", self.memory_limit_bytes)

  def _video(self, record, index: int) -> np.ndarray:
    if self.frames is None:
      return frame_codec.decode(record, source=f"test record {index}")
    return pipeline.record_video(record, *self.frames, f"test record {index}")[0]

  def _generate(self, variables, video: np.ndarray, prompts) -> tuple[list[list[int]], list[str]]:
    """The greedy responses' tokens (without the final `</s>`) and texts; prompts as `encode_prompt` gives."""
    prompt = generate_lib.left_pad([p for p, _ in prompts], [f for _, f in prompts], self.tokenizer.pad_id,
                                   PROMPT_WIDTH_MULTIPLE, self.max_length)
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
    return rank_answers(self.generator, self.tokenizer, variables, video, examples, prompts, responses,
                        self.candidates, self.memory_limit_bytes)


def answer_markers(tokenizer: tokenizer_lib.Tokenizer) -> list[list[int]]:
  """The word `answer`'s token sequences (with and without a leading space): a response is ranked from its last."""
  return [tokenizer.encode("answer"), tokenizer.encode(" answer")]


def ranking_tokens(tokenizer: tokenizer_lib.Tokenizer, candidates: Sequence[str] | None) -> int:
  """The positions ranking needs past a response, at most: an `answer` marker and the longest candidate with
  its ending token (1), all but its last token (0 without candidates)."""
  if not candidates:
    return 0
  return max(len(m) for m in answer_markers(tokenizer)) + max(len(tokenizer.encode(f" {c}")) for c in candidates)


def rank_answers(generator: generate_lib.Generator, tokenizer: tokenizer_lib.Tokenizer, variables,
                 video: np.ndarray, examples: Sequence[rationales.Example], prompts, responses: Sequence[list[int]],
                 candidates: Sequence[str], memory_limit_bytes: int | None = None) -> np.ndarray:
  """float[B, K]: each candidate answer's log-probability after each example's response (token ids, cut after
  its last `answer` word), followed by what ends an answer in training text (`answer_ending`).

  video: uint8[B, T, H, W, 3]; prompts: (tokens, frame indices) per example, as `encoding.encode_prompt` gives.
  """
  ending = answer_ending(examples[0], tokenizer)
  tokens = [tokenizer.encode(f" {c}") + ending for c in candidates]
  continuations = [ranking.answer_prefix(r, answer_markers(tokenizer)) for r in responses]
  return ranking.candidate_logprobs(generator, variables, video, prompts, continuations, tokens,
                                    tokenizer.pad_id, memory_limit_bytes)


@dataclasses.dataclass
class RecordScores:
  """Responses to held-out records scored: `scores` (means, grouped means, grounding), `per_record` (name ->
  float or int [N], each record's value of every score that is a mean over records; NaN: no such facts) and
  `groups` (key -> each record's value: ACRE's query_type, STAR's question_type, CATER's snitch cases)."""
  scores: dict[str, float]
  per_record: dict[str, np.ndarray]
  groups: dict[str, list[str]]


def score_records(dataset: str, responses: Sequence[str], rows: Sequence[dict[str, Any]],
                  examples: Sequence[rationales.Example], ranked: np.ndarray | None = None) -> RecordScores:
  """Everything the evaluation scores of `responses` to the held-out records `rows` (read in the evaluated
  variant as `examples`): the task's outcomes (`task_outcomes`, `outcome_scores`), top1_ranked and top5 from
  `ranked`, float[N, K] log-probabilities of the closed answer set (`rank_answers`; None: not ranked), and the
  grounding (`record_grounding`). The evaluator's scores, and the scaling table's (`lrr_jax.scaling`)."""
  labels = np.array([int(r["label"]) for r in rows])
  metadata = [records.read_metadata(r) for r in rows]
  per_record = task_outcomes(dataset, responses, [e.answer for e in examples], labels,
                             [e.response_text for e in examples])
  scores = outcome_scores(dataset, per_record, metadata)
  if ranked is not None:
    per_record.update(top1_ranked=top_k_hits(ranked, labels, 1), top5=top_k_hits(ranked, labels, 5))
    scores.update(top1_ranked=top_k_accuracy(ranked, labels, 1), top5=top_k_accuracy(ranked, labels, 5))
  looked = record_grounding(dataset, responses, examples, rows, per_record)
  per_record.update(looked.per_record)
  scores.update(looked.scores)
  return RecordScores(scores, per_record, {**record_groups(dataset, metadata), **looked.groups})


def headline_outcome(dataset: str) -> str:
  """The per-record outcome that scores the task's answer (a mean over records): top1 (CATER, Something-Else),
  accuracy (ACRE) or accuracy_pooled (STAR, whose reported `accuracy` is the mean over question types)."""
  if dataset in CATER_DATASETS or dataset == "something_else":
    return "top1"
  return "accuracy_pooled" if dataset == "star" else "accuracy"


def task_scores(dataset: str, responses: Sequence[str], answers: Sequence[str], labels: np.ndarray,
                metadata: Sequence[dict[str, Any]], references: Sequence[str] = ()) -> dict[str, float]:
  """The task's scores of generated `responses` against the reference answers (labels: int classes, CATER's
  cells): the means of `task_outcomes`, with the grouped scores of `outcome_scores`."""
  return outcome_scores(dataset, task_outcomes(dataset, responses, answers, labels, references), metadata)


def task_outcomes(dataset: str, responses: Sequence[str], answers: Sequence[str], labels: np.ndarray,
                  references: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """Per response, by name: CATER's top1, l1 and well_formed; otherwise accuracy (Something-Else: top1; STAR:
  accuracy_pooled) and well_formed, and with the reference rationales of a dataset written with boxes
  (Something-Else's `boxes` configs) box_iou, the detections' IoU (`boxes.detection_iou`)."""
  if dataset in CATER_DATASETS:
    return cater_eval.cater_outcomes(list(responses), labels)
  per_record = answers_eval.answer_outcomes(responses, answers)
  if dataset == "something_else":
    per_record["top1"] = per_record.pop("accuracy")
    ious = [boxes.detection_iou(r, ref) for r, ref in zip(responses, references)]
    if ious and all(i is not None for i in ious):
      per_record["box_iou"] = np.array(ious, np.float64)
  if dataset == "star":  # its accuracy is a mean over question types, not over records
    per_record["accuracy_pooled"] = per_record.pop("accuracy")
  return per_record


def outcome_scores(dataset: str, per_record: dict[str, np.ndarray], metadata: Sequence[dict[str, Any]]
                   ) -> dict[str, float]:
  """The task's scores from its per-record outcomes (`task_outcomes`): each one's mean; the answer accuracy
  per group of the records' `metadata` (ACRE's split and query type, STAR's question type); STAR's accuracy as
  the mean over its question types (the paper's overall); chance where the task has a fixed one."""
  scores = {name: float(values.sum() / max(len(values), 1)) for name, values in per_record.items()}
  if dataset in CATER_DATASETS:
    return {**scores, "chance_top1": 1.0 / cater.GRID ** 2}
  scores.update(answers_eval.group_means(per_record[headline_outcome(dataset)], record_groups(dataset, metadata)))
  if dataset in ("generated_acre", "acre"):
    scores["chance"] = 1.0 / 3
  if dataset == "star":
    scores["accuracy"] = answers_eval.mean_over_group(scores, "question_type", answers_eval.STAR_QUESTION_TYPES)
  return scores


def record_grounding(dataset: str, responses: Sequence[str], examples: Sequence[rationales.Example],
                     rows: Sequence[dict[str, Any]], per_record: dict[str, np.ndarray]) -> grounding.Grounding:
  """`grounding.evaluate` of the responses against the evaluated variant's rationales (`examples`), the answer
  (`headline_outcome`) split by the cases of each record's full rationale (its own where it has none)."""
  def full_text(row, example):
    try:
      return records.read_example(row, "full").response_text
    except ValueError:
      return example.response_text
  correct = per_record[headline_outcome(dataset)]
  return grounding.evaluate(dataset, responses, [e.response_text for e in examples],
                            [full_text(r, e) for r, e in zip(rows, examples)], correct)


def record_groups(dataset: str, metadata: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
  """{group key: each record's value} of the keys the task's scores are grouped by (`GROUP_KEYS`)."""
  keys = GROUP_KEYS.get(dataset, ())
  return {key: [str(m.get(key)) for m in metadata] for key in keys if metadata and key in metadata[0]}


def answer_ending(example: rationales.Example, tokenizer: tokenizer_lib.Tokenizer) -> list[int]:
  """The token that follows the answer in training text (`</CONCLUSION>`, or `</s>` when nothing follows)."""
  texts = [s.text for s in example.response]
  last = max(i for i, text in enumerate(texts) if text.endswith(f"answer {example.answer}"))
  following = [t for text in texts[last + 1:] for t in tokenizer.encode(text)]
  return following[:1] or [tokenizer.eos_id]
