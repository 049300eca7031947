"""The OPT decoder exactly as OPT defines it, with top-down cross-attention blocks and a KV cache.

OPT (Zhang et al., 2022) as Hugging Face's `OPTForCausalLM` computes it: learned positions offset by 2,
pre- or post-LayerNorm layers, ReLU FFN, optional `project_in`/`project_out` (OPT-350M), output embedding
tied to the input embedding. Gated cross-attention blocks (`cross_attention.py`) sit after the layers listed
in `cross_attention_layers`. The KV cache is an explicit pytree (see `init_cache`) passed in and returned, so
decoding stays pure.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrr_jax.models import attention as attention_lib
from lrr_jax.models import cross_attention
from lrr_jax.models import layers
from lrr_jax.models import remat
from lrr_jax.models import scan

Array = jax.Array
Cache = dict[str, Any]
# OPT's learned positions start at index 2 (a fairseq legacy of its padding index 1).
POSITION_OFFSET = 2


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """OPT hyper-parameters (Hugging Face names in comments) plus the cross-attention layout."""
  vocab_size: int = 50272
  hidden_size: int = 768
  num_layers: int = 12  # num_hidden_layers
  num_heads: int = 12  # num_attention_heads
  ffn_dim: int = 3072
  max_positions: int = 2048  # max_position_embeddings
  word_embed_proj_dim: int = 0  # 0: same as hidden_size (no project_in/out)
  layer_norm_before: bool = True  # do_layer_norm_before; False for OPT-350M
  remove_final_layer_norm: bool = False  # _remove_final_layer_norm
  enable_bias: bool = True
  layer_norm_affine: bool = True  # layer_norm_elementwise_affine
  activation: str = "relu"  # activation_function
  dropout_rate: float = 0.1  # dropout
  attention_dropout_rate: float = 0.0  # attention_dropout
  init_std: float = 0.02
  cross_attention_layers: tuple[int, ...] = ()  # a block after each of these decoder layers
  cross_attention_heads: int = 0  # 0: num_heads
  cross_attention_ffn_dim: int = 0  # 0: ffn_dim
  gate_init: float = 0.0  # 0: at initialisation the model is the pretrained LM; >0 helps from scratch
  # >1: each cross-attention query starts sharper, so that some heads single out objects from the start;
  # from scratch, a uniform average over the grid says nothing about where things are and nothing is learnt.
  cross_attention_query_scale: float = 1.0
  cross_attention_frames: int = 0  # frames a token's cross-attention reads: 0, all to its own; k, the last k (ours)
  dtype: str = "float32"  # compute dtype
  param_dtype: str = "float32"
  remat_policy: str = "none"  # decoder layers and cross-attention blocks (`remat.POLICIES`)
  # One nn.scan over groups of k layers, each followed by its cross-attention block: needs
  # cross_attention_layers = (k-1, 2k-1, ...) (k = 1 without any).
  scan_layers: bool = False
  attention: str = "auto"  # self- and cross-attention implementation (`attention.IMPLEMENTATIONS`)

  @property
  def embed_dim(self) -> int:
    return self.word_embed_proj_dim or self.hidden_size

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def group_size(self) -> int:
    """Decoder layers per scanned group: the spacing of the cross-attention blocks (1 without any)."""
    return self.cross_attention_layers[0] + 1 if self.cross_attention_layers else 1

  @property
  def num_groups(self) -> int:
    return self.num_layers // self.group_size

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}.")
    if self.attention not in attention_lib.IMPLEMENTATIONS:
      raise ValueError(f"DecoderConfig.attention={self.attention!r}; expected one of "
                       f"{attention_lib.IMPLEMENTATIONS}.")
    bad = [i for i in self.cross_attention_layers if not 0 <= i < self.num_layers]
    if bad:
      raise ValueError(f"cross_attention_layers {bad} are outside [0, {self.num_layers}).")
    remat.check_policy(self.remat_policy, "DecoderConfig.remat_policy")
    regular = tuple(range(self.group_size - 1, self.num_layers, self.group_size))
    if self.scan_layers and self.cross_attention_layers and (
        self.cross_attention_layers != regular or self.num_layers % self.group_size):
      raise ValueError(f"DecoderConfig.scan_layers needs a cross-attention block after every k-th layer "
                       f"((k-1, 2k-1, ...) up to num_layers={self.num_layers}, a multiple of k); "
                       f"cross_attention_layers={self.cross_attention_layers}.")


OPT_CONFIGS = {
    "tiny": DecoderConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, ffn_dim=128,
                          max_positions=256),
    "opt-125m": DecoderConfig(),
    "opt-350m": DecoderConfig(hidden_size=1024, num_layers=24, num_heads=16, ffn_dim=4096,
                              word_embed_proj_dim=512, layer_norm_before=False),
    "opt-1.3b": DecoderConfig(hidden_size=2048, num_layers=24, num_heads=32, ffn_dim=8192),
}


def decoder_config(name: str, **overrides: Any) -> DecoderConfig:
  """A named OPT shape ('tiny', 'opt-125m', 'opt-350m', 'opt-1.3b') with fields overridden."""
  if name not in OPT_CONFIGS:
    raise ValueError(f"Unknown decoder size {name!r}; expected one of {sorted(OPT_CONFIGS)}.")
  return dataclasses.replace(OPT_CONFIGS[name], **overrides)


def init_cache(config: DecoderConfig, batch_size: int, max_length: int, num_visual_tokens: int = 0) -> Cache:
  """An empty KV cache for `max_length` slots (and the projected video, if any).

  Self-attention keys and values are stored heads-major, [batch, heads, slots, head_dim]: a decoding step reads
  each head's slots as one batched matrix product where they lie (`attention.attend_cache`); the projected
  video keeps `attend`'s [batch, tokens, heads, head_dim].
  segment_ids[b, slot] = 0 marks an empty or padding slot that no query attends to. Unrolled layers: an
  entry per layer (`layers_<i>`, `cross_attention_<i>`). Scanned: an entry per layer of a group
  (`layers_<j>`) and one `cross_attention`, each stacked over the groups along axis 1 (the batch stays first).
  """
  dtype = jnp.dtype(config.dtype)
  kv_shape = (batch_size, config.num_heads, max_length, config.head_dim)
  cross_heads = config.cross_attention_heads or config.num_heads
  visual_shape = (batch_size, num_visual_tokens, cross_heads, config.hidden_size // cross_heads)
  kv = lambda shape: {"keys": jnp.zeros(shape, dtype), "values": jnp.zeros(shape, dtype)}
  if config.scan_layers:
    stacked = lambda shape: kv((shape[0], config.num_groups, *shape[1:]))
    self_attention = {f"layers_{j}": stacked(kv_shape) for j in range(config.group_size)}
    cross = stacked(visual_shape) if num_visual_tokens and config.cross_attention_layers else {}
  else:
    self_attention = {f"layers_{i}": kv(kv_shape) for i in range(config.num_layers)}
    cross = {f"cross_attention_{i}": kv(visual_shape)
             for i in config.cross_attention_layers} if num_visual_tokens else {}
  return {"self_attention": self_attention, "segment_ids": jnp.zeros((batch_size, max_length), jnp.int32),
          "cross_attention": cross,
          "visual_frame_index": jnp.zeros((batch_size, num_visual_tokens), jnp.int32),
          "visual_segment_ids": jnp.zeros((batch_size, num_visual_tokens), jnp.int32)}


def self_visibility(segment_ids: Array, cache_segments: Array | None = None,
                    cache_index: Array | None = None) -> attention_lib.Visibility:
  """Causal in slot order, within the same packed example. segment_ids: int[B, S] of the queries; with a
  cache, the keys are its slots (cache_segments int[B, K]) and the queries sit at slots cache_index + s."""
  if cache_segments is None:
    return attention_lib.Visibility(segment_ids, segment_ids, causal=True)
  slots = (cache_index + jnp.arange(segment_ids.shape[1], dtype=jnp.int32))[None]
  return attention_lib.Visibility(segment_ids, cache_segments, last_key=slots)


class DecoderLayer(nn.Module):
  """One OPT layer: self-attention and FFN, LayerNorm before (pre-LN) or after (post-LN) each."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, hidden: Array, visibility: attention_lib.Visibility, kv_cache: Cache | None,
               cache_index: Array | None, deterministic: bool) -> tuple[Array, Cache | None]:
    cfg = self.config
    kwargs = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    kernel_init = nn.initializers.normal(cfg.init_std)
    norm = lambda name: layers.layer_norm(name=name, affine=cfg.layer_norm_affine, **kwargs)
    attention = attention_lib.MultiHeadAttention(
        cfg.num_heads, cfg.head_dim, cfg.hidden_size, use_bias=cfg.enable_bias,
        dropout_rate=cfg.attention_dropout_rate, implementation=cfg.attention, kernel_init=kernel_init,
        name="self_attn", **kwargs)
    dropout = nn.Dropout(cfg.dropout_rate, deterministic=deterministic)

    residual = hidden
    if cfg.layer_norm_before:
      hidden = norm("self_attn_layer_norm")(hidden)
    keys, values = attention.keys_values(hidden)
    if kv_cache is not None:  # written heads-major (see `init_cache`)
      write = lambda old, new: jax.lax.dynamic_update_slice_in_dim(old, new.swapaxes(1, 2).astype(old.dtype),
                                                                   cache_index, axis=2)
      kv_cache = {"keys": write(kv_cache["keys"], keys), "values": write(kv_cache["values"], values)}
      hidden = attention.attend(attention.queries(hidden), kv_cache["keys"], kv_cache["values"], visibility,
                                deterministic, heads_major=True)
    else:
      hidden = attention.attend(attention.queries(hidden), keys, values, visibility, deterministic)
    hidden = residual + dropout(hidden)
    if not cfg.layer_norm_before:
      hidden = norm("self_attn_layer_norm")(hidden)

    residual = hidden
    if cfg.layer_norm_before:
      hidden = norm("final_layer_norm")(hidden)
    hidden = layers.FeedForward(cfg.ffn_dim, cfg.hidden_size, cfg.activation, use_bias=cfg.enable_bias,
                                kernel_init=kernel_init, name="mlp", **kwargs)(hidden)
    hidden = residual + dropout(hidden)
    if not cfg.layer_norm_before:
      hidden = norm("final_layer_norm")(hidden)
    hidden = nn.with_logical_constraint(hidden, ("activation_batch", "activation_length", "activation_embed"))
    return hidden, kv_cache


