"""The LLaVA-CoT release's judge as a scorer, beside `scorers.Judge`: modelled on the release's judge; prompts ours.

As the release does (/work/shared/papers/README.md): a knockout tournament of random pairs (N - 1 comparisons,
`scorers.Judge`'s); each pair is shown to the model itself with a stage-specific judge prompt (per stage for
stage-level search, a whole-answer prompt for best-of-N, a next-sentence prompt for sentence-level search) that
asks for an answer in the form "Since [reason], I choose response [1/2]."; the model generates text and the
choice is parsed from it. At the REASONING stage each candidate first gets a text-only correctness check (no
video), and candidates judged incorrect are dropped before the tournament unless all are.

Ours (we do not have the release's prompt texts): the rubrics (`RUBRICS`) and the check's question
(`CHECK_QUESTION`); greedy decoding; at most `max_judge_tokens` tokens per comparison, which also stops at `</s>`
or once "response 1" / "response 2" is written, and `max_check_tokens` per check. A comparison whose text has
no "I choose response 1/2" is decided at random (the tournament's generator), a check whose text has no yes or
no keeps its candidate; both are counted (`ReleaseJudge.counts`, and a note per step in `Context.notes`).
A round's comparisons are one batched generation sharing the prompt's cache, as are the checks (the release
runs one `generate` per comparison). `Ranking.judge_tokens` counts every prompt token read and token generated.

Bounds: the texts shown are cut to fit the model's positions with the tokens to generate
(`scorers.fit_prompts`, a note says so); each batch's decode state is checked against memory first.
"""
import collections
import re
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import scorers

Candidate, Context, Ranking = scorers.Candidate, scorers.Context, scorers.Ranking

RUBRICS = {  # ours: what a good text of each step is
    "SUMMARY": "A good summary says what the question asks and outlines the steps that answer it, without "
               "answering it yet.",
    "CAPTION": "A good caption describes what the video shows that the question needs: the objects, where "
               "they are in each frame and how they move, and nothing that is not there.",
    "REASONING": "A good reasoning goes step by step from the caption to the answer, every step correct and "
                 "following from the ones before.",
    "CONCLUSION": "A good conclusion states, briefly and exactly, the answer that the reasoning reaches.",
    "response": "A good response answers the question correctly, its summary, caption, reasoning and "
                "conclusion correct and consistent with each other.",
    "sentence": "A good next sentence is correct and brings the response closer to the answer.",
}
ANSWER_FORM = 'Which response is better? Answer in the form "Since [reason], I choose response [1/2]."'
CHECK_QUESTION = "Is this reasoning correct? Answer yes or no:"  # ours
CHOICE = re.compile(r"I choose response\s*\[?\s*([12])\b", re.IGNORECASE)
VERDICT = re.compile(r"\b(yes|not correct|incorrect|correct|no)\b", re.IGNORECASE)
WIDTH_MULTIPLE = 32  # prompts and caches padded to multiples of this: few compiled shapes

# generate(context, shared tokens, row tokens, with_video, max_tokens, stops) -> (texts, tokens generated)
Generate = Callable[[Context, list[int], list[list[int]], bool, int, list[list[int]]], tuple[list[str], int]]


def parse_choice(text: str) -> int | None:
  """0 for "I choose response 1", 1 for "... 2" (the first such phrase); None when there is none."""
  match = CHOICE.search(text)
  return None if match is None else int(match.group(1)) - 1


def parse_verdict(text: str) -> bool | None:
  """The check's answer: True for yes / correct, False for no / incorrect / not correct (the first such word);
  None when there is none."""
  match = VERDICT.search(text)
  return None if match is None else match.group(1).lower() in ("yes", "correct")


def rubric(stage: str) -> str:
  """The judge's rubric of a step by name ('SUMMARY'..., 'response', 'sentence 3')."""
  return RUBRICS.get(stage.split()[0], RUBRICS["response"])


