"""Read a local Hugging Face OPT checkpoint into our `DecoderConfig` and decoder params.

Reads `config.json` and the weights (`model.safetensors`, sharded `model.safetensors.index.json`, or
`pytorch_model.bin`). Safetensors are parsed here with NumPy (bfloat16 included), so neither
`transformers` nor torch is needed; only `pytorch_model.bin` needs torch, imported when used.
"""
import dataclasses
import json
import os
import pathlib
import struct
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import ml_dtypes
import numpy as np

from lrr_jax.models import decoder

PathLike = str | os.PathLike
SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
# Our config field <- Hugging Face OPTConfig field.
CONFIG_FIELDS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "ffn_dim": "ffn_dim", "max_positions": "max_position_embeddings",
    "word_embed_proj_dim": "word_embed_proj_dim", "layer_norm_before": "do_layer_norm_before",
    "remove_final_layer_norm": "_remove_final_layer_norm", "enable_bias": "enable_bias",
    "layer_norm_affine": "layer_norm_elementwise_affine", "activation": "activation_function",
    "dropout_rate": "dropout", "attention_dropout_rate": "attention_dropout", "init_std": "init_std",
}


class CheckpointError(ValueError):
  """A Hugging Face checkpoint that cannot be read as OPT; the message names the file and tensor."""


def read_config(path: PathLike, **overrides: Any) -> decoder.DecoderConfig:
  """`DecoderConfig` from `<path>/config.json`; `overrides` set our own fields (dtype, cross-attention...)."""
  config_file = pathlib.Path(path) / "config.json"
  if not config_file.is_file():
    raise CheckpointError(f"No config.json in {path!s}: expected a Hugging Face OPT directory.")
  try:
    hf = json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config_file} is not valid JSON: {e}") from e
  if hf.get("model_type") != "opt":
    raise CheckpointError(f"{config_file} has model_type={hf.get('model_type')!r}; only 'opt' is supported.")
  fields = {ours: hf[theirs] for ours, theirs in CONFIG_FIELDS.items() if theirs in hf}
  return decoder.DecoderConfig(**{**fields, **overrides})


