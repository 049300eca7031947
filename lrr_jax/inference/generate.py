"""Jitted cached generation: encode the video once, prefill the prompt, then sample in a `lax.while_loop`.

A `DecodeState` is the whole of a generation in flight, one row per sequence: the KV cache, the next
token's logits, position and frame. Rows can be selected and repeated (`select_rows`), so that search
strategies share one prompt's cache among candidates and continue from the candidate they keep.

All rows write the same cache slot at each step (`DecodeState.slot`). A row that has stopped keeps
stepping with segment id 0, which no later query reads, so rows of different lengths never see each
other's leftovers. Prompts of different lengths are left-padded (padding has segment 0).

Frame rule (as the rationales are written): a token sees the frames up to the last `frame t:` marker so
far (from the prompt's last frame on), and all frames from `<CONCLUSION>` on.

Bounds: `start`, `extend` and `sample` raise a ValueError naming the numbers, before running, when the tokens
they would feed do not fit the KV cache or the model's positions (`model.config.decoder.max_positions`;
positions count from 0 here, OPT's offset of 2 is added inside the decoder), so that no token ever reads past
the position table (NaN) or overwrites a cache slot. `room` says how many more tokens fit; callers that cut a
budget to fit say so themselves. `decode_state_bytes` and `check_memory` refuse a decode too large for memory
before anything is allocated.
"""
import functools
import pathlib
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrr_jax.inference import sampling as sampling_lib
from lrr_jax.models import cross_attention
from lrr_jax.models import decoder as decoder_lib
from lrr_jax.models import lrr

Array = jax.Array
Sampling = sampling_lib.Sampling  # here too, for callers of generation
sample_logits = sampling_lib.sample_logits


class DecodeState(NamedTuple):
  cache: dict  # the decoder's KV cache, batch-leading
  logits: Array  # float32[B, V]: the next token's logits
  position: Array  # int32[B]: the next token's position
  frame: Array  # int32[B]: the last frame the next token may see
  slot: Array  # int32[]: the next cache slot (shared by all rows)


class Sampled(NamedTuple):
  tokens: Array  # int32[B, N], padded with the first stop token
  lengths: Array  # int32[B], stop sequence included
  logprob: Array  # float32[B]: sum of the model's log-probabilities (temperature 1) of the tokens
  stopped: Array  # bool[B]: ended with a stop sequence (not the token budget)


