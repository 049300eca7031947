"""Inference-time scaling with one interface: greedy, best-of-N, sentence-level and stage-level beam search.

All strategies are one loop of *steps*: from the kept prefix(es), sample `num_candidates` continuations
per beam that stop at the step's end (a stage's closing tag, a sentence's period, the end of text), rank
them with a scorer, keep the best `beam`. The video and prompt are encoded once; candidates share that
cache (`generate.select_rows`) and are decoded as one batch; the judge's comparisons are batched too.

- best_of_n: one step, complete responses.            (LLaVA-CoT: N = 10)
- sentence_beam: steps end at a period or `</CONCLUSION>`.  (LLaVA-CoT: N = 5)
- stage_beam: one step per stage, opened with its tag, ended by its closing tag.  (LLaVA-CoT: N = 10)
With an absolute scorer and `backtrack_cutoff`, stage_beam resamples the previous stage when a stage's best
candidate scores below the cutoff (SWIRES), at most `max_retries` times.
"""
import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import scorers as scorers_lib

STRATEGIES = ("greedy", "best_of_n", "sentence_beam", "stage_beam")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  strategy: str = "stage_beam"
  num_candidates: int = 10  # sampled per kept beam at each step
  beam: int = 1  # candidates kept after each step
  sampling: generate_lib.Sampling = generate_lib.Sampling(temperature=0.6, top_p=0.9)  # the release's
  max_new_tokens: int = 256  # the kept response's budget
  max_step_tokens: int = 128  # one stage's or sentence's budget
  backtrack_cutoff: float | None = None  # stage_beam with an absolute scorer: resample below this score
  max_retries: int = 4
  seed: int = 0

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f"SearchConfig.strategy={self.strategy!r}; expected one of {STRATEGIES}.")
    if self.beam < 1 or self.num_candidates < 1:
      raise ValueError(f"SearchConfig.beam={self.beam} and num_candidates={self.num_candidates} must be >= 1.")


@dataclasses.dataclass
class Step:
  """One search step as it happened: what was sampled, how it scored, what was kept."""
  name: str
  candidates: list[str]
  scores: list[float] | None
  kept: list[int]
  comparisons: list[tuple[int, int, int]]  # (a, b, winner) judged by a tournament
  num_tokens: list[int] = dataclasses.field(default_factory=list)  # each candidate's sampled tokens
  backtracked: bool = False


@dataclasses.dataclass
class SearchResult:
  text: str  # the kept response (without the final </s>)
  steps: list[Step]
  generated_tokens: int  # every sampled token, all candidates
  judge_tokens: int  # prompt tokens read by the judge
  seconds: float


class Searcher:
  """Runs a `SearchConfig` on one example at a time: `searcher(variables, video, prompt, frames, question)`.

  Args:
    generator: cached generation for the model; its cache must hold the prompt and the search's steps.
    tokenizer: the model's tokenizer (stage tags as single tokens).
    scorer: ranks a step's candidates (`scorers.Likelihood`, `scorers.Reward`, `scorers.Judge`).
  """

  def __init__(self, generator: generate_lib.Generator, tokenizer: tokenizer_lib.Tokenizer,
               config: SearchConfig, scorer: scorers_lib.Scorer):
    self.generator, self.tokenizer, self.config, self.scorer = generator, tokenizer, config, scorer
    tag = lambda text: _single_token(tokenizer, text)
    self.eos = tokenizer.eos_id
    self.stage_tags = [(name, tag(f"<{name}>"), tag(f"</{name}>")) for name in rationales.STAGES]
    period_ends = [[i] for i in range(tokenizer.vocab_size) if tokenizer.decode([i]).rstrip().endswith(".")]
    self.sentence_stops = period_ends + [[self.stage_tags[-1][2]], [self.eos]]

  def __call__(self, variables, video: np.ndarray, prompt: list[int], prompt_frames: list[int], question: str,
               on_step: Callable[[Step], None] | None = None) -> SearchResult:
    """video: uint8[T, H, W, 3]; prompt: token ids (`encoding.encode_prompt`) and their frame indices."""
    start_time = time.perf_counter()
    cfg = self.config
    run = _Run(self, variables, video, question, on_step, jax.random.key(cfg.seed))
    padded = generate_lib.left_pad([prompt], [prompt_frames], self.tokenizer.pad_id)
    state = self.generator.start(variables, padded, run.visual)
    if cfg.strategy == "greedy":
      greedy = dataclasses.replace(cfg, sampling=generate_lib.Sampling(), num_candidates=1, beam=1)
      state, texts = run.step("response", state, [""], None, [[self.eos]], cfg.max_new_tokens, greedy)
    elif cfg.strategy == "best_of_n":
      state, texts = run.step("response", state, [""], None, [[self.eos]], cfg.max_new_tokens, cfg)
    elif cfg.strategy == "sentence_beam":
      state, texts = self._sentences(run, state)
    else:
      state, texts = self._stages(run, state)
    text = texts[0].removesuffix(self.tokenizer.decode([self.eos]))
    return SearchResult(text, run.steps, run.generated_tokens, run.judge_tokens,
                        time.perf_counter() - start_time)

  def _sentences(self, run: "_Run", state):
    texts, used = [""], 0
    ends = (self.tokenizer.decode([self.stage_tags[-1][2]]), self.tokenizer.decode([self.eos]))
    while used < self.config.max_new_tokens and not texts[0].endswith(ends):
      budget = min(self.config.max_step_tokens, self.config.max_new_tokens - used)
      before = len(texts[0])
      state, texts = run.step(f"sentence {len(run.steps) + 1}", state, texts, None, self.sentence_stops, budget,
                              self.config)
      used += len(self.tokenizer.encode(texts[0][before:]))
      if len(texts[0]) == before:
        break
    return state, texts

  def _stages(self, run: "_Run", state):
    """One step per stage; below the cutoff, go back one stage and sample it again (SWIRES)."""
    cfg = self.config
    history = [(state, [""])]  # the input of stage i is history[i]
    retries = 0
    while len(history) <= len(self.stage_tags):
      index = len(history) - 1
      name, opening, closing = self.stage_tags[index]
      state, texts = history[index]
      state, texts = run.step(name, state, texts, opening, [[closing], [self.eos]], cfg.max_step_tokens, cfg)
      best = run.steps[-1].scores[run.steps[-1].kept[0]] if run.steps[-1].scores else None
      if (cfg.backtrack_cutoff is not None and best is not None and best < cfg.backtrack_cutoff
          and retries < cfg.max_retries and index > 0):
        retries += 1
        run.steps[-1].backtracked = True
        history.pop()  # stage index - 1 is sampled again from its own input
        continue
      history.append((state, texts))
    state, texts = history[-1]
    return state, texts


