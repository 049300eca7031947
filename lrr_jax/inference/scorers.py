"""Scorers that rank a search step's candidates.

- `Likelihood`: the model's mean log-probability per token (free: accumulated while sampling).
- `Reward`: a user's function, e.g. a verifier or a reward model: `fn(question, prefix, candidate, stage)`.
- `Judge`: the model judges its own candidates pairwise, as the LLaVA-CoT release does: a knockout
  tournament of random pairs (N-1 comparisons); each round's comparisons are one batch. The judge prompt
  asks which response is better and ends with "I choose response"; the model's choice is the likelier of
  " 1" and " 2" as the next token (the release generates "Since ..., I choose response [1/2]." and parses it:
  `release_judge.ReleaseJudge` does so).
- `Oracle` (ours): `check(response so far, reference)` against the example's own true rationale
  (`Context.reference`); `run_objects` gives it `evaluation.oracle`'s: the answer right, then the facts stated
  right minus those stated wrong. The ceiling of what a scorer can add to a search, where the example's truth is
  known (held-out records).
Likelihood, Reward and Oracle are absolute (their scores can be compared with a backtracking cutoff); Judge is not.

Bounds: Likelihood reads the log-probabilities accumulated while sampling, which `generate.Generator` keeps
inside the model's positions. The judge's prompts embed the candidates: when the longest would not fit the
model's positions, every text shown to the judge is cut to the same number of tokens (the response so far
keeps its end, each candidate its start, "..." marks a cut) and a note says so (`Context.notes`); a question
too long to fit even with empty texts is an error. Its batch is checked against memory first.
"""
import dataclasses
from typing import Any, Callable, Protocol, Sequence

import jax.numpy as jnp
import numpy as np

from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.inference import generate as generate_lib

JUDGE_QUESTIONS = {  # per step (ours: one question per stage, as the release has a prompt per stage)
    "SUMMARY": "Which summary better outlines the steps needed to answer the question?",
    "CAPTION": "Which caption describes the video more accurately, with the facts the question needs?",
    "REASONING": "Which reasoning is more correct and leads to the answer?",
    "CONCLUSION": "Which conclusion answers the question correctly?",
    "response": "Which response answers the question better?",
    "sentence": "Which next sentence is more correct and more useful for answering the question?",
}


@dataclasses.dataclass
class Candidate:
  prefix: str  # the kept text this candidate continues
  text: str  # the candidate's own new text
  mean_logprob: float
  stopped: bool  # ended at the step's stop (not the token budget)


@dataclasses.dataclass
class Ranking:
  order: list[int]  # candidate indices, best first
  scores: list[float] | None  # absolute scores, or None for a tournament
  comparisons: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # (a, b, winner)
  judge_tokens: int = 0  # tokens the judge read and generated


@dataclasses.dataclass
class Context:
  """What a scorer may use: the model with its encoded video, and the question."""
  generator: generate_lib.Generator
  tokenizer: tokenizer_lib.Tokenizer
  variables: Any
  visual: Any
  question: str
  last_frame: int
  memory_limit_bytes: int | None = None  # see generate.check_memory
  notes: list[str] = dataclasses.field(default_factory=list)  # what a scorer had to change to fit, said aloud
  reference: str | None = None  # the example's true rationale, where known (a held-out record's): `Oracle`'s


class Scorer(Protocol):
  def rank(self, context: Context, stage: str, candidates: Sequence[Candidate],
           rng: np.random.Generator) -> Ranking: ...


def _order(scores: Sequence[float]) -> list[int]:
  return [int(i) for i in np.argsort(-np.asarray(scores, np.float64), kind="stable")]


class Likelihood:
  """Length-normalised log-likelihood under the model."""

  def rank(self, context, stage, candidates, rng) -> Ranking:
    scores = [c.mean_logprob for c in candidates]
    return Ranking(_order(scores), scores)


class Reward:
  """A user's reward: `fn(question, prefix, candidate, stage) -> float`, higher is better."""

  def __init__(self, fn: Callable[[str, str, str, str], float]):
    self.fn = fn

  def rank(self, context, stage, candidates, rng) -> Ranking:
    scores = [float(self.fn(context.question, c.prefix, c.text, stage)) for c in candidates]
    return Ranking(_order(scores), scores)


