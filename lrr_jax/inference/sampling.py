"""The next token from logits: temperature, top-k and top-p (nucleus), without sorting the vocabulary.

Kept tokens: top-k keeps the logits >= the k-th largest; top-p then keeps a token when the probability mass
of the tokens strictly likelier than it is < top_p (the likeliest is always kept; equal logits are kept or
dropped together). Masses are summed in integer units of 1 / MASS_UNITS of probability, exactly and so in any
order: the nucleus found among the `CANDIDATES` likeliest tokens (`lax.top_k`; used when their mass reaches
top_p, as it does for a trained model's peaked distributions) and the nucleus found over the whole vocabulary
(a bisection on the cutoff logit: 32 masked sums, for flat distributions) are the same set, and the same as
sorting the vocabulary would give. Sorting 50,272 logits per row at every token was the cost of top-p on CPU.

The token is then drawn from the filtered logits as `jax.random.categorical` draws it (a Gumbel max over the
whole vocabulary; the argmax as two plain reductions), so a key draws the same token however the nucleus was
found. `sample_logits` does not find the nucleus at all when it need not: the Gumbel max over the whole
vocabulary is the draw whenever that token is one top-p keeps (one masked sum tells), which it is with
probability about top_p; a row whose token is not kept draws again among the tokens likelier than it (the
nucleus is among them), and rows still undecided after `REDRAWS` tries take the nucleus's cutoff. Each is the
first maximum over a set holding the whole nucleus, so the token is the same as `filter_logits` then the Gumbel
max gives, with none of its 33 passes over the vocabulary at most steps. Before this module the masses were
float32 sums over the sorted vocabulary, which can move the cutoff by one token where top_p falls within their
rounding; tests/inference/test_sampling.py draws the same tokens as that code for every key tried.
"""
import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp

Array = jax.Array

MASS_UNITS = 2**30  # of probability; a vocabulary's units sum to about 2**30, inside int32
CANDIDATES = 256  # likeliest tokens in which top-p looks for its nucleus first
BISECTION_STEPS = 32  # halvings of the 2**32 float32 order keys: the cutoff exactly
REDRAWS = 4  # Gumbel maxima tried per row before its nucleus is found (each misses with probability ~1 - top_p)


