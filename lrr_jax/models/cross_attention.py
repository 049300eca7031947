"""Top-down cross-attention: text hidden states query the video's grid tokens.

A gated block (Flamingo style) inserted after chosen decoder layers. Both residual branches are scaled by
tanh(gate) with gates initialised at zero, so that at initialisation the LRR model computes exactly the
pretrained LM. The frame-visibility mask lets a text token read only the frames up to its `frame_index` (and,
with the decoder's `cross_attention_frames` = k > 0, only the last k of them: ours, not the paper's).

Inspection (off by default): applied with `mutable=["intermediates"]`, each block sows its attention weights
`float32[B, H, S, M]` as `intermediates/.../cross_attention_<i>/cross_attention_weights` (see
`evaluation/attention_maps.py`), computed by the reference path whatever the `implementation`; otherwise
nothing extra is computed.
"""
import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrr_jax.models import attention
from lrr_jax.models import layers

Array = jax.Array


class VisualMemory(NamedTuple):
  """The video as the decoder sees it, flattened over frames.

  tokens: [B, M, Dv] grid tokens of all frames (M = T * h * w), frame-major.
  frame_index: int[B, M] index along T of the frame each token comes from.
  segment_ids: int[B, M] packed example each token belongs to (0 = padding frame).
  """
  tokens: Array
  frame_index: Array
  segment_ids: Array


def frame_visibility(text_frame_index: Array, text_segment_ids: Array, visual_frame_index: Array,
                     visual_segment_ids: Array, frames: int = 0) -> attention.Visibility:
  """Text token s may read visual token m: same packed example (text segment 0 reads nothing) and m's
  frame <= `text_frame_index[s]` (-1: no frame yet), and with `frames` > 0 also m's frame >
  `text_frame_index[s] - frames` (1: only the token's own frame). Frame indices count along the packed row's
  frame axis.

  text_*: int[B, S]; visual_*: int[B or 1, M], frame-major (frame indices non-decreasing along M), so the
  visible frames of a token are the keys up to `last_key`, found by binary search (no [S, M] comparison).
  """
  batch = text_frame_index.shape[0]
  visual_frame_index, visual_segment_ids = (jnp.broadcast_to(x, (batch, x.shape[1]))
                                            for x in (visual_frame_index, visual_segment_ids))
  last_key = jax.vmap(functools.partial(jnp.searchsorted, side="right"))(visual_frame_index, text_frame_index)
  first_key = None
  if frames:
    first_key = jax.vmap(functools.partial(jnp.searchsorted, side="left"))(
        visual_frame_index, text_frame_index - (frames - 1)).astype(jnp.int32)
  return attention.Visibility(query_segments=jnp.where(text_segment_ids > 0, text_segment_ids, -1),
                              key_segments=visual_segment_ids, last_key=last_key.astype(jnp.int32) - 1,
                              first_key=first_key)


def visual_attention_weights(query: Array, keys: Array, mask: Array) -> Array:
  """float32[B, H, S, M]: the softmax weights the reference path (`layers.masked_attention`) reads `keys` with
  (before dropout).

  query: scaled [B, S, H, D]; keys: [B or 1, M, H, D]; mask: bool[B, 1, S, M]. Rows with no visible frame
  are zero, as their attended value is zeroed in `GatedCrossAttention`.
  """
  weights = layers.masked_attention_weights(query, keys, mask)
  return jnp.where(jnp.any(mask, axis=-1, keepdims=True), weights, 0.0)


class GatedCrossAttention(nn.Module):
  """x + tanh(a) * CrossAttn(LN(x), visual); x + tanh(f) * FFN(LN(x)). Gates a, f start at zero."""
  hidden_size: int
  num_heads: int
  ffn_dim: int
  activation: str = "relu"
  dropout_rate: float = 0.0
  gate_init: float = 0.0
  query_init_scale: float = 1.0
  implementation: str = "auto"  # of the attention (`attention.IMPLEMENTATIONS`)
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def setup(self):
    kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.attention_norm = layers.layer_norm(name="attention_norm", **kwargs)
    self.attention = attention.MultiHeadAttention(
        num_heads=self.num_heads, head_dim=self.hidden_size // self.num_heads, out_features=self.hidden_size,
        dropout_rate=self.dropout_rate, query_init_scale=self.query_init_scale, implementation=self.implementation,
        name="attention", **kwargs)
    self.ffn_norm = layers.layer_norm(name="ffn_norm", **kwargs)
    self.ffn = layers.FeedForward(self.ffn_dim, self.hidden_size, self.activation, name="ffn", **kwargs)
    gate_init = layers.partitioned(nn.initializers.constant(self.gate_init), ())
    self.attention_gate = self.param("attention_gate", gate_init, (), self.param_dtype)
    self.ffn_gate = self.param("ffn_gate", gate_init, (), self.param_dtype)

  def visual_keys_values(self, visual_tokens: Array) -> tuple[Array, Array]:
    """Project the video once; the result can be cached for all decoding steps."""
    return self.attention.keys_values(visual_tokens)

  def __call__(self, hidden: Array, visual_keys: Array, visual_values: Array | None,
               visibility: attention.Visibility, deterministic: bool = True) -> Array:
    """hidden: [B, S, E]; visual_keys/values: the projected video [B or 1, M, H, D] (`visual_keys_values`,
    cached when decoding), or the video's tokens [B or 1, M, E] and None: projected here, inside the block, so
    that a rematerialised block recomputes the projection instead of saving it (training: the keys and values
    of every block at 16 frames are GiBs). visibility: `frame_visibility`."""
    if visual_values is None:
      visual_keys, visual_values = self.visual_keys_values(visual_keys)
    query = self.attention.queries(self.attention_norm(hidden))
    attended = self.attention.attend(query, visual_keys, visual_values, visibility, deterministic)
    mask = visibility.dense()  # bool[B, 1, S, M]; below, only reduced over M (XLA fuses it into the reduction)
    if self.is_mutable_collection("intermediates"):  # only when asked for: training and decoding skip it
      self.sow("intermediates", "cross_attention_weights", visual_attention_weights(query, visual_keys, mask))
    # Tokens that may see no frame read nothing (not the finite average a fully masked row yields).
    sees_any_frame = jnp.any(mask, axis=(1, 3))[..., None]
    attended = jnp.where(sees_any_frame, attended, 0.0)
    hidden = hidden + jnp.tanh(self.attention_gate).astype(self.dtype) * attended
    return hidden + jnp.tanh(self.ffn_gate).astype(self.dtype) * self.ffn(self.ffn_norm(hidden))