def left_pad(prompts: Sequence[Sequence[int]], frames: Sequence[Sequence[int]], pad_id: int,
             multiple: int = 1, max_width: int = 0) -> dict[str, np.ndarray]:
  """Left-padded tokens, positions, segment_ids and frame_index, int32[B, P], P a multiple of `multiple`
  (fewer distinct shapes, fewer compilations) but at most `max_width` (if > 0) unless a prompt is longer."""
  longest = max(len(p) for p in prompts)
  width = -(-longest // multiple) * multiple
  if max_width > 0:
    width = max(min(width, max_width), longest)
  batch = {k: np.zeros((len(prompts), width), np.int32) for k in ("tokens", "positions", "segment_ids")}
  batch["tokens"][:] = pad_id
  batch["frame_index"] = np.full((len(prompts), width), -1, np.int32)
  for row, (prompt, frame) in enumerate(zip(prompts, frames)):
    start = width - len(prompt)
    batch["tokens"][row, start:] = prompt
    batch["positions"][row, start:] = np.arange(len(prompt))
    batch["segment_ids"][row, start:] = 1
    batch["frame_index"][row, start:] = frame
  return batch


VIDEO_KEYS = ("cross_attention", "visual_frame_index", "visual_segment_ids")  # the projected video in a cache


def select_rows(state: DecodeState, rows: Array | Sequence[int]) -> DecodeState:
  """The state of rows `rows` (repeats allowed): how candidates share or inherit a prefix's cache.

  A projected video held once (batch 1) stays shared by all rows rather than copied to each.
  """
  rows = jnp.asarray(rows, jnp.int32)
  take = lambda x: jnp.take(x, rows, axis=0)
  video_shared = state.cache["visual_segment_ids"].shape[0] == 1
  shared = {k: v for k, v in state.cache.items() if k in VIDEO_KEYS and video_shared}
  per_row = jax.tree.map(take, {k: v for k, v in state.cache.items() if k not in shared})
  return DecodeState({**per_row, **shared}, take(state.logits), take(state.position), take(state.frame),
                     state.slot)


def stop_table(stop_sequences: Sequence[Sequence[int]]) -> np.ndarray:
  """int32[K, L]: stop sequences right-aligned, -1 where a shorter one has no token."""
  if not stop_sequences or any(len(s) == 0 for s in stop_sequences):
    raise ValueError(f"Stop sequences must be non-empty token lists, got {stop_sequences!r}.")
  width = max(len(s) for s in stop_sequences)
  table = np.full((len(stop_sequences), width), -1, np.int32)
  for row, sequence in enumerate(stop_sequences):
    table[row, width - len(sequence):] = sequence
  return table


MEMORY_FRACTION = 0.5  # of the free memory a decode state may take by default (XLA needs room besides)


def decode_state_bytes(config: lrr.LRRConfig, rows: int, cache_length: int, num_visual_tokens: int = 0,
                       visual_rows: int = 1) -> int:
  """Bytes of a `DecodeState` with `rows` rows, from shapes alone (nothing is allocated).

  The KV cache as `decoder.init_cache` builds it: keys and values [rows, heads, cache_length, head_dim] per
  layer and the slots' segment ids; the projected video's keys and values [visual_rows, num_visual_tokens,
  heads, head_dim] per cross-attention block (one row when candidates share it); and the next-token logits
  float32[rows, vocab].
  """
  return (_cache_bytes(config.decoder, rows, cache_length, 0) + _cache_bytes(config.decoder, visual_rows, 0,
                                                                            num_visual_tokens)
          + rows * config.decoder.vocab_size * 4)


@functools.lru_cache(maxsize=256)
def _cache_bytes(config: decoder_lib.DecoderConfig, rows: int, cache_length: int, num_visual_tokens: int) -> int:
  """Bytes of `decoder.init_cache`'s arrays, traced once per shape (a search checks memory at every stage)."""
  cache = jax.eval_shape(lambda: decoder_lib.init_cache(config, rows, cache_length, num_visual_tokens))
  return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(cache))