class Oracle:
  """Ranks candidates by `check(prefix + candidate, reference) -> float` (higher is better) against the example's
  true rationale `Context.reference` (ours: a ceiling, not a method; `run_objects` builds its check from
  `evaluation.oracle`). Refuses, naming why, a search whose example has no reference (a user's own video)."""

  def __init__(self, check: Callable[[str, str], float]):
    self.check = check

  def rank(self, context, stage, candidates, rng) -> Ranking:
    if context.reference is None:
      raise ValueError("The oracle scorer needs the example's true rationale (Context.reference, the `reference` "
                       "of a search): held-out records have one (lrr_jax.scaling, lrr_jax.infer --example), a "
                       "video of your own has none; use another scorer.")
    scores = [float(self.check(c.prefix + c.text, context.reference)) for c in candidates]
    return Ranking(_order(scores), scores)


Compare = Callable[[Context, str, list[tuple[Candidate, Candidate]]], tuple[list[int], int]]


class Judge:
  """Knockout tournament of random pairs; `compare` (default: the model itself) judges a round at once.

  `compare(context, stage, pairs) -> (winners, tokens_read)`, winners[i] in {0, 1} for pairs[i].
  The order returned is the winner, then candidates by the round they lost in (later first).
  """

  def __init__(self, compare: Compare | None = None):
    self.compare = compare or model_compare

  def rank(self, context, stage, candidates, rng) -> Ranking:
    alive, lost_in, comparisons, tokens, round_index = list(range(len(candidates))), {}, [], 0, 0
    while len(alive) > 1:
      shuffled = [int(i) for i in rng.permutation(alive)]
      pairs = list(zip(shuffled[0::2], shuffled[1::2]))
      winners, read = self.compare(context, stage, [(candidates[a], candidates[b]) for a, b in pairs])
      tokens += read
      alive = [pair[w] for pair, w in zip(pairs, winners)] + shuffled[2 * len(pairs):]
      for (a, b), w in zip(pairs, winners):
        lost_in[(a, b)[1 - w]] = round_index
        comparisons.append((a, b, (a, b)[w]))
      round_index += 1
    order = alive + sorted(lost_in, key=lambda i: -lost_in[i])
    return Ranking(order, None, comparisons, tokens)


def judge_prompt(context: Context, stage: str, prefix: str | None) -> tuple[str, str]:
  """The judge's prompt in two parts: what all pairs of a step share, and the template of one pair
  (`prefix` None: the pairs continue different prefixes, which go into the template)."""
  question = JUDGE_QUESTIONS.get(stage.split()[0], JUDGE_QUESTIONS["response"])
  pair = " Response 1: {} Response 2: {} Since both were read, I choose response"
  if prefix is None:
    return f"{context.question} {question}", " Response so far: {}" + pair
  return f"{context.question} Response so far: {prefix} {question}", "{}" + pair


