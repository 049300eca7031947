"""A surrogate request asked of a model: the request is fed after the question, and the answer is the greedy
continuation cut at the first token that ends an answer in training."""
import jax.numpy as jnp
import numpy as np

from lrr_jax.data import encoding
from lrr_jax.data import surrogate
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import surrogate_answer


def test_answer_is_the_greedy_continuation_up_to_a_stop(tiny, tokenizer):
  result = surrogate_answer.ask(tiny["generator"], tokenizer, tiny["variables"], tiny["video"], tiny["prompt"],
                                tiny["frames"], "track", 2, max_new_tokens=24)
  assert result.request == "<track> at frame 2? frame 2:"
  # Independently: the same prompt and request, greedy without stops but the end of text, cut by hand.
  ids, frames = encoding.segment_tokens(surrogate.request_segments("track", 2, 0), tokenizer)
  padded = generate_lib.left_pad([tiny["prompt"] + ids], [tiny["frames"] + frames], tokenizer.pad_id)
  stops = set(surrogate.stop_tokens(tokenizer))
  only_eos = [[tokenizer.eos_id]] * len(stops)  # the same table's shape: the compiled loop is reused
  sampled = generate_lib.generate(tiny["generator"], tiny["variables"], padded, jnp.asarray(tiny["video"][None]),
                                  only_eos, 24)
  tokens = np.asarray(sampled.tokens[0]).tolist()
  first_stop = next(i for i, t in enumerate(tokens) if t in stops)  # the model is biased to closing tags
  assert result.stopped and result.num_tokens == first_stop + 1
  assert result.answer == tokenizer.decode(tokens[:first_stop])
  assert frames == [0] * (len(ids) - 1) + [2]  # the request sees what the question saw; its marker opens frame 2