class _Run:
  """The state of one search: the encoded video, the RNG, the steps taken and the compute spent."""

  def __init__(self, searcher: Searcher, variables, video: np.ndarray, question: str, on_step, rng):
    self.searcher, self.variables, self.question, self.on_step, self.rng = (
        searcher, variables, question, on_step, rng)
    self.visual = searcher.generator.encode_video(variables, jnp.asarray(video)[None])
    self.last_frame = video.shape[0] - 1
    self.steps: list[Step] = []
    self.generated_tokens = 0
    self.judge_tokens = 0

  def step(self, name: str, state: generate_lib.DecodeState, texts: list[str], opening: int | None,
           stops: list[list[int]], max_tokens: int, cfg: SearchConfig):
    """From each kept prefix (one row of `state`, its text in `texts`), sample, rank, keep the best."""
    gen, tokenizer = self.searcher.generator, self.searcher.tokenizer
    if opening is not None:
      state = gen.extend(self.variables, state, jnp.full((len(texts), 1), opening, jnp.int32), self.last_frame)
      texts = [t + tokenizer.decode([opening]) for t in texts]
    parents = np.repeat(np.arange(len(texts)), cfg.num_candidates)
    state = generate_lib.select_rows(state, parents)
    self.rng, rng = jax.random.split(self.rng)
    state, sampled = gen.sample(self.variables, state, rng, jnp.asarray(generate_lib.stop_table(stops)),
                                self.last_frame, max_new_tokens=max_tokens, sampling=cfg.sampling)
    tokens, lengths = np.asarray(sampled.tokens), np.asarray(sampled.lengths)
    self.generated_tokens += int(lengths.sum())
    new_texts = [tokenizer.decode(row[:n]) for row, n in zip(tokens, lengths)]
    candidates = [scorers_lib.Candidate(texts[p], text, float(lp) / max(int(n), 1), bool(stop))
                  for p, text, lp, n, stop in zip(parents, new_texts, np.asarray(sampled.logprob), lengths,
                                                  np.asarray(sampled.stopped))]
    self.rng, rng = jax.random.split(self.rng)
    ranking = self.scorer_rank(name, candidates, np.random.default_rng(np.asarray(jax.random.key_data(rng))))
    kept = ranking.order[:min(cfg.beam, len(candidates))]
    step = Step(name, new_texts, ranking.scores, kept, ranking.comparisons, [int(n) for n in lengths])
    self.steps.append(step)
    if self.on_step:
      self.on_step(step)
    return generate_lib.select_rows(state, kept), [candidates[i].prefix + candidates[i].text for i in kept]

  def scorer_rank(self, stage: str, candidates, rng: np.random.Generator) -> scorers_lib.Ranking:
    context = scorers_lib.Context(self.searcher.generator, self.searcher.tokenizer, self.variables, self.visual,
                                  self.question, self.last_frame)
    ranking = self.searcher.scorer.rank(context, stage, candidates, rng)
    self.judge_tokens += ranking.judge_tokens
    return ranking


def _single_token(tokenizer: tokenizer_lib.Tokenizer, text: str) -> int:
  token_id = tokenizer.token_id(text)
  if token_id is None:
    raise ValueError(f"Tokenizer {tokenizer.source} has no single token for {text!r}; stage-level search "
                     "needs the stage tags as special tokens (see data/tokenizer.py).")
  return token_id
