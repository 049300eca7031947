"""Rank a closed set of answers after a generated rationale: the model's log-probability of each candidate.

Top-5 metrics (CATER's 36 cells, Something-Else's classes) need a ranking, which free generation does not
give. After the model has written its rationale, the text is cut after its last `answer` word and every
candidate answer, followed by what ends an answer in training (`</CONCLUSION>` or `</s>`), is scored by
teacher forcing from that one shared prefix: one prefill per example, then a few cached steps per candidate.

Bounds: an example whose prompt, continuation and longest candidate do not fit the model's positions is an
error naming it (a cut would score another text); each chunk's decode state is checked against memory first.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrr_jax.inference import generate as generate_lib

ROWS_PER_CALL = 256  # examples x candidates scored together (bounds the repeated caches' memory)
WIDTH_MULTIPLE = 64  # prompts, continuations and caches are padded to multiples of this: few compiled shapes


def answer_prefix(response: Sequence[int], markers: Sequence[Sequence[int]]) -> list[int]:
  """The response's tokens up to the end of its last `answer` marker (the word's token sequences, with and
  without a leading space); a response without one gets the first marker appended, so that a malformed
  response is still ranked from where it stopped."""
  response = list(response)
  for end in range(len(response), 0, -1):
    if any(len(m) <= end and response[end - len(m):end] == list(m) for m in markers):
      return response[:end]
  return response + list(markers[0])


def candidate_table(candidates: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  """int32[K, C] candidates right-padded with 0, and int32[K, C] 1 where a token is real."""
  width = max(len(c) for c in candidates)
  tokens = np.zeros((len(candidates), width), np.int32)
  valid = np.zeros((len(candidates), width), np.int32)
  for row, candidate in enumerate(candidates):
    tokens[row, :len(candidate)] = candidate
    valid[row, :len(candidate)] = 1
  return tokens, valid


def candidate_logprobs(generator: generate_lib.Generator, variables, video: np.ndarray,
                       prompts: Sequence[tuple[list[int], list[int]]], continuations: Sequence[list[int]],
                       candidates: Sequence[Sequence[int]], pad_id: int,
                       memory_limit_bytes: int | None = None) -> np.ndarray:
  """float32[B, K]: log P(candidate k | video b, prompt b, continuation b) under the model.

  Args:
    video: uint8[B, T, H, W, 3].
    prompts: (tokens, frame_index) per example, as `encoding.encode_prompt` gives them.
    continuations: per example, the tokens after the prompt (non-empty), fed with the online frame rule.
    candidates: K token lists, shared by the examples.
    memory_limit_bytes: a chunk's decode-state limit (`generate.check_memory`; None: a share of free memory).
  """
  check_positions(generator.max_positions, prompts, continuations, candidates)
  scores = []
  chunk = min(max(1, ROWS_PER_CALL // len(candidates)), len(prompts))
  for start in range(0, len(prompts), chunk):
    rows = list(range(start, min(start + chunk, len(prompts))))
    rows += rows[-1:] * (chunk - len(rows))  # a last, partial chunk: its last example repeated (one shape)
    scores.append(_score_chunk(generator, variables, video[rows], [prompts[i] for i in rows],
                               [continuations[i] for i in rows], candidates, pad_id, memory_limit_bytes))
  return np.concatenate(scores)[:len(prompts)]


def check_positions(max_positions: int, prompts: Sequence[tuple[list[int], list[int]]],
                    continuations: Sequence[list[int]], candidates: Sequence[Sequence[int]]) -> None:
  """Raise a ValueError naming the first example whose text does not fit the model's positions: its prompt,
  continuation and longest candidate but the last token (scored, never fed)."""
  longest = max(len(c) for c in candidates)
  for index, ((prompt, _), continuation) in enumerate(zip(prompts, continuations)):
    need = len(prompt) + len(continuation) + longest - 1
    if need > max_positions:
      raise ValueError(f"Example {index}: a prompt of {len(prompt)} tokens + a continuation of "
                       f"{len(continuation)} + the longest candidate's {longest} - 1 = {need} > the {max_positions} "
                       "positions of the model (model.config.decoder.max_positions).")


def _score_chunk(generator, variables, video, prompts, continuations, candidates, pad_id,
                 memory_limit_bytes) -> np.ndarray:
  last_frame = video.shape[1] - 1
  prompt = generate_lib.left_pad([p for p, _ in prompts], [f for _, f in prompts], pad_id, WIDTH_MULTIPLE)
  after = generate_lib.left_pad(continuations, [[0] * len(c) for c in continuations], pad_id, WIDTH_MULTIPLE)
  cache_length = prompt["tokens"].shape[1] + after["tokens"].shape[1] + max(len(c) for c in candidates) + 1
  cache_length = -(-cache_length // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
  rows = len(prompts) * len(candidates)
  visual_rows = 1 if len(prompts) == 1 else rows  # `select_rows` shares one video, repeats several
  config = generator.model.config
  generate_lib.check_memory(
      generate_lib.decode_state_bytes(config, rows, cache_length, video.shape[1] * config.video.grid_size,
                                      visual_rows),
      f"Ranking {len(prompts)} examples x {len(candidates)} candidates: {rows} rows of {cache_length} cache slots",
      memory_limit_bytes)
  visual = generator.encode_video(variables, video)
  state = generator.start(variables, prompt, visual, cache_length=cache_length)
  state = generator.extend(variables, state, after["tokens"], last_frame, after["segment_ids"])
  tokens, valid = candidate_table(candidates)
  batch, count = len(prompts), len(candidates)
  state = generate_lib.select_rows(state, np.repeat(np.arange(batch), count))
  tokens, valid = np.tile(tokens, (batch, 1)), np.tile(valid, (batch, 1))
  total = jnp.zeros(batch * count, jnp.float32)
  for column in range(tokens.shape[1]):
    logprobs = jax.nn.log_softmax(state.logits.astype(jnp.float32))
    total += valid[:, column] * jnp.take_along_axis(logprobs, tokens[:, column, None], -1)[:, 0]
    if column + 1 < tokens.shape[1]:
      state = generator.extend(variables, state, tokens[:, column, None], last_frame, valid[:, column, None])
  return np.asarray(total).reshape(batch, count)