@dataclasses.dataclass(frozen=True)
class Sampling:
  """temperature 0 is greedy; top_k 0 and top_p 1.0 keep the whole vocabulary."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    # `not <=` refuses NaN too; a negative temperature is refused rather than read as greedy (0 is greedy).
    if not (isinstance(self.temperature, numbers.Real) and 0.0 <= self.temperature < math.inf):
      raise ValueError(f"Sampling temperature={self.temperature} (config.search.temperature, infer "
                       "--temperature): expected a finite number >= 0 (0: greedy).")
    check_count("Sampling top_k (config.search.top_k, infer --top_k; 0: off)", self.top_k, 0)
    if not (isinstance(self.top_p, numbers.Real) and 0.0 < self.top_p <= 1.0):
      raise ValueError(f"Sampling top_p={self.top_p} (config.search.top_p, infer --top_p): expected "
                       "0 < top_p <= 1 (1: off).")


def check_count(name: str, value: object, minimum: int) -> None:
  """ValueError naming `name` unless `value` is a whole number >= `minimum` (a budget, a count, top_k)."""
  if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum):
    raise ValueError(f"{name} = {value!r}: expected a whole number >= {minimum}.")


def sample_logits(logits: Array, rng: Array, sampling: Sampling) -> Array:
  """int32[B] tokens drawn from float[B, V] logits with temperature, top-k and top-p (nucleus)."""
  if sampling.temperature <= 0.0:
    return first_argmax(logits)
  top_k_only = dataclasses.replace(sampling, top_p=1.0)
  logits = filter_logits(logits.astype(jnp.float32) / sampling.temperature, top_k_only)
  noisy = jax.random.gumbel(rng, logits.shape, logits.dtype) + logits  # jax.random.categorical's draw
  return first_argmax(noisy) if sampling.top_p >= 1.0 else _nucleus_draw(logits, noisy, sampling.top_p)


def _nucleus_draw(logits: Array, noisy: Array, top_p: float) -> Array:
  """int32[B]: the first maximum of `noisy` among the tokens top-p keeps of `logits` (see the module)."""
  units = mass_units(logits)
  threshold = math.ceil(top_p * MASS_UNITS)
  def draw(carry):
    tries, floor, token, done = carry
    candidate = first_argmax(jnp.where(logits > floor[:, None], noisy, -jnp.inf))
    value = jnp.take_along_axis(logits, candidate[:, None], -1)
    kept = jnp.sum(jnp.where(logits > value, units, 0), -1) < threshold  # the likelier tokens' mass < top_p
    # A token top-p drops is less likely than the whole nucleus: draw again above it.
    return tries + 1, jnp.where(done, floor, value[:, 0]), jnp.where(done, token, candidate), done | kept

  batch = logits.shape[0]
  start = (0, jnp.full(batch, -jnp.inf, logits.dtype), jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool))
  _, _, token, done = jax.lax.while_loop(lambda c: (c[0] < REDRAWS) & ~jnp.all(c[3]), draw, start)
  nucleus = lambda: first_argmax(jnp.where(filter_logits(logits, Sampling(1.0, 0, top_p)) == -jnp.inf, -jnp.inf,
                                            noisy))
  return jnp.where(done, token, jax.lax.cond(jnp.all(done), lambda: token, nucleus))


def first_argmax(x: Array) -> Array:
  """int32[B]: `jnp.argmax(x, -1)` (the first maximum; the first NaN if any) as a max and a min over the
  indices that hit it: two plain reductions, where XLA:CPU's argmax (one reduction of (value, index) pairs)
  took 17 ms for 10 rows of 50,272."""
  hit = (x == jnp.max(x, -1, keepdims=True)) | jnp.isnan(x)
  return jnp.min(jnp.where(hit, jnp.arange(x.shape[-1], dtype=jnp.int32), x.shape[-1]), -1)


def filter_logits(logits: Array, sampling: Sampling, candidates: int = CANDIDATES) -> Array:
  """float32[B, V] logits (divided by the temperature already) with the tokens top-k and top-p drop at -inf.

  candidates: how many of the likeliest tokens top-p searches first (any number gives the same result).
  """
  vocab = logits.shape[-1]
  if sampling.top_k > vocab:
    raise ValueError(f"Sampling.top_k={sampling.top_k} exceeds the vocabulary of {vocab} tokens.")
  if not sampling.top_k and sampling.top_p >= 1.0:
    return logits
  count = sampling.top_k if sampling.top_p >= 1.0 else min(vocab, max(candidates, sampling.top_k))
  values, indices = jax.lax.top_k(logits, count)  # descending
  if sampling.top_k:
    kth = values[:, sampling.top_k - 1:sampling.top_k]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
    values = jnp.where(values < kth, -jnp.inf, values)
  if sampling.top_p < 1.0:
    logits = jnp.where(logits < _nucleus_cutoff(logits, values, indices, sampling.top_p), -jnp.inf, logits)
  return logits


def mass_units(logits: Array) -> Array:
  """int32[B, V]: each token's probability (softmax) in units of 1 / MASS_UNITS, rounded."""
  return jnp.round(jax.nn.softmax(logits, -1) * MASS_UNITS).astype(jnp.int32)


def _nucleus_cutoff(logits: Array, values: Array, indices: Array, top_p: float) -> Array:
  """float32[B, 1]: the lowest logit top-p keeps (see the module); values, indices: the likeliest tokens."""
  units = mass_units(logits)
  threshold = math.ceil(top_p * MASS_UNITS)  # for whole units u: u / MASS_UNITS < top_p <=> u < threshold
  top_units = jnp.take_along_axis(units, indices, -1)
  before = jnp.cumsum(top_units, -1) - top_units  # the mass of the tokens ahead in the sorted order
  within = jnp.all(before[:, -1] + top_units[:, -1] >= threshold)  # every row's nucleus among the candidates
  among_candidates = lambda: jnp.min(jnp.where(before < threshold, values, jnp.inf), -1, keepdims=True)
  return jax.lax.cond(within, among_candidates, lambda: _bisect_cutoff(logits, units, threshold))


def _bisect_cutoff(logits: Array, units: Array, threshold: int) -> Array:
  """float32[B, 1]: the lowest logit v with mass(logits > v) < threshold, found by bisection on the logits'
  order keys (every step one masked sum over the vocabulary); the same cutoff as a sort's, in integer units."""
  keys = _order_keys(logits)
  def halve(_, bounds):
    low, high = bounds  # the answer's key is in [low, high]
    middle = low + (high - low) // 2
    small = jnp.sum(jnp.where(keys > middle[:, None], units, 0), -1) < threshold
    return jnp.where(small, low, middle + 1), jnp.where(small, middle, high)

  low, _ = jax.lax.fori_loop(0, BISECTION_STEPS, halve, (jnp.min(keys, -1), jnp.max(keys, -1)))
  return jnp.min(jnp.where(keys >= low[:, None], logits, jnp.inf), -1, keepdims=True)


def _order_keys(logits: Array) -> Array:
  """uint32 keys in the order of the float32 logits (-0.0 taken as 0.0), -inf lowest."""
  bits = jax.lax.bitcast_convert_type(jnp.where(logits == 0.0, 0.0, logits), jnp.uint32)
  negative = (bits >> 31) == 1
  return jnp.where(negative, ~bits, bits | jnp.uint32(1 << 31))