def cross_attention_block(cfg: DecoderConfig, name: str) -> nn.Module:
  """A gated cross-attention block of the decoder, rematerialised as `cfg.remat_policy` says. Its attention
  probabilities drop at `attention_dropout_rate`, as the self-attention's (OPT: 0), so that the attention
  kernels run (none drops probabilities; `dropout_rate` > 0 here would force the reference path)."""
  block_class = remat.remat(cross_attention.GatedCrossAttention, cfg.remat_policy, static_argnums=(5,))
  return block_class(cfg.hidden_size, cfg.cross_attention_heads or cfg.num_heads,
                     cfg.cross_attention_ffn_dim or cfg.ffn_dim, cfg.activation, cfg.attention_dropout_rate,
                     cfg.gate_init,
                     cfg.cross_attention_query_scale, cfg.attention, dtype=jnp.dtype(cfg.dtype),
                     param_dtype=jnp.dtype(cfg.param_dtype), name=name)


class LayerGroup(nn.Module):
  """`group_size` decoder layers, then a gated cross-attention block if the decoder has any: the body of the
  scanned decoder. Its cache: {"self_attention": {"layers_<j>": kv}, "cross_attention": kv or {}}."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, hidden: Array, cache: Cache | None, visibility: attention_lib.Visibility,
               cache_index: Array | None, visual_tokens: Array | None,
               cross_visibility: attention_lib.Visibility | None, deterministic: bool
               ) -> tuple[Array, Cache | None]:
    """visual_tokens: the video to project (None: read the cached projection, if any). Returns the new
    hidden states and this group's new cache (its cross-attention entry only when the video was given)."""
    cfg = self.config
    layer_class = remat.remat(DecoderLayer, cfg.remat_policy, static_argnums=(5,))
    new_cache = None if cache is None else {"self_attention": {}, "cross_attention": None}
    for j in range(cfg.group_size):
      layer_cache = None if cache is None else cache["self_attention"][f"layers_{j}"]
      hidden, layer_cache = layer_class(cfg, name=f"layers_{j}")(hidden, visibility, layer_cache, cache_index,
                                                                  deterministic)
      if new_cache is not None:
        new_cache["self_attention"][f"layers_{j}"] = layer_cache
    if not cfg.cross_attention_layers or cross_visibility is None:
      return hidden, new_cache
    block = cross_attention_block(cfg, "cross_attention")
    if visual_tokens is None:
      keys, values = cache["cross_attention"]["keys"], cache["cross_attention"]["values"]
    elif new_cache is not None:  # decoding: the projection is kept for the later tokens
      keys, values = block.visual_keys_values(visual_tokens)
      new_cache["cross_attention"] = {"keys": keys, "values": values}
    else:  # training: projected inside the (rematerialised) block
      keys, values = visual_tokens, None
    return block(hidden, keys, values, cross_visibility, deterministic), new_cache