def free_memory() -> tuple[int, str] | None:
  """(bytes, where) free for a decode: the first device's `bytes_limit - bytes_in_use` where JAX reports them
  (`memory_stats()`: GPU, TPU), else the host's MemAvailable (/proc/meminfo; CPU); None where neither is known."""
  device = jax.local_devices()[0]
  stats = device.memory_stats()
  if stats and "bytes_limit" in stats:
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"free on {device}"
  try:
    lines = pathlib.Path("/proc/meminfo").read_text().splitlines()
  except OSError:
    return None
  available = [int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:")]
  return (available[0], "available on the host (/proc/meminfo MemAvailable)") if available else None


def check_memory(needed: int, what: str, limit_bytes: int | None = None) -> None:
  """Raise a ValueError when `needed` bytes (`decode_state_bytes`) exceed `limit_bytes`.

  limit_bytes: None is MEMORY_FRACTION of `free_memory()` (no check where that is unknown).
  what: the rows and cache that need it, with the knobs that set them (named in the message).
  """
  if limit_bytes is None:
    free = free_memory()
    if free is None:
      return
    limit_bytes = int(free[0] * MEMORY_FRACTION)
    source = f"{MEMORY_FRACTION:.0%} of {free[0] / 2**30:.1f} GiB {free[1]}"
  else:
    source = "memory_limit_bytes"
  if needed > limit_bytes:
    raise ValueError(f"{what} need {needed / 2**30:.1f} GiB ({needed:,} bytes) of KV cache and logits, more than "
                     f"the limit of {limit_bytes / 2**30:.1f} GiB ({source}); lower them, or pass a larger "
                     "memory_limit_bytes.")


def _host_int(x) -> int | None:
  """max(x) read on the host; None while tracing (then only the jitted loop's own clamp applies)."""
  if isinstance(x, jax.core.Tracer):
    return None
  return int(np.max(np.asarray(x)))


class Generator:
  """Cached generation for one LRR model; every method is jitted once per shape.

  `start`, `extend` and `sample` check, on the host and before running, that what they feed fits the cache
  and the model's positions (see the module's docstring); `room` says how much more fits.

  Args:
    model: the LRR model.
    cache_length: KV-cache slots: the prompt plus everything generated after it, candidates' steps included.
    frame_markers: token id -> frame index it opens (`frame t:` markers); `conclusion_id` opens all frames.
  """

  def __init__(self, model: lrr.LRRModel, cache_length: int, frame_markers: dict[int, int] | None = None,
               conclusion_id: int | None = None):
    self.model = model
    self.cache_length = cache_length
    self.max_positions = model.config.decoder.max_positions
    vocab = model.config.decoder.vocab_size
    marker_frame = np.full(vocab, -1, np.int32)
    for token_id, frame in (frame_markers or {}).items():
      marker_frame[token_id] = frame
    self._marker_frame = marker_frame
    self._conclusion_id = -1 if conclusion_id is None else conclusion_id
    self.encode_video = jax.jit(self._encode_video)
    self._jit_start = jax.jit(self._start, static_argnames=("cache_length",))
    self._jit_extend = jax.jit(self._extend)
    self._jit_sample = jax.jit(self._sample, static_argnames=("max_new_tokens", "sampling"))

  def start(self, variables, prompt: dict[str, Array], visual: cross_attention.VisualMemory,
            cache_length: int | None = None) -> DecodeState:
    """Prefill left-padded prompts (see `left_pad`) against an encoded video (one row, or one per prompt).

    cache_length: slots for this generation (default: the generator's); the prompt must leave one free.
    """
    length = prompt["tokens"].shape[1]
    cache_length = cache_length or self.cache_length
    if length >= cache_length:
      raise ValueError(f"The prompt has {length} tokens but the cache holds {cache_length}; raise "
                       "the cache length (max_new_tokens) or shorten the prompt.")
    last = _host_int(prompt["positions"])  # 0-based: the longest prompt's last position
    if last is not None and last >= self.max_positions:
      raise ValueError(f"A prompt of {last + 1} tokens > the {self.max_positions} positions of the model "
                       "(model.config.decoder.max_positions); shorten the prompt.")
    return self._jit_start(variables, prompt, visual, cache_length=cache_length)

  def extend(self, variables, state: DecodeState, tokens: Array, last_frame: int | Array,
             segment_ids: Array | None = None) -> DecodeState:
    """Feed given tokens int[B, S] to every row (a stage's opening tag, a judge's question).

    Rows of different lengths are left-padded with segment id 0 (never read): the last column is real.
    """
    real = tokens.shape[1] if segment_ids is None else np.asarray(segment_ids).sum(1)
    self.check_room(state, real, tokens.shape[1], "given tokens")
    return self._jit_extend(variables, state, tokens, last_frame, segment_ids)

  def sample(self, variables, state: DecodeState, rng: Array, stops: Array, last_frame: int | Array,
             max_new_tokens: int, sampling: Sampling = Sampling(), limit: int | None = None
             ) -> tuple[DecodeState, Sampled]:
    """Sample up to `max_new_tokens` per row until each row ends with a stop sequence (`stop_table`).

    limit: at most this many (<= max_new_tokens), passed traced: budgets cut to fit (a search's later steps) run
    the program compiled for `max_new_tokens`, the width of the tokens returned, instead of one each.
    Raises a ValueError when that many more tokens do not fit (`room`): cut the budget first to go on.
    """
    limit = max_new_tokens if limit is None else limit
    if not 0 < limit <= max_new_tokens:
      raise ValueError(f"limit {limit} must be in 1..max_new_tokens {max_new_tokens}.")
    self.check_room(state, limit, limit, "max_new_tokens")
    return self._jit_sample(variables, state, rng, stops, last_frame, jnp.int32(limit),
                            max_new_tokens=max_new_tokens, sampling=sampling)

  def room(self, state: DecodeState) -> tuple[int, str]:
    """(tokens that still fit every row of `state`, what limits them): the cache's free slots, or the free
    positions of the row furthest along."""
    slots = state.cache["segment_ids"].shape[1]
    free_slots = slots - int(state.slot)
    free_positions = self.max_positions - int(jnp.max(state.position))
    if free_positions <= free_slots:
      return free_positions, f"the {self.max_positions} positions of the model (model.config.decoder.max_positions)"
    return free_slots, f"the {slots} slots of the KV cache (Generator cache_length)"

  def check_room(self, state: DecodeState, positions: int | np.ndarray, slots: int, what: str) -> None:
    """Raise a ValueError naming the numbers unless every row can take `positions` more positions (int, or
    int[B] per row) and the cache `slots` more slots. Skipped while tracing."""
    position, slot = state.position, _host_int(state.slot)
    if slot is None or isinstance(position, jax.core.Tracer):
      return
    ends = np.asarray(position) + np.asarray(positions)
    row = int(np.argmax(ends))
    if ends[row] > self.max_positions:
      so_far = int(np.asarray(position)[row])
      raise ValueError(f"{so_far} tokens so far + {ends[row] - so_far} {what} = {ends[row]} > the "
                       f"{self.max_positions} positions of the model (model.config.decoder.max_positions; a run "
                       f"sets it from config.data.max_length + config.eval.max_new_tokens); at most "
                       f"{self.max_positions - so_far} more fit.")
    length = state.cache["segment_ids"].shape[1]
    if slot + slots > length:
      raise ValueError(f"cache slot {slot} + {slots} {what} = {slot + slots} > the {length} slots of the KV "
                       f"cache (Generator cache_length); at most {length - slot} more fit.")

  def _encode_video(self, variables, video: Array) -> cross_attention.VisualMemory:
    return self.model.apply(variables, video, method=lrr.LRRModel.encode_video)

  def _next_frame(self, tokens: Array, frame: Array, last_frame: int) -> Array:
    marker = jnp.asarray(self._marker_frame)[tokens]
    frame = jnp.where(marker >= 0, marker, frame)
    return jnp.where(tokens == self._conclusion_id, last_frame, frame)

  def _start(self, variables, prompt: dict[str, Array], visual: cross_attention.VisualMemory,
             cache_length: int) -> DecodeState:
    batch, length = prompt["tokens"].shape
    cache = lrr.init_cache(self.model.config, batch, cache_length, visual)
    logits, cache = self.model.apply(variables, prompt["tokens"], prompt["positions"], prompt["segment_ids"],
                                     prompt["frame_index"], cache, 0, visual, last_only=True,
                                     method=lrr.LRRModel.decode)
    return DecodeState(cache, logits[:, -1], prompt["positions"][:, -1] + 1, prompt["frame_index"][:, -1],
                       jnp.asarray(length, jnp.int32))

  def _extend(self, variables, state: DecodeState, tokens: Array, last_frame: int | Array,
              segment_ids: Array | None = None) -> DecodeState:
    segment_ids = jnp.ones_like(tokens) if segment_ids is None else segment_ids
    def advance(frame, column):  # a scan, not an unrolled loop: judge prompts run to hundreds of tokens
      token, segment = column
      frame = jnp.where(segment > 0, self._next_frame(token, frame, last_frame), frame)
      return frame, frame

    frame, frames = jax.lax.scan(advance, state.frame, (tokens.T, segment_ids.T))
    positions = state.position[:, None] + jnp.cumsum(segment_ids, 1) - 1
    logits, cache = self.model.apply(variables, tokens, positions, segment_ids, frames.T,
                                     state.cache, state.slot, last_only=True, method=lrr.LRRModel.decode)
    return DecodeState(cache, logits[:, -1], state.position + segment_ids.sum(1), frame,
                       state.slot + tokens.shape[1])

  def _sample(self, variables, state: DecodeState, rng: Array, stops: Array, last_frame: int | Array,
              limit: Array, max_new_tokens: int, sampling: Sampling) -> tuple[DecodeState, Sampled]:
    """Stops are matched on the last tokens only, on device, at every step."""
    batch = state.logits.shape[0]
    width = stops.shape[1]
    # `sample` has checked the room on the host; traced callers are still kept inside the cache and positions.
    budget = jnp.minimum(jnp.minimum(limit, state.cache["segment_ids"].shape[1] - state.slot),
                         self.max_positions - jnp.max(state.position))
    # The projected video does not change while decoding: keep it out of the loop's carry, which XLA may
    # copy at every step (on CPU that copy cost more than the step itself).
    constant = {k: state.cache[k] for k in VIDEO_KEYS}
    state = state._replace(cache={k: v for k, v in state.cache.items() if k not in VIDEO_KEYS})

    def body(carry):
      step, state, done, out, logprob, lengths = carry
      token = sample_logits(state.logits, jax.random.fold_in(rng, step), sampling)
      token_logprob = jnp.take_along_axis(jax.nn.log_softmax(state.logits), token[:, None], -1)[:, 0]
      out = jax.lax.dynamic_update_slice_in_dim(out, jnp.where(done, stops[0, -1], token)[:, None],
                                                width - 1 + step, 1)
      logprob = logprob + jnp.where(done, 0.0, token_logprob)
      lengths = lengths + jnp.where(done, 0, 1)
      tail = jax.lax.dynamic_slice_in_dim(out, step, width, 1)
      hit = jnp.any(jnp.all((stops[None] == -1) | (stops[None] == tail[:, None]), -1), -1)
      frame = self._next_frame(token, state.frame, last_frame)
      segment = jnp.where(done, 0, 1)[:, None]
      logits, cache = self.model.apply(variables, token[:, None], state.position[:, None], segment,
                                       frame[:, None], {**state.cache, **constant}, state.slot,
                                       method=lrr.LRRModel.decode)
      cache = {k: v for k, v in cache.items() if k not in VIDEO_KEYS}
      keep = lambda new, old: jnp.where(done.reshape(-1, *([1] * (new.ndim - 1))), old, new)
      state = DecodeState(cache, keep(logits[:, 0], state.logits), keep(state.position + 1, state.position),
                          keep(frame, state.frame), state.slot + 1)
      return step + 1, state, done | hit, out, logprob, lengths

    out = jnp.full((batch, width - 1 + max_new_tokens), -1, jnp.int32)
    zeros = jnp.zeros(batch, jnp.int32)
    init = (jnp.int32(0), state, jnp.zeros(batch, bool), out, jnp.zeros(batch, jnp.float32), zeros)
    _, state, done, out, logprob, lengths = jax.lax.while_loop(
        lambda c: (c[0] < budget) & ~jnp.all(c[2]), body, init)
    tokens = out[:, width - 1:]
    tokens = jnp.where(jnp.arange(max_new_tokens)[None] < lengths[:, None], tokens, stops[0, -1])
    state = state._replace(cache={**state.cache, **constant})
    return state, Sampled(tokens, lengths, logprob, done)


def generate(generator: Generator, variables, prompt: dict[str, np.ndarray], video: Array,
             stop_sequences: Sequence[Sequence[int]], max_new_tokens: int, sampling: Sampling = Sampling(),
             rng: Array | None = None) -> Sampled:
  """One continuation per left-padded prompt row (video uint8[B, T, H, W, 3]) until a stop sequence."""
  visual = generator.encode_video(variables, video)
  state = generator.start(variables, prompt, visual)
  rng = jax.random.key(0) if rng is None else rng
  _, sampled = generator.sample(variables, state, rng, jnp.asarray(stop_table(stop_sequences)),
                                video.shape[1] - 1, max_new_tokens=max_new_tokens, sampling=sampling)
  return sampled
