"""Attention through kernels: who may read whom (`Visibility`), one entry point (`attend`), the multi-head module.

The config field `attention` picks the implementation; each is given the same `Visibility` and what it
materialises per call differs (B batch, H heads, Sq queries, Sk keys):
- "reference": `layers.masked_attention`, the einsum path: the bool mask [B, 1, Sq, Sk], float32 scores
  [B, H, Sq, Sk], a masked copy and the softmax (plus a dropout mask when training with attention dropout).
- "xla": `jax.nn.dot_product_attention(implementation=None)` with the bool mask: XLA's own composition, which
  still forms float32 logits and probabilities [B, H, Sq, Sk]. Portable; no less memory than reference.
- "cudnn": cuDNN flash attention (`implementation="cudnn"`; GPU, bfloat16/float16, head_dim a multiple of 8):
  scores stay in on-chip tiles; the bool mask becomes one additive bias [B, 1, Sq, Sk] in the compute dtype
  (its gradient too in the backward pass); causal attention also skips the blocks above the diagonal.
- "splash": Pallas splash attention (TPU; Pallas interpret mode elsewhere, for tests), per example on
  [H, S, D]: only int32 segment ids [B, S], the per-query bounds [B, Sq, 128] of `last_key` and the kernel's
  logsumexp [B, H, Sq]. Lengths are padded to a multiple of 128. Causal attention skips blocks; a `last_key`
  known only at run time (cross-attention frames, cached decoding) is computed in the kernel per block.
- "auto": splash on TPU for sequences of at least one block (128), cuDNN on GPU for bfloat16/float16 shapes it
  takes, else reference (on CPU, measured against xla: as fast forward, faster with gradients).

No kernel drops attention probabilities: with attention dropout active (training, rate > 0) every choice
computes reference. The decoder's self- and cross-attention drop at `attention_dropout_rate` (OPT's
`attention_dropout`, 0), so the recipes train through the kernels. A query that may read nothing gets a finite
average of the values on every path (never NaN); callers that need it to read nothing zero it
(`cross_attention.GatedCrossAttention`). A decoder's KV cache is read through `attend_cache` (heads-major).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel

from lrr_jax.models import layers

Array = jax.Array
IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn", "splash")
SPLASH_BLOCK = 128  # splash's lane width: block sizes are multiples of it, and lengths are padded to it
_PADDING_KEY, _PADDING_QUERY = -2, -3  # segment ids of the padding splash adds (no real id is below -1)


@struct.dataclass
class Visibility:
  """Which keys each query reads: query i reads key j iff query_segments[i] == key_segments[j], j <=
  last_key[i] (keys are in order), last_key[i] - j < window (if window) and j >= first_key[i] (if given).

  query_segments: int[B, Sq]; key_segments: int[B, Sk]. last_key: int[B, Sq], or None: with `causal`,
  last_key[i] = i, known when tracing (kernels skip the blocks above the diagonal); without, no order.
  """
  query_segments: Array
  key_segments: Array
  last_key: Array | None = None
  causal: bool = struct.field(pytree_node=False, default=False)
  window: int = struct.field(pytree_node=False, default=0)
  first_key: Array | None = None  # int[B, Sq]: the first key each query may read (None: from the start)

  def query_last_key(self) -> Array | None:
    """int[B or 1, Sq]: the last key each query may read (None: any)."""
    if self.causal:
      return jnp.arange(self.query_segments.shape[1])[None]
    return self.last_key

  def dense(self) -> Array:
    """bool[B, 1, Sq, Sk], True = may attend (the mask the reference and XLA paths take)."""
    allowed = self.query_segments[:, :, None] == self.key_segments[:, None, :]
    keys = jnp.arange(self.key_segments.shape[1])[None, None, :]
    last = self.query_last_key()
    if last is not None:
      allowed &= keys <= last[:, :, None]
      if self.window:
        allowed &= last[:, :, None] - keys < self.window
    if self.first_key is not None:
      allowed &= keys >= self.first_key[:, :, None]
    return allowed[:, None]


def choose(implementation: str, query: Array, num_keys: int, dropout: bool = False) -> str:
  """The implementation `attend` runs for `implementation` (see the module docstring for 'auto')."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown attention implementation {implementation!r}; expected one of {IMPLEMENTATIONS}.")
  if dropout:
    return "reference"
  if implementation != "auto":
    return implementation
  platform = _platform()
  if platform == "tpu" and min(query.shape[1], num_keys) >= SPLASH_BLOCK:
    return "splash"
  head_dim, lengths = query.shape[-1], (query.shape[1], num_keys)
  if (platform in ("gpu", "cuda") and query.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0
      and head_dim <= 128 and all(n % 2 == 0 for n in lengths)):
    return "cudnn"
  return "reference"