def model_compare(context: Context, stage: str, pairs: list[tuple[Candidate, Candidate]]
                  ) -> tuple[list[int], int]:
  """The model judges all pairs in one batch: the likelier of ' 1' and ' 2' after the judge prompt.

  The shared part of the prompt (question, response so far, the stage's judge question) is read once and its
  cache shared by all pairs, as the candidates share the video's. Texts are cut to fit (see the module).
  """
  tokenizer, generator = context.tokenizer, context.generator
  shared, rows, choices = fit_judge_prompts(context, stage, pairs)
  width = -(-max(len(r) for r in rows) // 32) * 32
  tokens = np.full((len(rows), width), tokenizer.pad_id, np.int32)
  segments = np.zeros((len(rows), width), np.int32)
  for i, row in enumerate(rows):
    tokens[i, width - len(row):], segments[i, width - len(row):] = row, 1
  prompt = generate_lib.left_pad([shared], [[context.last_frame] * len(shared)], tokenizer.pad_id, 32)
  length = prompt["tokens"].shape[1] + width + 32
  visual_tokens = 0 if context.visual is None else context.visual.tokens.shape[1]
  generate_lib.check_memory(
      generate_lib.decode_state_bytes(generator.model.config, len(rows), length, visual_tokens),
      f"The judge's {len(rows)} comparisons (SearchConfig.num_candidates / 2) of {length} cache slots",
      context.memory_limit_bytes)
  state = generator.start(context.variables, prompt, context.visual, cache_length=length)
  state = generate_lib.select_rows(state, [0] * len(rows))
  state = generator.extend(context.variables, state, jnp.asarray(tokens), context.last_frame, segments)
  logits = np.asarray(state.logits)
  winners = [int(row[b] > row[a]) for row, (a, b) in zip(logits, choices)]
  return winners, len(shared) + sum(len(r) for r in rows)


def fit_judge_prompts(context: Context, stage: str, pairs: list[tuple[Candidate, Candidate]]
                      ) -> tuple[list[int], list[list[int]], list[tuple[int, int]]]:
  """(shared prompt tokens, each pair's tokens, each pair's (' 1', ' 2') choice tokens) within the model's
  positions: as written when they fit, else with every text cut to the most tokens that fit (a note in
  `context.notes`). Raises a ValueError when even empty texts do not fit."""
  texts = {t for pair in pairs for c in pair for t in (c.prefix, c.text)}
  return fit_prompts(context, stage, texts, lambda cut: _judge_tokens(context, stage, pairs, cut))


def fit_prompts(context: Context, stage: str, texts: set[str], build: Callable[[int | None], tuple],
                reserve: int = 0) -> tuple:
  """`build(cut)` (whose first two items are the shared prompt's tokens and each row's) with every one of
  `texts` cut to `cut` tokens: None (whole) when the shared prompt, the longest row and `reserve` tokens to be
  generated fit the model's positions, else the largest cut that fits (a note in `context.notes`). Raises a
  ValueError when even empty texts do not fit."""
  limit = context.generator.max_positions
  fits = lambda built: len(built[0]) + max(len(r) for r in built[1]) + reserve <= limit
  built = build(None)
  if fits(built):
    return built
  low, high = 0, max(len(context.tokenizer.encode(t)) for t in texts)
  generated = f" and {reserve} tokens to generate" if reserve else ""
  if not fits(build(low)):
    raise ValueError(f"The judge's prompt for {stage}{generated} does not fit the {limit} positions of the model "
                     "(model.config.decoder.max_positions) even with empty responses: the question is too long.")
  while low < high:  # the largest cut that fits
    middle = (low + high + 1) // 2
    low, high = (middle, high) if fits(build(middle)) else (low, middle - 1)
  cut = sum(len(context.tokenizer.encode(t)) > low for t in texts)
  context.notes.append(f"{stage}: the judge was shown {cut} of {len(texts)} texts cut to {low} tokens each (the "
                       f"response so far keeps its end, candidates their start) to fit the {limit} positions of "
                       f"the model (model.config.decoder.max_positions){generated}.")
  return build(low)


def clip_text(tokenizer: tokenizer_lib.Tokenizer, text: str, cut: int | None, keep_end: bool) -> str:
  """`text` cut to its last (`keep_end`) or first `cut` tokens, "..." marking the cut (None: whole)."""
  ids = tokenizer.encode(text)
  if cut is None or len(ids) <= cut:
    return text
  return "..." + tokenizer.decode(ids[len(ids) - cut:]) if keep_end else tokenizer.decode(ids[:cut]) + "..."


def _judge_tokens(context: Context, stage: str, pairs: list[tuple[Candidate, Candidate]], cut: int | None
                  ) -> tuple[list[int], list[list[int]], list[tuple[int, int]]]:
  """The judge's tokens (see `fit_judge_prompts`) with every text cut to `cut` tokens (None: whole)."""
  tokenizer = context.tokenizer
  clip = lambda text, keep_end: clip_text(tokenizer, text, cut, keep_end)
  one_prefix = len({c.prefix for pair in pairs for c in pair}) == 1
  shared_text, template = judge_prompt(context, stage, clip(pairs[0][0].prefix, True) if one_prefix else None)
  shared = [tokenizer.eos_id] + tokenizer.encode(shared_text)
  rows, choices = [], []
  for first, second in pairs:
    text = template.format("" if one_prefix else clip(first.prefix, True), clip(first.text, False),
                           clip(second.text, False))
    one, two = tokenizer.encode(text + " 1"), tokenizer.encode(text + " 2")
    common = next(i for i, (x, y) in enumerate(zip(one, two)) if x != y)
    rows.append(one[:common])
    choices.append((one[common], two[common]))
  return shared, rows, choices
