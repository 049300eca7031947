"""Building blocks shared by the model parts: partitioned dense/norm layers and the reference masked attention
(`attention.py` builds the multi-head module and the kernel paths on it).

Logical axis names used for parameters (mapped onto mesh axes by the rules in the training config):
`vocab`, `embed`, `word_embed`, `positions`, `heads` (heads x head_dim, fused), `mlp`, `norm`, `conv_height`,
`conv_width`, `conv_in`, `conv_out`.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Array = jax.Array


def partitioned(init: nn.initializers.Initializer, axes: Sequence[str]) -> nn.initializers.Initializer:
  """An initializer whose parameter carries logical axis names."""
  return nn.with_logical_partitioning(init, tuple(axes))


def dense(features: int | tuple[int, ...], kernel_axes: Sequence[str], *, name: str, dtype: Dtype,
          param_dtype: Dtype, use_bias: bool = True, axis: int | tuple[int, ...] = -1,
          kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()) -> nn.DenseGeneral:
  """A DenseGeneral whose kernel and bias carry logical axis names (bias axes = kernel's output axes)."""
  num_in = len(axis) if isinstance(axis, tuple) else 1
  return nn.DenseGeneral(
      features=features, axis=axis, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
      kernel_init=partitioned(kernel_init, kernel_axes),
      bias_init=partitioned(nn.initializers.zeros_init(), kernel_axes[num_in:]))


def layer_norm(*, name: str, dtype: Dtype, param_dtype: Dtype, affine: bool = True,
               epsilon: float = 1e-5) -> nn.LayerNorm:
  """LayerNorm with logically named scale and bias (OPT's epsilon by default)."""
  return nn.LayerNorm(
      epsilon=epsilon, use_scale=affine, use_bias=affine, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=partitioned(nn.initializers.ones_init(), ("norm",)),
      bias_init=partitioned(nn.initializers.zeros_init(), ("norm",)))


def masked_attention_weights(query: Array, key: Array, mask: Array | None) -> Array:
  """float32[B, H, Sq, Sk] softmax weights (shapes as `masked_attention`; a batch-1 key is read by all rows)."""
  shared = key.shape[0] == 1 and query.shape[0] > 1
  if _one_query_rows(query):  # a decoding step of several rows: see `_one_query_scores`
    scores = _one_query_scores(query, key)
  elif shared:
    scores = jnp.einsum("bqhd,khd->bhqk", query, key[0], preferred_element_type=jnp.float32)
  else:
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
  if mask is not None:
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(scores, axis=-1)


def _one_query_rows(query: Array) -> bool:
  """One query in each of several rows (candidates decoded together): scores and values as a multiply and a
  sum. Measured on XLA:CPU at OPT-125M's widths and a 212-slot cache, per layer: 10 rows 2.3 ms against 22 ms
  for the einsums, 2 rows 0.3 against 0.9 ms; one row 1.4 against 0.4 ms, so one row keeps the einsums."""
  return query.shape[1] == 1 and query.shape[0] > 1


def _one_query_scores(query: Array, key: Array) -> Array:
  """float32[B, H, 1, Sk] of one query per row [B, 1, H, D] against keys [B or 1, Sk, H, D], as a multiply and
  a sum over D that read the keys (the projected video, during decoding) where they lie: as a dot, XLA:CPU
  first copies them to [B, H, Sk, D], every layer and every token. (The decoder's own KV cache is stored
  heads-major instead and read by `attention.attend_cache`, faster still.)"""
  scores = jnp.sum(query.astype(jnp.float32) * key.astype(jnp.float32), -1)  # [B, Sk, H]
  return scores.transpose(0, 2, 1)[:, :, None]


def masked_attention(query: Array, key: Array, value: Array, mask: Array | None, *,
                     dropout_rng: Array | None = None, dropout_rate: float = 0.0) -> Array:
  """Scaled dot-product attention with a boolean mask (True = may attend).

  query: [B, Sq, H, D] (already scaled), key/value: [B or 1, Sk, H, D], mask: bool[B, 1 or H, Sq, Sk].
  Scores and softmax are computed in float32. A query row with nothing to attend gets uniform weights
  (finite, never NaN); callers that need such rows to read nothing zero them afterwards.
  """
  shared = key.shape[0] == 1 and query.shape[0] > 1  # one key/value set read by every row (a shared video)
  weights = masked_attention_weights(query, key, mask)
  if dropout_rng is not None and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  if _one_query_rows(query):  # the values read in place too, summed over Sk in float32
    weighted = weights[:, :, 0].transpose(0, 2, 1)[..., None] * value.astype(jnp.float32)  # [B, Sk, H, D]
    return jnp.sum(weighted, 1, keepdims=True).astype(value.dtype)
  if shared:
    return jnp.einsum("bhqk,khd->bqhd", weights.astype(value.dtype), value[0])
  return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)


class FeedForward(nn.Module):
  """fc1 -> activation -> fc2, named as OPT names them."""
  hidden_dim: int
  out_features: int
  activation: str = "relu"
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=self.use_bias,
                  kernel_init=self.kernel_init)
    hidden = dense(self.hidden_dim, ("embed", "mlp"), name="fc1", **kwargs)(inputs)
    hidden = activation_fn(self.activation)(hidden)
    return dense(self.out_features, ("mlp", "embed"), name="fc2", **kwargs)(hidden)


def activation_fn(name: str):
  """The activation named by a config ('relu' for OPT, as in Hugging Face's ACT2FN)."""
  functions = {"relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
               "gelu_new": lambda x: jax.nn.gelu(x, approximate=True), "silu": jax.nn.silu}
  if name not in functions:
    raise ValueError(f"Unknown activation {name!r}; expected one of {sorted(functions)}.")
  return functions[name]
