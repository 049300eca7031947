"""Frame-indexed text -> the model's fixed-length arrays, with the loss on the response only.

Layout of one example: `</s> question response </s>`, then padding. Inputs are tokens[:-1], targets
tokens[1:]; `loss_mask` is 1 where the target belongs to the response (rationale, answer, final `</s>`), but
not to a prompt inside it (a segment with `in_loss=False`: an inserted surrogate request).
Each input token carries the frame index of the segment it comes from (the frame-visibility mask).
"""
import numpy as np

from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib


def segment_tokens(segments: list[rationales.Segment], tokenizer: tokenizer_lib.Tokenizer
                   ) -> tuple[list[int], list[int]]:
  """Token ids of the segments, each segment tokenised on its own, and each token's frame index."""
  ids, frames = [], []
  for segment in segments:
    segment_ids = tokenizer.encode(segment.text)
    ids += segment_ids
    frames += [segment.frame_index] * len(segment_ids)
  return ids, frames


def encode_prompt(example: rationales.Example, tokenizer: tokenizer_lib.Tokenizer) -> tuple[list[int], list[int]]:
  """`</s> question`: what generation starts from."""
  ids, frames = segment_tokens(example.question, tokenizer)
  return [tokenizer.eos_id] + ids, [example.question[0].frame_index] + frames


def encode_example(example: rationales.Example, tokenizer: tokenizer_lib.Tokenizer, max_length: int,
                   source: str = "example") -> dict[str, np.ndarray]:
  """Arrays of length `max_length`: inputs, targets, positions, segment_ids, frame_index, loss_mask.

  Raises ValueError naming `source` when the example does not fit.
  """
  prompt, prompt_frames = encode_prompt(example, tokenizer)
  response, response_frames, in_loss = [], [], []
  for segment in example.response:
    ids, segment_frames = segment_tokens([segment], tokenizer)
    response += ids
    response_frames += segment_frames
    in_loss += [int(segment.in_loss)] * len(ids)
  tokens = prompt + response + [tokenizer.eos_id]
  frames = prompt_frames + response_frames
  in_response = [0] * (len(prompt) - 1) + in_loss + [1]  # indexed by target position
  length = len(tokens) - 1
  if length > max_length:
    raise ValueError(f"{source} has {length} tokens, more than max_length={max_length}; raise the config's "
                     "max_length or shorten the rationale.")
  pad = max_length - length
  as_array = lambda values, fill: np.asarray(values + [fill] * pad, np.int32)
  return {
      "inputs": as_array(tokens[:-1], tokenizer.pad_id),
      "targets": as_array(tokens[1:], tokenizer.pad_id),
      "positions": as_array(list(range(length)), 0),
      "segment_ids": as_array([1] * length, 0),
      "frame_index": as_array(frames, -1),
      "loss_mask": as_array(in_response, 0),
  }
