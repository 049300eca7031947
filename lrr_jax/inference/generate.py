"""Jitted greedy generation with the KV cache: one prefill over the video and prompt, then a while-loop.

Prompts of different lengths are left-padded (padding has segment 0 and is never attended). A generated
token's frame index follows the rule the rationales are written by: it sees the frames up to the last
`frame t:` marker generated so far (from the prompt's last frame on), and all frames from `<CONCLUSION>` on.
"""
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrr_jax.models import lrr


def left_pad(prompts: Sequence[Sequence[int]], frames: Sequence[Sequence[int]], pad_id: int
             ) -> dict[str, np.ndarray]:
  """Left-padded tokens, positions, segment_ids and frame_index, int32[B, P]."""
  width = max(len(p) for p in prompts)
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


def make_greedy_generate(model: lrr.LRRModel, max_new_tokens: int, stop_ids: Sequence[int],
                         frame_markers: dict[int, int], conclusion_id: int | None, vocab_size: int
                         ) -> Callable[..., tuple[jax.Array, jax.Array]]:
  """A jitted `generate(variables, prompt, video) -> (tokens int[B, N], lengths int[B])`.

  Rows stop after a token in `stop_ids` (kept in the output); the rest of a row is padded with the stop id.
  """
  marker_frame = np.full(vocab_size, -1, np.int32)
  for token_id, frame in frame_markers.items():
    marker_frame[token_id] = frame
  stop_ids = jnp.asarray(stop_ids, jnp.int32)

  @jax.jit
  def generate(variables, prompt: dict[str, jax.Array], video: jax.Array):
    batch, prompt_length = prompt["tokens"].shape
    last_frame = video.shape[1] - 1
    visual = model.apply(variables, video, method=lrr.LRRModel.encode_video)
    cache = lrr.init_cache(model.config, batch, prompt_length + max_new_tokens, visual)
    logits, cache = model.apply(variables, prompt["tokens"], prompt["positions"], prompt["segment_ids"],
                                prompt["frame_index"], cache, 0, visual, method=lrr.LRRModel.decode)

    def next_frame(token, frame):
      frame = jnp.where(jnp.asarray(marker_frame)[token] >= 0, jnp.asarray(marker_frame)[token], frame)
      return jnp.where(token == conclusion_id, last_frame, frame) if conclusion_id is not None else frame

    def body(carry):
      step, cache, token, frame, position, done, out = carry
      out = out.at[:, step].set(jnp.where(done, stop_ids[0], token))
      done = done | jnp.isin(token, stop_ids)
      frame = next_frame(token, frame)
      logits, cache = model.apply(variables, token[:, None], position[:, None], jnp.ones_like(token)[:, None],
                                  frame[:, None], cache, prompt_length + step, method=lrr.LRRModel.decode)
      return step + 1, cache, jnp.argmax(logits[:, 0], -1), frame, position + 1, done, out

    init = (0, cache, jnp.argmax(logits[:, -1], -1), prompt["frame_index"][:, -1],
            prompt["positions"][:, -1] + 1, jnp.zeros(batch, bool),
            jnp.full((batch, max_new_tokens), stop_ids[0], jnp.int32))
    step, _, _, _, _, done, out = jax.lax.while_loop(
        lambda c: (c[0] < max_new_tokens) & ~jnp.all(c[5]), body, init)
    is_stop = jnp.isin(out, stop_ids)
    lengths = jnp.where(is_stop.any(1), jnp.argmax(is_stop, 1) + 1, max_new_tokens)
    return out, lengths

  return generate
