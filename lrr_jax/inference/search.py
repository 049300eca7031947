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

Bounds, checked before anything runs (`Searcher.check`): the prompt plus the first step's whole budget
(`max_new_tokens`; stage_beam: a stage tag + `max_step_tokens`) must fit the model's positions and the
generator's cache, and the widest step's decode state must fit in memory, else a ValueError names the numbers.
Later steps whose budget no longer fits (stage_beam's four stages, sentence_beam's re-encoded text) are cut to
the room left, and a step with no room is not run (the result is then partial); each cut is logged and kept in
`Step.notes` and `SearchResult.notes`.

Stopping: `should_stop() -> bool` (e.g. a SIGTERM flag) is called between steps; when it returns True the search
ends there and returns the text kept so far with `SearchResult.partial` set.
"""
import dataclasses
import time
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import sampling as sampling_lib
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
  memory_limit_bytes: int | None = None  # a decode's limit; None: a share of the free memory (generate.check_memory)
  scorer: str = "judge"  # the scorer's name (a run config's `search.scorer`); the Searcher is handed the scorer

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ValueError(f"SearchConfig.strategy={self.strategy!r}; expected one of {STRATEGIES}.")
    if self.beam < 1 or self.num_candidates < 1:
      raise ValueError(f"SearchConfig.beam={self.beam} and num_candidates={self.num_candidates} must be >= 1.")
    for name in ("max_new_tokens", "max_step_tokens"):  # token budgets (infer --max_new_tokens sets both)
      sampling_lib.check_count(f"SearchConfig.{name} (config.search.{name})", getattr(self, name), 1)
    sampling_lib.check_count("SearchConfig.max_retries (config.search.max_retries)", self.max_retries, 0)


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
  notes: list[str] = dataclasses.field(default_factory=list)  # budgets cut and judge texts cut to fit


@dataclasses.dataclass
class SearchResult:
  text: str  # the kept response (without the final </s>)
  steps: list[Step]
  generated_tokens: int  # every sampled token, all candidates
  judge_tokens: int  # tokens the judge read (its prompts) and generated (release_judge)
  seconds: float
  partial: bool = False  # ended early: asked by `should_stop`, or no room left for a step (see notes)
  notes: list[str] = dataclasses.field(default_factory=list)  # every cut made to fit, and why the search ended


class Searcher:
  """Runs a `SearchConfig` on one example at a time: `searcher(variables, video, prompt, frames, question)`.

  Args:
    generator: cached generation for the model; its cache must hold the prompt and the search's steps.
    tokenizer: the model's tokenizer (stage tags as single tokens).
    scorer: ranks a step's candidates (`scorers.Likelihood`, `scorers.Reward`, `scorers.Judge`, `scorers.Oracle`,
      `release_judge.ReleaseJudge`).
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
               on_step: Callable[[Step], None] | None = None,
               should_stop: Callable[[], bool] | None = None, reference: str | None = None) -> SearchResult:
    """video: uint8[T, H, W, 3]; prompt: token ids (`encoding.encode_prompt`) and their frame indices.

    on_step: called with each step as it is ranked. should_stop: called between steps; True ends the search
    there (`SearchResult.partial`). reference: the example's true rationale, where known, for a scorer that
    reads it (`scorers.Oracle`; `scorers.Context.reference`).
    """
    start_time = time.perf_counter()
    cfg = self.config
    self.check(len(prompt), video.shape[0])
    run = _Run(self, variables, video, question, on_step, should_stop, jax.random.key(cfg.seed), reference)
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
                        time.perf_counter() - start_time, run.partial, run.notes)

  def check(self, prompt_length: int, num_frames: int) -> None:
    """Raise a ValueError naming the numbers unless the prompt and the first step's whole budget fit the
    model's positions and the generator's cache, and the widest step's decode state fits in memory."""
    cfg, gen = self.config, self.generator
    tag = int(cfg.strategy == "stage_beam")
    budget = cfg.max_step_tokens if tag else cfg.max_new_tokens
    what = f"a stage tag + SearchConfig.max_step_tokens {budget}" if tag else f"SearchConfig.max_new_tokens {budget}"
    for limit, of in ((gen.max_positions, "positions of the model (model.config.decoder.max_positions)"),
                      (gen.cache_length, "slots of the generator's KV cache (Generator cache_length)")):
      if prompt_length + tag + budget > limit:
        raise ValueError(f"A prompt of {prompt_length} tokens + {what} = {prompt_length + tag + budget} > the "
                         f"{limit} {of}; lower the budget (infer: --max_new_tokens) to at most "
                         f"{limit - prompt_length - tag}.")
    rows = {"greedy": 1, "best_of_n": cfg.num_candidates}.get(cfg.strategy, cfg.num_candidates * cfg.beam)
    config = gen.model.config
    needed = generate_lib.decode_state_bytes(config, rows, gen.cache_length, num_frames * config.video.grid_size)
    generate_lib.check_memory(needed, f"{cfg.strategy} with SearchConfig.num_candidates={cfg.num_candidates} x "
                              f"beam={cfg.beam}: {rows} rows of {gen.cache_length} cache slots",
                              cfg.memory_limit_bytes)

  def _sentences(self, run: "_Run", state):
    texts, used = [""], 0
    ends = (self.tokenizer.decode([self.stage_tags[-1][2]]), self.tokenizer.decode([self.eos]))
    while used < self.config.max_new_tokens and not texts[0].endswith(ends) and not run.stopping():
      budget = min(self.config.max_step_tokens, self.config.max_new_tokens - used)
      before = len(texts[0])
      stepped = run.step(f"sentence {len(run.steps) + 1}", state, texts, None, self.sentence_stops, budget,
                         self.config)
      if stepped is None:
        break
      state, texts = stepped
      used += len(self.tokenizer.encode(texts[0][before:]))
      if len(texts[0]) == before:
        break
    return state, texts

  def _stages(self, run: "_Run", state):
    """One step per stage; below the cutoff, go back one stage and sample it again (SWIRES)."""
    cfg = self.config
    history = [(state, [""])]  # the input of stage i is history[i]
    retries = 0
    while len(history) <= len(self.stage_tags) and not run.stopping():
      index = len(history) - 1
      name, opening, closing = self.stage_tags[index]
      state, texts = history[index]
      stepped = run.step(name, state, texts, opening, [[closing], [self.eos]], cfg.max_step_tokens, cfg)
      if stepped is None:
        break
      state, texts = stepped
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

  def __init__(self, searcher: Searcher, variables, video: np.ndarray, question: str, on_step, should_stop, rng,
               reference: str | None = None):
    self.searcher, self.variables, self.question, self.on_step, self.should_stop, self.rng = (
        searcher, variables, question, on_step, should_stop, rng)
    self.reference = reference
    self.visual = searcher.generator.encode_video(variables, jnp.asarray(video)[None])
    self.last_frame = video.shape[0] - 1
    self.steps: list[Step] = []
    self.generated_tokens = 0
    self.judge_tokens = 0
    self.partial = False
    self.notes: list[str] = []

  def note(self, text: str) -> None:
    logging.warning("Search: %s", text)
    self.notes.append(text)

  def stopping(self) -> bool:
    """True when the search must end before its next step: `should_stop` asked (after a first step), or a
    step found no room (`partial`)."""
    if not self.partial and self.steps and self.should_stop is not None and self.should_stop():
      self.partial = True
      self.note(f"stopped by should_stop after {len(self.steps)} steps.")
    return self.partial

  def budget(self, name: str, state: generate_lib.DecodeState, opening: int | None, max_tokens: int) -> int:
    """`max_tokens` cut to the room left after the opening tag (noted when cut); 0 marks the search partial."""
    room, limit = self.searcher.generator.room(state)
    budget = min(max_tokens, room - (opening is not None))
    if budget < 1:
      self.partial = True
      self.note(f"{name} not run: no room left in {limit}.")
    elif budget < max_tokens:
      self.note(f"{name}: token budget cut from {max_tokens} to {budget} to fit {limit}.")
    return budget

  def step(self, name: str, state: generate_lib.DecodeState, texts: list[str], opening: int | None,
           stops: list[list[int]], max_tokens: int, cfg: SearchConfig):
    """From each kept prefix (one row of `state`, its text in `texts`), sample, rank, keep the best.

    Returns (state, texts) of the kept rows, or None when no token fits (see `budget`).
    """
    gen, tokenizer = self.searcher.generator, self.searcher.tokenizer
    notes_before = len(self.notes)
    max_tokens = self.budget(name, state, opening, max_tokens)
    if max_tokens < 1:
      return None
    if opening is not None:
      state = gen.extend(self.variables, state, jnp.full((len(texts), 1), opening, jnp.int32), self.last_frame)
      texts = [t + tokenizer.decode([opening]) for t in texts]
    parents = np.repeat(np.arange(len(texts)), cfg.num_candidates)
    state = generate_lib.select_rows(state, parents)
    self.rng, rng = jax.random.split(self.rng)
    width = max(cfg.max_new_tokens, cfg.max_step_tokens)  # one compiled decode per row count, whatever the cut
    state, sampled = gen.sample(self.variables, state, rng, jnp.asarray(generate_lib.stop_table(stops)),
                                self.last_frame, max_new_tokens=width, sampling=cfg.sampling, limit=max_tokens)
    tokens, lengths = np.asarray(sampled.tokens), np.asarray(sampled.lengths)
    self.generated_tokens += int(lengths.sum())
    new_texts = [tokenizer.decode(row[:n]) for row, n in zip(tokens, lengths)]
    candidates = [scorers_lib.Candidate(texts[p], text, float(lp) / max(int(n), 1), bool(stop))
                  for p, text, lp, n, stop in zip(parents, new_texts, np.asarray(sampled.logprob), lengths,
                                                  np.asarray(sampled.stopped))]
    self.rng, rng = jax.random.split(self.rng)
    ranking = self.scorer_rank(name, candidates, np.random.default_rng(np.asarray(jax.random.key_data(rng))))
    kept = ranking.order[:min(cfg.beam, len(candidates))]
    step = Step(name, new_texts, ranking.scores, kept, ranking.comparisons, [int(n) for n in lengths],
                notes=self.notes[notes_before:])
    self.steps.append(step)
    if self.on_step:
      self.on_step(step)
    return generate_lib.select_rows(state, kept), [candidates[i].prefix + candidates[i].text for i in kept]

  def scorer_rank(self, stage: str, candidates, rng: np.random.Generator) -> scorers_lib.Ranking:
    context = scorers_lib.Context(self.searcher.generator, self.searcher.tokenizer, self.variables, self.visual,
                                  self.question, self.last_frame, self.searcher.config.memory_limit_bytes,
                                  reference=self.reference)
    ranking = self.searcher.scorer.rank(context, stage, candidates, rng)
    self.judge_tokens += ranking.judge_tokens
    for text in context.notes:
      self.note(text)
    return ranking


def _single_token(tokenizer: tokenizer_lib.Tokenizer, text: str) -> int:
  token_id = tokenizer.token_id(text)
  if token_id is None:
    raise ValueError(f"Tokenizer {tokenizer.source} has no single token for {text!r}; stage-level search "
                     "needs the stage tags as special tokens (see data/tokenizer.py).")
  return token_id
