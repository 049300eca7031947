"""Top-k / top-p without sorting: the same kept tokens as sorting the vocabulary, the same token for a key."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrr_jax.inference import sampling as sampling_lib

VOCAB = 4096


def sorted_filter(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
  """The rule by sorting the whole vocabulary in numpy (the mass of the likelier tokens, in the same units)."""
  logits = np.array(logits)
  if top_k:
    kth = -np.sort(-logits, -1)[:, top_k - 1:top_k]
    logits = np.where(logits < kth, -np.inf, logits)
  units = np.asarray(sampling_lib.mass_units(jnp.asarray(logits))).astype(np.int64)
  order = np.argsort(-logits, -1, kind="stable")
  ordered, ordered_units = np.take_along_axis(logits, order, -1), np.take_along_axis(units, order, -1)
  before = np.cumsum(ordered_units, -1) - ordered_units
  cutoff = np.min(np.where(before < math.ceil(top_p * sampling_lib.MASS_UNITS), ordered, np.inf), -1)
  return np.where(logits < cutoff[:, None], -np.inf, logits)


def previous_sample(logits, rng, sampling):
  """Sampling as it was before this module: the whole vocabulary sorted, masses summed in float32."""
  logits = logits.astype(jnp.float32) / sampling.temperature
  if sampling.top_k:
    logits = jnp.where(logits < jax.lax.top_k(logits, sampling.top_k)[0][:, -1:], -jnp.inf, logits)
  sorted_logits = jnp.sort(logits, -1)[:, ::-1]
  probs = jax.nn.softmax(sorted_logits, -1)
  before = jnp.cumsum(probs, -1) - probs
  cutoff = jnp.min(jnp.where(before < sampling.top_p, sorted_logits, jnp.inf), -1, keepdims=True)
  return jax.random.categorical(rng, jnp.where(logits < cutoff, -jnp.inf, logits)).astype(jnp.int32)


def random_logits(kind: str, rows: int = 8) -> np.ndarray:
  rng = np.random.default_rng({"peaked": 0, "flat": 1, "ties": 2}[kind])
  logits = rng.standard_normal((rows, VOCAB)).astype(np.float32)
  if kind == "peaked":  # a trained model's: a few likely tokens
    return logits * 4.0
  if kind == "flat":  # random weights': the nucleus spans most of the vocabulary
    return logits * 0.5
  return np.round(logits * 4.0) / 2.0  # many equal logits, ties at every cutoff


@pytest.mark.parametrize("kind", ["peaked", "flat", "ties"])
@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (100, 0.95), (2000, 0.8), (50, 1.0)])
def test_filter_keeps_what_sorting_the_vocabulary_keeps(kind, top_k, top_p):
  logits = random_logits(kind)
  expected = sorted_filter(logits, top_k, top_p)
  sampling = sampling_lib.Sampling(1.0, top_k, top_p)
  for candidates in (1, 64, VOCAB):  # the nucleus searched by bisection, among the 64 likeliest, all sorted
    got = jax.jit(lambda x, c=candidates: sampling_lib.filter_logits(x, sampling, c))(logits)
    np.testing.assert_array_equal(np.asarray(got), expected, err_msg=f"candidates={candidates}")


def test_flat_logits_take_the_whole_vocabulary_search():
  """The fallback case: the 64 likeliest tokens hold less than top_p, so the nucleus is found by bisection."""
  logits = random_logits("flat")
  probs = np.asarray(jax.nn.softmax(logits, -1))
  assert np.all(-np.sort(-probs, -1)[:, :64].sum(-1) < 0.9)
  kept = np.isfinite(np.asarray(sampling_lib.filter_logits(jnp.asarray(logits), sampling_lib.Sampling(1.0, 0, 0.9),
                                                           64)))
  assert np.all(kept.sum(-1) > 64)
  np.testing.assert_array_equal(kept, np.isfinite(sorted_filter(logits, 0, 0.9)))


@pytest.mark.parametrize("kind", ["peaked", "flat", "ties"])
@pytest.mark.parametrize("redraws", [0, 1, sampling_lib.REDRAWS])
def test_same_key_same_token_as_sorting_in_float32(kind, redraws, monkeypatch):
  """Against the previous implementation: the same token for each of 200 keys x 8 rows (masses summed in
  float32 may move the cutoff by one token only when top_p falls within rounding of a token's mass), whether
  the token is a Gumbel max tried (redraws) or every row's nucleus is found (0 tries: the cutoff's path)."""
  monkeypatch.setattr(sampling_lib, "REDRAWS", redraws)
  logits = jnp.asarray(random_logits(kind))
  keys = jax.random.split(jax.random.key(3), 200)
  sampling = sampling_lib.Sampling(0.7, 0, 0.9)
  draw = lambda fn: jax.jit(jax.vmap(lambda key, x: fn(x, key, sampling), (0, None)))(keys, logits)
  new, old = np.asarray(draw(sampling_lib.sample_logits)), np.asarray(draw(previous_sample))
  np.testing.assert_array_equal(new, old)
  assert len(np.unique(new)) > (1 if kind == "peaked" else 100)  # the draws do vary


def test_sampling_settings_are_checked():
  with pytest.raises(ValueError, match="top_p"):
    sampling_lib.Sampling(0.6, 0, 0.0)
  with pytest.raises(ValueError, match="top_k"):
    sampling_lib.Sampling(0.6, -1, 0.9)
  with pytest.raises(ValueError, match="exceeds the vocabulary"):
    sampling_lib.filter_logits(jnp.zeros((1, 8)), sampling_lib.Sampling(1.0, 9, 1.0))


def test_first_argmax_is_jnp_argmax_with_ties_and_nan():
  x = np.round(np.random.default_rng(4).standard_normal((64, 300)) * 2) / 2  # many tied maxima
  x[3, [7, 11]] = np.nan
  x[5, 2] = np.inf
  np.testing.assert_array_equal(np.asarray(sampling_lib.first_argmax(jnp.asarray(x, jnp.float32))),
                                np.argmax(x, -1))


def test_temperature_alone_draws_what_jax_random_categorical_draws():
  logits = jnp.asarray(random_logits("flat"))
  keys = jax.random.split(jax.random.key(5), 100)
  sampling = sampling_lib.Sampling(0.6)
  new = jax.jit(jax.vmap(lambda key, x: sampling_lib.sample_logits(x, key, sampling), (0, None)))(keys, logits)
  old = jax.jit(jax.vmap(lambda key, x: jax.random.categorical(key, x / 0.6), (0, None)))(keys, logits)
  np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