class Decoder(nn.Module):
  """OPT embeddings, layers with interleaved gated cross-attention, tied output embedding."""
  config: DecoderConfig

  def setup(self):
    cfg = self.config
    kwargs = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype))
    init = nn.initializers.normal(cfg.init_std)
    self.embed_tokens = nn.Embed(cfg.vocab_size, cfg.embed_dim, embedding_init=layers.partitioned(
        init, ("vocab", "embed")), **kwargs)
    self.embed_positions = nn.Embed(cfg.max_positions + POSITION_OFFSET, cfg.hidden_size,
                                    embedding_init=layers.partitioned(init, ("positions", "embed")), **kwargs)
    if cfg.word_embed_proj_dim and cfg.word_embed_proj_dim != cfg.hidden_size:
      self.project_in = layers.dense(cfg.hidden_size, ("word_embed", "embed"), name="project_in",
                                     use_bias=False, kernel_init=init, **kwargs)
      self.project_out = layers.dense(cfg.word_embed_proj_dim, ("embed", "word_embed"), name="project_out",
                                      use_bias=False, kernel_init=init, **kwargs)
    if cfg.layer_norm_before and not cfg.remove_final_layer_norm:
      self.final_layer_norm = layers.layer_norm(name="final_layer_norm", affine=cfg.layer_norm_affine,
                                                **kwargs)
    self.embed_dropout = nn.Dropout(cfg.dropout_rate)
    if cfg.scan_layers:  # cache entries scan along axis 1 (batch first, as unrolled)
      self.layers = scan.scanned(LayerGroup, cfg.num_groups, in_axes=(1,) + (nn.broadcast,) * 5, out_axes=1)(
          cfg, name="layers")
    else:
      layer_class = remat.remat(DecoderLayer, cfg.remat_policy, static_argnums=(5,))
      self.layers = [layer_class(cfg, name=f"layers_{i}") for i in range(cfg.num_layers)]
      self.cross_attention = {i: cross_attention_block(cfg, f"cross_attention_{i}")
                              for i in cfg.cross_attention_layers}

  def __call__(self, tokens: Array, positions: Array, segment_ids: Array, *,
               frame_index: Array | None = None,
               visual: cross_attention.VisualMemory | None = None,
               cache: Cache | None = None, cache_index: Array | None = None,
               deterministic: bool = True) -> tuple[Array, Cache | None]:
    """Logits for `tokens`, and the updated cache when decoding with one.

    tokens, positions (0-based within each example), segment_ids (0 = padding), frame_index
    (last visible frame, -1 = none): int[B, S]. visual: the encoded video, or None to reuse the video
    projected into `cache` by an earlier call (or for text only). cache_index: first cache slot to write.
    Returns float32 logits [B, S, vocab] and the new cache (None without one).
    """
    hidden, cache = self.features(tokens, positions, segment_ids, frame_index=frame_index, visual=visual,
                                  cache=cache, cache_index=cache_index, deterministic=deterministic)
    return self.logits(hidden), cache

  def features(self, tokens: Array, positions: Array, segment_ids: Array, *,
               frame_index: Array | None = None,
               visual: cross_attention.VisualMemory | None = None,
               cache: Cache | None = None, cache_index: Array | None = None,
               deterministic: bool = True) -> tuple[Array, Cache | None]:
    """As `__call__`, but the last hidden states [B, S, embed_dim] that `logits` projects onto the vocabulary."""
    cfg = self.config
    hidden = self.embed_tokens(tokens)
    if cfg.word_embed_proj_dim and cfg.word_embed_proj_dim != cfg.hidden_size:
      hidden = self.project_in(hidden)
    hidden = hidden + self.embed_positions(positions + POSITION_OFFSET)
    hidden = self.embed_dropout(hidden, deterministic=deterministic)

    if cache is None:
      visibility = self_visibility(segment_ids)
      new_cache = None
    else:
      cache_segments = jax.lax.dynamic_update_slice_in_dim(cache["segment_ids"], segment_ids, cache_index, 1)
      visibility = self_visibility(segment_ids, cache_segments, cache_index)
      new_cache = dict(cache, segment_ids=cache_segments)
      if visual is not None and cfg.cross_attention_layers:
        new_cache.update(visual_frame_index=visual.frame_index, visual_segment_ids=visual.segment_ids)

    cross_visibility = None
    if cfg.cross_attention_layers and (visual is not None or (cache is not None and cache["cross_attention"])):
      frame_index = jnp.full_like(tokens, -1) if frame_index is None else frame_index
      source = visual if visual is not None else cross_attention.VisualMemory(
          None, new_cache["visual_frame_index"], new_cache["visual_segment_ids"])
      cross_visibility = cross_attention.frame_visibility(frame_index, segment_ids, source.frame_index,
                                                          source.segment_ids, cfg.cross_attention_frames)
    layers_fn = self._scanned_layers if cfg.scan_layers else self._unrolled_layers
    hidden, new_cache = layers_fn(hidden, visibility, new_cache, cache_index, visual, cross_visibility,
                                  deterministic)
    if cfg.layer_norm_before and not cfg.remove_final_layer_norm:
      hidden = self.final_layer_norm(hidden)
    if cfg.word_embed_proj_dim and cfg.word_embed_proj_dim != cfg.hidden_size:
      hidden = self.project_out(hidden)
    return hidden, new_cache

  def logits(self, hidden: Array) -> Array:
    """float32 logits [..., vocab] of last hidden states [..., embed_dim] (the tied output embedding)."""
    return self.embed_tokens.attend(hidden).astype(jnp.float32)

  def _unrolled_layers(self, hidden: Array, visibility: attention_lib.Visibility, cache: Cache | None,
                       cache_index: Array | None, visual: cross_attention.VisualMemory | None,
                       cross_visibility: attention_lib.Visibility | None,
                       deterministic: bool) -> tuple[Array, Cache | None]:
    """The layers one by one; the cache holds an entry per layer and per cross-attention block."""
    visual_kv = None
    if cross_visibility is not None and visual is not None and cache is None:  # projected inside each block
      visual_kv = {i: (visual.tokens, None) for i in self.cross_attention}
    elif cross_visibility is not None and visual is not None:
      visual_kv = {i: block.visual_keys_values(visual.tokens) for i, block in self.cross_attention.items()}
      cache["cross_attention"] = {f"cross_attention_{i}": {"keys": k, "values": v}
                                  for i, (k, v) in visual_kv.items()}
    elif cross_visibility is not None:
      visual_kv = {i: (cache["cross_attention"][f"cross_attention_{i}"]["keys"],
                       cache["cross_attention"][f"cross_attention_{i}"]["values"]) for i in self.cross_attention}
    old_self_attention = None if cache is None else cache["self_attention"]
    if cache is not None:
      cache["self_attention"] = {}
    for i, layer in enumerate(self.layers):
      layer_cache = None if cache is None else old_self_attention[f"layers_{i}"]
      hidden, layer_cache = layer(hidden, visibility, layer_cache, cache_index, deterministic)
      if cache is not None:
        cache["self_attention"][f"layers_{i}"] = layer_cache
      if i in self.cross_attention and visual_kv is not None:
        hidden = self.cross_attention[i](hidden, *visual_kv[i], cross_visibility, deterministic)
    return hidden, cache

  def _scanned_layers(self, hidden: Array, visibility: attention_lib.Visibility, cache: Cache | None,
                      cache_index: Array | None, visual: cross_attention.VisualMemory | None,
                      cross_visibility: attention_lib.Visibility | None,
                      deterministic: bool) -> tuple[Array, Cache | None]:
    """One scan over the groups of layers; the cache's entries are stacked over the groups (axis 1)."""
    group_cache = None
    if cache is not None:  # the cached video projection is read only when no video is given
      group_cache = {"self_attention": cache["self_attention"],
                     "cross_attention": cache["cross_attention"] if visual is None else {}}
    hidden, group_cache = self.layers(hidden, group_cache, visibility, cache_index,
                                      None if visual is None else visual.tokens, cross_visibility, deterministic)
    if cache is not None:
      cache["self_attention"] = group_cache["self_attention"]
      if group_cache["cross_attention"] is not None:
        cache["cross_attention"] = group_cache["cross_attention"]
    return hidden, cache