def pair_prompt(context: Context, stage: str, prefix: str | None) -> tuple[str, str]:
  """The judge's prompt in two parts: what all pairs of a step share, and the template of one pair
  (`prefix` None: the pairs continue different prefixes, which go into the template)."""
  pair = " Response 1: {} Response 2: {} Judgement:"
  if prefix is None:
    return f"{context.question} {rubric(stage)} {ANSWER_FORM}", " Response so far: {}" + pair
  return f"{context.question} Response so far: {prefix} {rubric(stage)} {ANSWER_FORM}", "{}" + pair


def check_prompt(candidate: Candidate) -> str:
  """One candidate's text-only correctness check, after the shared question."""
  return f" Response so far: {candidate.prefix} Reasoning: {candidate.text} {CHECK_QUESTION}"


class ReleaseJudge:
  """The release's judge (see the module). `generate` (default: the model, greedily) produces the texts.

  counts: over the searches it ranked: comparisons, unparsed (decided at random), checked, dropped,
  check_unparsed (kept).
  """

  def __init__(self, generate: Generate | None = None, max_judge_tokens: int = 64, max_check_tokens: int = 8):
    self.generate = generate or model_generate
    self.max_judge_tokens, self.max_check_tokens = max_judge_tokens, max_check_tokens
    self.counts = collections.Counter()

  def rank(self, context, stage, candidates, rng) -> Ranking:
    keep, tokens = list(range(len(candidates))), 0
    if stage.split()[0] == "REASONING" and len(candidates) > 1:
      keep, tokens = self.precheck(context, stage, candidates)
    compare = lambda ctx, st, pairs: self.compare(ctx, st, pairs, rng)
    inner = scorers.Judge(compare).rank(context, stage, [candidates[i] for i in keep], rng)
    dropped = [i for i in range(len(candidates)) if i not in keep]
    return Ranking([keep[i] for i in inner.order] + dropped, None,
                   [(keep[a], keep[b], keep[w]) for a, b, w in inner.comparisons], tokens + inner.judge_tokens)

  def compare(self, context: Context, stage: str, pairs: list[tuple[Candidate, Candidate]],
              rng: np.random.Generator) -> tuple[list[int], int]:
    """The model's choice in each pair, parsed from its text (unparseable: at random); tokens read + written."""
    tokenizer = context.tokenizer
    texts = {t for pair in pairs for c in pair for t in (c.prefix, c.text)}
    shared, rows = scorers.fit_prompts(context, stage, texts, lambda cut: _pair_tokens(context, stage, pairs, cut),
                                       self.max_judge_tokens)
    stops = [[tokenizer.eos_id], tokenizer.encode(" response 1"), tokenizer.encode(" response 2")]
    outputs, generated = self.generate(context, shared, rows, True, self.max_judge_tokens, stops)
    choices = [parse_choice(text) for text in outputs]
    unparsed = sum(c is None for c in choices)
    self.counts.update(comparisons=len(pairs), unparsed=unparsed)
    if unparsed:
      context.notes.append(f"{stage}: {unparsed} of {len(pairs)} judge outputs had no 'I choose response 1/2'; "
                           "decided at random.")
    winners = [int(rng.integers(2)) if c is None else c for c in choices]
    return winners, len(shared) + sum(map(len, rows)) + generated

  def precheck(self, context: Context, stage: str, candidates: Sequence[Candidate]) -> tuple[list[int], int]:
    """(the candidates the text-only check does not judge incorrect, or all if it judges all so; tokens)."""
    texts = {t for c in candidates for t in (c.prefix, c.text)}
    shared, rows = scorers.fit_prompts(context, f"{stage} check", texts,
                                       lambda cut: _check_tokens(context, candidates, cut), self.max_check_tokens)
    outputs, generated = self.generate(context, shared, rows, False, self.max_check_tokens,
                                       [[context.tokenizer.eos_id]])
    verdicts = [parse_verdict(text) for text in outputs]
    keep = [i for i, v in enumerate(verdicts) if v is not False]
    dropped = len(candidates) - len(keep) if keep else 0
    unparsed = sum(v is None for v in verdicts)
    self.counts.update(checked=len(candidates), dropped=dropped, check_unparsed=unparsed)
    context.notes.append(f"{stage}: the correctness check dropped {dropped} of {len(candidates)} candidates"
                         f"{' (it judged all incorrect: all kept)' if not keep else ''}; {unparsed} checks had no "
                         "yes or no (kept).")
    return keep or list(range(len(candidates))), len(shared) + sum(map(len, rows)) + generated


