"""Read a local Hugging Face OPT checkpoint into our `DecoderConfig` and decoder params.

Reads `config.json` and the weights (`hf_weights`: `model.safetensors`, sharded safetensors or
`pytorch_model.bin`), so neither `transformers` nor torch is needed for safetensors checkpoints.
"""
import dataclasses
import os
import pathlib
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import numpy as np

from lrr_jax.convert import hf_weights
from lrr_jax.convert import safetensors_file
from lrr_jax import files
from lrr_jax.models import decoder
from lrr_jax.models import layers

PathLike = str | os.PathLike
WeightsFileError = safetensors_file.WeightsFileError
# Our config field <- Hugging Face OPTConfig field.
CONFIG_FIELDS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "ffn_dim": "ffn_dim", "max_positions": "max_position_embeddings",
    "word_embed_proj_dim": "word_embed_proj_dim", "layer_norm_before": "do_layer_norm_before",
    "remove_final_layer_norm": "_remove_final_layer_norm", "enable_bias": "enable_bias",
    "layer_norm_affine": "layer_norm_elementwise_affine", "activation": "activation_function",
    "dropout_rate": "dropout", "attention_dropout_rate": "attention_dropout", "init_std": "init_std",
}
# Sizes that config.json must give; the other fields default to OPTConfig's defaults, which are ours.
REQUIRED_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "ffn_dim",
                   "max_position_embeddings")


def read_config(path: PathLike, **overrides: Any) -> decoder.DecoderConfig:
  """`DecoderConfig` from `<path>/config.json` (local or gs://); `overrides` set our own fields (dtype,
  cross-attention...)."""
  config_file = files.as_path(path) / "config.json"
  if not config_file.is_file():
    raise WeightsFileError(f"No config.json in {path!s}: expected a Hugging Face OPT directory.")
  try:
    hf = files.read_json(config_file, expect=dict)
  except ValueError as e:
    raise WeightsFileError(str(e)) from e
  if hf.get("model_type") != "opt":
    raise WeightsFileError(f"{config_file} has model_type={hf.get('model_type')!r}; only 'opt' is supported.")
  missing = [k for k in REQUIRED_FIELDS if k not in hf]
  if missing:
    raise WeightsFileError(f"{config_file} lacks {', '.join(missing)}, which an OPT config needs.")
  fields = {ours: _config_value(config_file, ours, theirs, hf[theirs]) for ours, theirs in CONFIG_FIELDS.items()
            if theirs in hf and not (theirs == "word_embed_proj_dim" and hf[theirs] is None)}
  try:
    return decoder.DecoderConfig(**{**fields, **overrides})
  except ValueError as e:  # e.g. hidden_size not divisible by num_heads
    raise WeightsFileError(f"{config_file}: {e}") from e


def _config_value(config_file: pathlib.Path, ours: str, theirs: str, value: Any) -> Any:
  """config.json's `value` of `theirs`, if of the type of our field `ours`; else an error naming the key."""
  kind = {f.name: f.type for f in dataclasses.fields(decoder.DecoderConfig)}[ours]
  is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
  ok = {bool: isinstance(value, bool), str: isinstance(value, str),
        int: is_number and isinstance(value, int) and (value > 0 or ours == "word_embed_proj_dim"),
        float: is_number and value >= 0}[kind]
  if not ok:
    wanted = {bool: "true or false", str: "a string", int: "a positive integer", float: "a number >= 0"}[kind]
    raise WeightsFileError(f"{config_file}: {theirs} is {value!r:.100}; expected {wanted}.")
  if ours == "activation":
    try:
      layers.activation_fn(value)
    except ValueError as e:
      raise WeightsFileError(f"{config_file}: {theirs}: {e}") from e
  return value


def _hf_tensor_layout(cfg: decoder.DecoderConfig) -> dict[tuple[str, ...], tuple[str, tuple[int, ...], Any]]:
  """Our param path -> (Hugging Face name, its shape, function from their layout to ours)."""
  e, f, ew = cfg.hidden_size, cfg.ffn_dim, cfg.embed_dim
  transpose = lambda w: w.T
  layout = {
      ("embed_tokens", "embedding"): ("embed_tokens.weight", (cfg.vocab_size, ew), None),
      ("embed_positions", "embedding"): ("embed_positions.weight", (cfg.max_positions + 2, e), None),
  }
  if cfg.embed_dim != cfg.hidden_size:
    layout[("project_in", "kernel")] = ("project_in.weight", (e, ew), transpose)
    layout[("project_out", "kernel")] = ("project_out.weight", (ew, e), transpose)
  norms = []
  if cfg.layer_norm_before and not cfg.remove_final_layer_norm:
    norms.append((("final_layer_norm",), "final_layer_norm"))
  for i in range(cfg.num_layers):
    ours, theirs = f"layers_{i}", f"layers.{i}"
    norms += [((ours, "self_attn_layer_norm"), f"{theirs}.self_attn_layer_norm"),
              ((ours, "final_layer_norm"), f"{theirs}.final_layer_norm")]
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
      layout[(ours, "self_attn", proj, "kernel")] = (f"{theirs}.self_attn.{proj}.weight", (e, e), transpose)
      if cfg.enable_bias:
        layout[(ours, "self_attn", proj, "bias")] = (f"{theirs}.self_attn.{proj}.bias", (e,), None)
    layout[(ours, "mlp", "fc1", "kernel")] = (f"{theirs}.fc1.weight", (f, e), transpose)
    layout[(ours, "mlp", "fc2", "kernel")] = (f"{theirs}.fc2.weight", (e, f), transpose)
    if cfg.enable_bias:
      layout[(ours, "mlp", "fc1", "bias")] = (f"{theirs}.fc1.bias", (f,), None)
      layout[(ours, "mlp", "fc2", "bias")] = (f"{theirs}.fc2.bias", (e,), None)
  if cfg.layer_norm_affine:
    for ours, theirs in norms:
      layout[ours + ("scale",)] = (f"{theirs}.weight", (e,), None)
      layout[ours + ("bias",)] = (f"{theirs}.bias", (e,), None)
  return layout