def stack_layers(params: dict[str, Any], config: DecoderConfig) -> dict[str, Any]:
  """A `Decoder`'s variables (one collection) from the unrolled layout (`layers_<i>`, `cross_attention_<i>`)
  to the scanned one (`layers/layers_<j>`, `layers/cross_attention`, stacked over the groups)."""
  k = config.group_size
  rest = {name: v for name, v in params.items() if not name.startswith(("layers_", "cross_attention_"))}
  groups = []
  for g in range(config.num_groups):
    group = {f"layers_{j}": params[f"layers_{g * k + j}"] for j in range(k) if f"layers_{g * k + j}" in params}
    if f"cross_attention_{g * k + k - 1}" in params:
      group["cross_attention"] = params[f"cross_attention_{g * k + k - 1}"]
    groups.append(group)
  return {**rest, "layers": scan.stack(groups)} if groups and groups[0] else rest


def unstack_layers(params: dict[str, Any], config: DecoderConfig) -> dict[str, Any]:
  """The inverse of `stack_layers`: scanned layout -> unrolled layout."""
  k = config.group_size
  unrolled = {name: v for name, v in params.items() if name != "layers"}
  for g, group in enumerate(scan.unstack(params["layers"], config.num_groups) if "layers" in params else []):
    for name, value in group.items():
      unrolled[f"cross_attention_{g * k + k - 1}" if name == "cross_attention" else
               f"layers_{g * k + int(name.removeprefix('layers_'))}"] = value
  return unrolled