def read_safetensors(file: PathLike) -> dict[str, np.ndarray]:
  """All tensors of one .safetensors file as (memory-mapped) NumPy arrays."""
  file = pathlib.Path(file)
  with open(file, "rb") as f:
    header_size = struct.unpack("<Q", f.read(8))[0]
    try:
      header = json.loads(f.read(header_size))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise CheckpointError(f"{file} has a corrupt safetensors header: {e}") from e
  data = np.memmap(file, dtype=np.uint8, mode="r", offset=8 + header_size)
  tensors = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in SAFETENSORS_DTYPES:
      raise CheckpointError(f"{file}: tensor {name} has unsupported dtype {info['dtype']}.")
    begin, end = info["data_offsets"]
    if end > data.size:
      raise CheckpointError(f"{file} is truncated: tensor {name} ends at byte {end} of {data.size}.")
    tensors[name] = data[begin:end].view(SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
  return tensors


def read_pytorch_bin(file: PathLike) -> dict[str, np.ndarray]:
  """A `pytorch_model.bin` state dict as NumPy arrays (needs torch, imported only here)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CheckpointError(f"{file} is a torch pickle and torch is not installed; install torch or convert "
                          "the checkpoint to model.safetensors.") from e
  state = torch.load(file, map_location="cpu", weights_only=True)
  return {name: tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
          for name, tensor in state.items()}


def read_weights(path: PathLike) -> dict[str, np.ndarray]:
  """Every tensor of the checkpoint in `path`, whichever of the Hugging Face layouts it uses."""
  path = pathlib.Path(path)
  for index_name, reader in (("model.safetensors.index.json", read_safetensors),
                             ("pytorch_model.bin.index.json", read_pytorch_bin)):
    if (path / index_name).is_file():
      shards = sorted(set(json.loads((path / index_name).read_text())["weight_map"].values()))
      missing = [s for s in shards if not (path / s).is_file()]
      if missing:
        raise CheckpointError(f"{path / index_name} lists shards that are missing: {missing}.")
      return {k: v for shard in shards for k, v in reader(path / shard).items()}
  if (path / "model.safetensors").is_file():
    return read_safetensors(path / "model.safetensors")
  if (path / "pytorch_model.bin").is_file():
    return read_pytorch_bin(path / "pytorch_model.bin")
  raise CheckpointError(f"No weights in {path}: expected model.safetensors, pytorch_model.bin or a sharded "
                        "index (model.safetensors.index.json).")


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
  """Read a local Hugging Face OPT directory into (`DecoderConfig`, decoder params).

  Args:
    path: directory with config.json and the weights.
    **overrides: our own `DecoderConfig` fields (e.g. cross_attention_layers, dtype, param_dtype).
  Returns:
    The config and a nested dict of arrays laid out as `Decoder`'s params (in `param_dtype`), without the
    cross-attention blocks, which a pretrained OPT does not have.
  Raises:
    CheckpointError: a missing file, a config that is not OPT's, or a tensor missing or of the wrong shape.
  """
  cfg = read_config(path, **overrides)
  weights = _strip_prefix(read_weights(path))
  param_dtype = np.dtype(jax.numpy.dtype(cfg.param_dtype))
  params = {}
  for ours, (theirs, shape, to_ours) in _hf_tensor_layout(cfg).items():
    if theirs not in weights:
      raise CheckpointError(f"{path}: tensor {theirs} is missing (config.json implies it).")
    value = weights[theirs]
    if tuple(value.shape) != shape:
      raise CheckpointError(f"{path}: tensor {theirs} has shape {tuple(value.shape)}, but config.json "
                            f"implies {shape}.")
    value = np.asarray(value, dtype=np.float32)
    params[ours] = (to_ours(value) if to_ours else value).astype(param_dtype)
  return cfg, flax.traverse_util.unflatten_dict(params)


ARCHITECTURE_FIELDS = tuple(f for f in CONFIG_FIELDS if f not in ("dropout_rate", "attention_dropout_rate",
                                                                   "init_std"))


def architecture_of(path: PathLike, base: decoder.DecoderConfig) -> decoder.DecoderConfig:
  """`base` with the architecture (sizes, vocabulary, positions, norms) of the OPT at `path`; base's own
  fields (cross-attention, gates, dropout, dtypes) are kept."""
  pretrained = read_config(path)
  return dataclasses.replace(base, **{f: getattr(pretrained, f) for f in ARCHITECTURE_FIELDS})


def insert_pretrained(params: Any, pretrained: Mapping[str, Any], at: tuple[str, ...] = ("decoder",)) -> Any:
  """`params` with the subtree at `at` overwritten by `pretrained`, shape by shape.

  Keeps logical-partitioning boxes and parameters that `pretrained` lacks (e.g. cross-attention), and the rows
  of token embeddings beyond the checkpoint's vocabulary (tokens the tokenizer added). Raises
  CheckpointError naming the first parameter that `params` lacks or whose shape differs.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), is_leaf=lambda _, v: isinstance(
      v, nn.Partitioned))
  for key, value in flax.traverse_util.flatten_dict(dict(pretrained)).items():
    path = at + key
    if path not in flat:
      raise CheckpointError(f"The model has no parameter {'/'.join(path)} to load the checkpoint into.")
    target = flat[path]
    target_value = target.unbox() if isinstance(target, nn.Partitioned) else target
    if key == ("embed_tokens", "embedding") and value.shape[0] < target_value.shape[0] and (
        value.shape[1:] == target_value.shape[1:]):  # a grown vocabulary: added tokens keep their fresh rows
      value = jax.numpy.asarray(target_value).at[:value.shape[0]].set(value)
    if tuple(target_value.shape) != tuple(value.shape):
      raise CheckpointError(f"Parameter {'/'.join(path)}: the checkpoint has shape {tuple(value.shape)}, "
                            f"the model {tuple(target_value.shape)}.")
    value = jax.numpy.asarray(value, dtype=target_value.dtype)
    flat[path] = target.replace_boxed(value) if isinstance(target, nn.Partitioned) else value
  return flax.traverse_util.unflatten_dict(flat)