def attend(query: Array, key: Array, value: Array, visibility: Visibility | None, implementation: str = "auto",
           *, dropout_rng: Array | None = None, dropout_rate: float = 0.0) -> Array:
  """Attention of scaled queries [B, Sq, H, D] over keys/values [B or 1, Sk, H, D] -> [B, Sq, H, D].

  visibility: who reads whom (None: every query reads every key). implementation: one of IMPLEMENTATIONS.
  """
  dropout = dropout_rng is not None and dropout_rate > 0.0
  implementation = choose(implementation, query, key.shape[1], dropout)
  if implementation == "reference":
    mask = None if visibility is None else visibility.dense()
    return layers.masked_attention(query, key, value, mask, dropout_rng=dropout_rng, dropout_rate=dropout_rate)
  key, value = (jnp.broadcast_to(x, (query.shape[0], *x.shape[1:])) for x in (key, value))
  if implementation == "splash" and visibility is not None and visibility.first_key is not None:
    implementation = "xla"  # the splash kernels take no per-query first key; the dense mask does
  if implementation == "splash":
    return _per_shard(splash_attention, query, key, value, visibility)
  return fused_attention(query, key, value, visibility, implementation)


def attend_cache(query: Array, key: Array, value: Array, visibility: Visibility | None,
                 implementation: str = "auto") -> Array:
  """Attention of scaled queries [B, Sq, H, D] over a KV cache stored heads-major, keys/values [B, H, Sk, D]
  (`decoder.init_cache`) -> [B, Sq, H, D]. The reference path reads the cache in place as a batched matrix
  product per head; on XLA:CPU at OPT-125M's widths, 10 rows decoding against 256 slots, 1.0 ms a layer against
  6.4 ms for the multiply-and-sum over the [B, Sk, H, D] layout (and 8.0 for its einsum, which copies the cache
  to heads-major first, every layer and token). Other implementations read the cache transposed to `attend`'s
  layout (a prefill: once per prompt)."""
  if choose(implementation, query, key.shape[2]) != "reference":
    return attend(query, key.swapaxes(1, 2), value.swapaxes(1, 2), visibility, implementation)
  scores = jnp.einsum("bqhd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
  if visibility is not None:  # as layers.masked_attention: a row with nothing visible reads uniformly
    scores = jnp.where(visibility.dense(), scores, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(scores, axis=-1)
  return jnp.einsum("bhqk,bhkd->bqhd", weights.astype(value.dtype), value)


def fused_attention(query: Array, key: Array, value: Array, visibility: Visibility | None,
                    implementation: str) -> Array:
  """`jax.nn.dot_product_attention` ('xla' or 'cudnn'); queries are already scaled."""
  if implementation == "cudnn" and query.dtype not in (jnp.bfloat16, jnp.float16):
    raise ValueError(f"attention='cudnn' needs bfloat16 or float16 activations, got {query.dtype}: set the "
                     "model's dtype='bfloat16' or attention='xla'.")
  mask = None if visibility is None else visibility.dense()
  return jax.nn.dot_product_attention(
      query, key, value, mask=mask, scale=1.0, is_causal=implementation == "cudnn" and bool(
          visibility is not None and visibility.causal), implementation=None if implementation == "xla" else "cudnn")


def splash_attention(query: Array, key: Array, value: Array, visibility: Visibility | None) -> Array:
  """Splash attention over [B, S, H, D] inputs (the kernel runs per example on [H, S, D]; unscaled)."""
  b, num_queries, heads, _ = query.shape
  num_keys = key.shape[1]
  q_len, kv_len = _round_up(num_queries), _round_up(num_keys)
  if visibility is None:
    visibility = Visibility(jnp.ones((b, num_queries), jnp.int32), jnp.ones((b, num_keys), jnp.int32))
  pad = lambda x, length, value: jnp.pad(x, [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2),
                                         constant_values=value)
  heads_major = lambda x, length: pad(x, length, 0).transpose(0, 2, 1, 3)
  query_segments = pad(visibility.query_segments.astype(jnp.int32), q_len, _PADDING_QUERY)
  key_segments = pad(jnp.broadcast_to(visibility.key_segments, (b, num_keys)).astype(jnp.int32), kv_len,
                     _PADDING_KEY)
  dynamic = visibility.last_key is not None and not visibility.causal
  kernel = _splash_kernel(q_len, kv_len, heads, "dynamic" if dynamic else "causal" if visibility.causal else "",
                          visibility.window, _platform() != "tpu")

  def one_example(q, k, v, q_segments, kv_segments, last_key):
    run = kernel if last_key is None else _with_last_key(kernel, last_key - kv_len)
    return run(q, k, v, segment_ids=splash.SegmentIds(q=q_segments, kv=kv_segments))

  last_key = None
  if dynamic:
    last_key = pad(jnp.broadcast_to(visibility.last_key, (b, num_queries)).astype(jnp.int32), q_len, -1)
  out = jax.vmap(one_example)(heads_major(query, q_len), heads_major(key, kv_len), heads_major(value, kv_len),
                              query_segments, key_segments, last_key)
  return out.transpose(0, 2, 1, 3)[:, :num_queries]


def _splash_kernel(q_len: int, kv_len: int, heads: int, order: str, window: int,
                   interpret: bool) -> splash_attention_kernel.SplashAttentionKernel:
  """A splash kernel for one padded shape. order '': segments only; 'causal': key <= query (static; with
  `window`, also query - key < window); 'dynamic': key <= a bound given per query at call time."""
  if order == "causal" and window:
    mask = splash.LocalMask((q_len, kv_len), window_size=(window - 1, 0), offset=0)
  elif order == "causal":
    mask = splash.CausalMask((q_len, kv_len))
  elif order == "dynamic":  # q + kv_len >= k holds everywhere: no block is skipped; bounds come per call
    mask = splash.CausalMask((q_len, kv_len), offset=kv_len)
  else:
    mask = splash.FullMask((q_len, kv_len))
  bq, bkv = _block(q_len), _block(kv_len)
  sizes = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
                            block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)
  # Built per trace (block metadata is numpy work, staged as constants of the trace).
  return splash.make_splash_mha(splash.MultiHeadMask([mask] * heads), block_sizes=sizes, head_shards=1,
                                q_seq_shards=1, interpret=interpret)


def _with_last_key(kernel: splash_attention_kernel.SplashAttentionKernel,
                   q_sequence: Array) -> splash_attention_kernel.SplashAttentionKernel:
  """`kernel` (built with the 'dynamic' mask) reading key k from query q iff k <= q_sequence[q] + kv_len.

  The mask function of `CausalMask(offset=kv_len)` compares the kernel's `q_sequence` input with the key
  index inside each block; replacing that input with per-query values makes the bound dynamic.
  """
  replace = lambda info: None if info is None else info._replace(q_sequence=q_sequence)
  return splash_attention_kernel.SplashAttentionKernel(
      replace(kernel.fwd_mask_info), replace(kernel.dq_mask_info), replace(kernel.dkv_mask_info), **kernel.kwargs)


def _per_shard(fn, query: Array, key: Array, value: Array, visibility: Visibility | None) -> Array:
  """`fn` under `shard_map` over the batch and head axes (by the logical rules) when a mesh is set: a Pallas
  kernel is opaque to XLA's partitioner, which would otherwise gather its inputs onto every device. An axis
  that does not divide evenly (a batch of one when decoding) is not split."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return fn(query, key, value, visibility)
  size = lambda axes: math.prod(mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,)))
  batch, _, heads, _ = nn.logical_to_mesh_axes(("activation_batch", None, "heads", None))
  batch = batch if batch and query.shape[0] % size(batch) == 0 else None
  heads = heads if heads and query.shape[2] % size(heads) == 0 else None
  spec = jax.sharding.PartitionSpec(batch, None, heads, None)
  rows = lambda x: jax.sharding.PartitionSpec(batch if x.shape[0] == query.shape[0] else None, None)
  return jax.shard_map(fn, in_specs=(spec, spec, spec, jax.tree.map(rows, visibility)), out_specs=spec,
                       check_vma=False)(query, key, value, visibility)


def _platform() -> str:
  """The platform being compiled for: the mesh's when one is set (ahead-of-time TPU compiles on a CPU host)."""
  device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
  return device.platform if device is not None else jax.default_backend()


def _round_up(length: int) -> int:
  return -(-length // SPLASH_BLOCK) * SPLASH_BLOCK


def _block(length: int) -> int:
  """The largest of 512, 256, 128 that divides `length` (a multiple of 128)."""
  return next(size for size in (512, 256, SPLASH_BLOCK) if length % size == 0)


class MultiHeadAttention(nn.Module):
  """Multi-head attention with separate q/k/v/out projections (named as OPT names them).

  Projections are exposed as methods so that callers can cache keys and values (decoder KV cache,
  cross-attention over a video encoded once). `implementation` is the config's `attention` field.
  """
  num_heads: int
  head_dim: int
  out_features: int
  use_bias: bool = True
  dropout_rate: float = 0.0
  implementation: str = "auto"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  query_init_scale: float = 1.0  # >1: sharper attention at initialisation (query kernel std times this)

  def setup(self):
    # Projections are 2-D kernels over the fused heads x head_dim axis ('heads'), as OPT stores them; a
    # multi-dimensional DenseGeneral kernel is initialised flat, which per-parameter sharding rejects.
    kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=self.use_bias,
                  kernel_init=self.kernel_init)
    width = self.num_heads * self.head_dim
    query_init = self.kernel_init if self.query_init_scale == 1.0 else nn.initializers.variance_scaling(
        self.query_init_scale ** 2, "fan_in", "truncated_normal")
    self.q_proj = layers.dense(width, ("embed", "heads"), name="q_proj", **{**kwargs, "kernel_init": query_init})
    self.k_proj = layers.dense(width, ("embed", "heads"), name="k_proj", **kwargs)
    self.v_proj = layers.dense(width, ("embed", "heads"), name="v_proj", **kwargs)
    self.out_proj = layers.dense(self.out_features, ("heads", "embed"), name="out_proj", **kwargs)

  def _split_heads(self, x: Array) -> Array:
    return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

  def queries(self, inputs: Array) -> Array:
    """[B, S, E] -> scaled queries [B, S, H, D]. OPT scales after the bias is added, as here."""
    return self._split_heads(self.q_proj(inputs)) * (self.head_dim ** -0.5)

  def keys_values(self, inputs: Array) -> tuple[Array, Array]:
    """[B, S, E] -> keys, values [B, S, H, D]."""
    return self._split_heads(self.k_proj(inputs)), self._split_heads(self.v_proj(inputs))

  def attend(self, query: Array, key: Array, value: Array, visibility: Visibility | None,
             deterministic: bool = True, heads_major: bool = False) -> Array:
    """Scaled queries over keys/values -> [B, Sq, out_features]; heads_major: keys/values are a KV cache
    [B, H, Sk, D] (`attend_cache`; no dropout: a cache is for inference)."""
    if heads_major:
      attended = attend_cache(query, key, value, visibility, self.implementation)
    else:
      rng = None if deterministic or self.dropout_rate == 0.0 else self.make_rng("dropout")
      attended = attend(query, key, value, visibility, self.implementation, dropout_rng=rng,
                        dropout_rate=self.dropout_rate)
    return self.out_proj(attended.reshape(*attended.shape[:-2], -1))

  def __call__(self, inputs_q: Array, inputs_kv: Array, visibility: Visibility | None,
               deterministic: bool = True) -> Array:
    key, value = self.keys_values(inputs_kv)
    return self.attend(self.queries(inputs_q), key, value, visibility, deterministic)