def _strip_prefix(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Names relative to the decoder: 'model.decoder.x' (OPTForCausalLM) or 'decoder.x' (OPTModel) -> 'x'."""
  stripped = {}
  for name, value in weights.items():
    for prefix in ("model.decoder.", "decoder."):
      if name.startswith(prefix):
        stripped[name[len(prefix):]] = value
  return stripped


def load_hf_opt(path: PathLike, **overrides: Any) -> tuple[decoder.DecoderConfig, dict[str, Any]]:
  """Read a Hugging Face OPT directory into (`DecoderConfig`, decoder params).

  Args:
    path: directory with config.json and the weights; a gs:// directory is copied into the local cache first
      (`files.localize`).
    **overrides: our own `DecoderConfig` fields (e.g. cross_attention_layers, dtype, param_dtype, scan_layers).
  Returns:
    The config and a nested dict of arrays laid out as `Decoder`'s params (in `param_dtype`; layers stacked
    over the groups if `scan_layers`), without the cross-attention blocks, which a pretrained OPT does not
    have.
  Raises:
    WeightsFileError: a missing file, a config that is not OPT's, or a tensor missing or of the wrong shape.
  """
  path = files.localize(path)
  cfg = read_config(path, **overrides)
  weights = _strip_prefix(hf_weights.read_weights(path))
  param_dtype = np.dtype(jax.numpy.dtype(cfg.param_dtype))
  params = {}
  for ours, (theirs, shape, to_ours) in _hf_tensor_layout(cfg).items():
    if theirs not in weights:
      raise WeightsFileError(f"{path}: tensor {theirs} is missing (config.json implies it).")
    value = weights[theirs]
    if tuple(value.shape) != shape:
      raise WeightsFileError(f"{path}: tensor {theirs} has shape {tuple(value.shape)}, but config.json "
                            f"implies {shape}.")
    value = np.asarray(value, dtype=np.float32)
    params[ours] = (to_ours(value) if to_ours else value).astype(param_dtype)
  params = flax.traverse_util.unflatten_dict(params)
  return cfg, decoder.stack_layers(params, cfg) if cfg.scan_layers else params


ARCHITECTURE_FIELDS = tuple(f for f in CONFIG_FIELDS if f not in ("dropout_rate", "attention_dropout_rate",
                                                                   "init_std"))


def architecture_of(path: PathLike, base: decoder.DecoderConfig) -> decoder.DecoderConfig:
  """`base` with the architecture (sizes, vocabulary, positions, norms) of the OPT at `path`; base's own
  fields (cross-attention, gates, dropout, dtypes) are kept."""
  pretrained = read_config(path)
  return dataclasses.replace(base, **{f: getattr(pretrained, f) for f in ARCHITECTURE_FIELDS})


def _with_fresh_rows(fresh: jax.Array, pretrained: Any, fresh_rows: range) -> jax.Array:
  """`fresh` [V, D] with the rows of `pretrained` [v <= V, D], but those in `fresh_rows` and past v."""
  row = jax.numpy.arange(fresh.shape[0])[:, None]
  use = (row < pretrained.shape[0]) & ~((row >= fresh_rows.start) & (row < fresh_rows.stop))
  padded = jax.numpy.zeros_like(fresh).at[:pretrained.shape[0]].set(jax.numpy.asarray(pretrained, fresh.dtype))
  return jax.numpy.where(use, padded, fresh)


def insert_pretrained(params: Any, pretrained: Mapping[str, Any], at: tuple[str, ...] = ("decoder",),
                      fresh_rows: range | None = None) -> Any:
  """`params` with the subtree at `at` overwritten by `pretrained`, shape by shape.

  Keeps logical-partitioning boxes and parameters that `pretrained` lacks (e.g. cross-attention), and the rows
  of token embeddings beyond the checkpoint's vocabulary and in `fresh_rows` (the ids of the tokens the
  tokenizer appended after its own, the stage tags: a checkpoint may have more rows than its tokenizer has
  tokens, and the tags must start fresh, not from those unused rows). Raises WeightsFileError naming the first
  parameter that `params` lacks or whose shape differs.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), is_leaf=lambda _, v: isinstance(
      v, nn.Partitioned))
  for key, value in flax.traverse_util.flatten_dict(dict(pretrained)).items():
    path = at + key
    if path not in flat:
      raise WeightsFileError(f"The model has no parameter {'/'.join(path)} to load the checkpoint into.")
    target = flat[path]
    target_value = target.unbox() if isinstance(target, nn.Partitioned) else target
    if key == ("embed_tokens", "embedding") and value.shape[0] <= target_value.shape[0] and (
        value.shape[1:] == target_value.shape[1:]):  # a grown vocabulary: added tokens keep their fresh rows
      value = _with_fresh_rows(jax.numpy.asarray(target_value), value, fresh_rows or range(0))
    if tuple(target_value.shape) != tuple(value.shape):
      raise WeightsFileError(f"Parameter {'/'.join(path)}: the checkpoint has shape {tuple(value.shape)}, "
                            f"the model {tuple(target_value.shape)}.")
    value = jax.numpy.asarray(value, dtype=target_value.dtype)
    flat[path] = target.replace_boxed(value) if isinstance(target, nn.Partitioned) else value
  return flax.traverse_util.unflatten_dict(flat)
