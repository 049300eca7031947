"""Ask a trained model a surrogate task (detect / re-identify / track at frame t) after the question, as
training prompts it (`lrr_jax/data/surrogate.py`): the request and its frame marker are fed, the answer is
generated greedily until what training puts after one (a stage tag, a frame marker or `</s>`)."""
import dataclasses

import jax.numpy as jnp
import numpy as np

from lrr_jax.data import encoding
from lrr_jax.data import surrogate
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import sampling as sampling_lib


@dataclasses.dataclass
class SurrogateAnswer:
  request: str  # as fed to the model, marker included: '<track> at frame 5? frame 5:'
  answer: str  # generated, without the token it stopped on
  stopped: bool  # ended on a stop token (not the budget)
  num_tokens: int


def ask(generator: generate_lib.Generator, tokenizer: tokenizer_lib.Tokenizer, variables, video: np.ndarray,
        prompt: list[int], prompt_frames: list[int], task: str, frame: int,
        max_new_tokens: int) -> SurrogateAnswer:
  """video: uint8[T, H, W, 3]; prompt: the question's ids and frames (`encoding.encode_prompt`)."""
  sampling_lib.check_count("The surrogate answer's max_new_tokens (infer --max_new_tokens)", max_new_tokens, 1)
  segments = surrogate.request_segments(task, frame, prompt_frames[-1])
  ids, frames = encoding.segment_tokens(segments, tokenizer)
  padded = generate_lib.left_pad([prompt + ids], [prompt_frames + frames], tokenizer.pad_id)
  stops = [[t] for t in surrogate.stop_tokens(tokenizer)]
  sampled = generate_lib.generate(generator, variables, padded, jnp.asarray(video[None]), stops, max_new_tokens)
  length, stopped = int(sampled.lengths[0]), bool(sampled.stopped[0])
  tokens = np.asarray(sampled.tokens[0, :length - 1 if stopped else length])
  return SurrogateAnswer("".join(s.text for s in segments), tokenizer.decode(tokens.tolist()), stopped, length)