def _pair_tokens(context: Context, stage: str, pairs: list[tuple[Candidate, Candidate]], cut: int | None
                 ) -> tuple[list[int], list[list[int]]]:
  """(shared prompt tokens, each pair's tokens) with every text cut to `cut` tokens (None: whole)."""
  tokenizer = context.tokenizer
  clip = lambda text, keep_end: scorers.clip_text(tokenizer, text, cut, keep_end)
  one_prefix = len({c.prefix for pair in pairs for c in pair}) == 1
  shared_text, template = pair_prompt(context, stage, clip(pairs[0][0].prefix, True) if one_prefix else None)
  rows = [tokenizer.encode(template.format("" if one_prefix else clip(a.prefix, True), clip(a.text, False),
                                           clip(b.text, False))) for a, b in pairs]
  return [tokenizer.eos_id] + tokenizer.encode(shared_text), rows


def _check_tokens(context: Context, candidates: Sequence[Candidate], cut: int | None
                  ) -> tuple[list[int], list[list[int]]]:
  tokenizer = context.tokenizer
  clipped = [Candidate(scorers.clip_text(tokenizer, c.prefix, cut, True),
                       scorers.clip_text(tokenizer, c.text, cut, False), c.mean_logprob, c.stopped)
             for c in candidates]
  return ([tokenizer.eos_id] + tokenizer.encode(context.question),
          [tokenizer.encode(check_prompt(c)) for c in clipped])


def model_generate(context: Context, shared: list[int], rows: list[list[int]], with_video: bool,
                   max_tokens: int, stops: list[list[int]]) -> tuple[list[str], int]:
  """The model's greedy continuation of each row after the shared prompt (read once, its cache shared by the
  rows), with the encoded video or text only; (texts, tokens generated)."""
  tokenizer, generator = context.tokenizer, context.generator
  width = -(-max(len(r) for r in rows) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
  tokens = np.full((len(rows), width), tokenizer.pad_id, np.int32)
  segments = np.zeros((len(rows), width), np.int32)
  for i, row in enumerate(rows):
    tokens[i, width - len(row):], segments[i, width - len(row):] = row, 1
  prompt = generate_lib.left_pad([shared], [[context.last_frame] * len(shared)], tokenizer.pad_id, WIDTH_MULTIPLE)
  length = prompt["tokens"].shape[1] + width + -(-max_tokens // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
  visual = context.visual if with_video else None
  visual_tokens = 0 if visual is None else visual.tokens.shape[1]
  generate_lib.check_memory(
      generate_lib.decode_state_bytes(generator.model.config, len(rows), length, visual_tokens),
      f"The release judge's {len(rows)} rows (SearchConfig.num_candidates) of {length} cache slots",
      context.memory_limit_bytes)
  state = generator.start(context.variables, prompt, visual, cache_length=length)
  state = generate_lib.select_rows(state, [0] * len(rows))
  state = generator.extend(context.variables, state, jnp.asarray(tokens), context.last_frame, segments)
  _, sampled = generator.sample(context.variables, state, jax.random.key(0),
                                jnp.asarray(generate_lib.stop_table(stops)), context.last_frame,
                                max_new_tokens=max_tokens)
  lengths = np.asarray(sampled.lengths)
  texts = [tokenizer.decode(row[:n]) for row, n in zip(np.asarray(sampled.tokens), lengths)]
  return texts, int(lengths.sum())
