"""Top-down cross-attention maps: where each text token looks in the video, drawn over the frames.

The cross-attention blocks sow their weights when applied with `mutable=["intermediates"]`
(`models/cross_attention.py`); `cross_attention_weights` runs the model so and returns them per block.
A block's weights for one example, `[heads, text, T*h*w]` (frame-major), become per-token maps `[T, h, w]`
(`token_maps`); each token's map sums to its attention mass: 1, or 0 for a token that may see no frame.
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import matplotlib.figure
import numpy as np

from lrr_jax.data import encoding
from lrr_jax.data import frame_codec
from lrr_jax.data import records
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.models import lrr

WEIGHTS_NAME = "cross_attention_weights"


def cross_attention_weights(model: lrr.LRRModel, variables: Any, tokens: np.ndarray, positions: np.ndarray,
                            segment_ids: np.ndarray, frame_index: np.ndarray, video: np.ndarray
                            ) -> dict[str, np.ndarray]:
  """Each cross-attention block's weights, float32[B, heads, S, T*h*w], by block name ('cross_attention_1').

  Inputs as for training (`model.apply`): int32[B, S] text, video uint8[B, T, H, W, 3]. The logits are
  those of the training path; only the weights are added.
  """
  apply = jax.jit(lambda v, *args: model.apply(v, *args, mutable=["intermediates"]))
  _, state = apply(variables, tokens, positions, segment_ids, frame_index, video)
  found = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.get("intermediates", {})):
    names = [getattr(p, "key", None) for p in path]
    if WEIGHTS_NAME in names:
      block = str(names[names.index(WEIGHTS_NAME) - 1])
      if block == "cross_attention":  # scanned decoder: the blocks' weights stacked in layer order
        found.update({f"cross_attention_{layer}": np.asarray(weights) for layer, weights in
                      zip(model.config.decoder.cross_attention_layers, leaf)})
      else:
        found[block] = np.asarray(leaf)
  if not found:
    raise ValueError(f"The model sowed no {WEIGHTS_NAME!r}: its decoder has no cross-attention layers "
                     f"({model.config.decoder.cross_attention_layers}) or no video was given.")
  return dict(sorted(found.items()))


def run_example(run: Any, source, index: int) -> dict[str, np.ndarray]:
  """Record `index` of `source` as the run (`lrr_jax.run_records.Run`) trains on it: its rationale teacher-forced, one example in a row.

  Returns int32[1, S] tokens, positions, segment_ids, frame_index, loss_mask and video uint8[1, T, H, W, 3].
  """
  record = source[index]
  example = records.read_example(record, run.config.data.variant, f"record {index}")
  arrays = encoding.encode_example(example, run.tokenizer, run.config.data.max_length, f"record {index}")
  return dict(tokens=arrays["inputs"][None], positions=arrays["positions"][None],
              segment_ids=arrays["segment_ids"][None], frame_index=arrays["frame_index"][None],
              loss_mask=arrays["loss_mask"][None], video=frame_codec.decode(record, source=f"record {index}")[None])


def token_labels(tokenizer: tokenizer_lib.Tokenizer, tokens: np.ndarray, frame_index: np.ndarray,
                 chosen: Sequence[int], context: int = 3) -> list[str]:
  """'…text before [token] (frames 0-t)' for each chosen position of one row: what the query token is."""
  labels = []
  for i in chosen:
    before = tokenizer.decode([int(t) for t in tokens[max(0, i - context):i]])
    labels.append(f"…{before[-18:]}[{tokenizer.decode([int(tokens[i])])}]\n(frames 0-{int(frame_index[i])})")
  return labels


def gate_values(params: Any) -> dict[str, tuple[float, float]]:
  """tanh of each cross-attention block's (attention, ffn) gates: how much of the video reaches the LM."""
  blocks = nn.unbox(params)["decoder"]
  if "cross_attention" in blocks.get("layers", {}):  # scanned: gates [groups], a block after each k layers
    k = sum(name.startswith("layers_") for name in blocks["layers"])
    stacked = blocks["layers"]["cross_attention"]
    blocks = {f"cross_attention_{g * k + k - 1}": {"attention_gate": a, "ffn_gate": f}
              for g, (a, f) in enumerate(zip(stacked["attention_gate"], stacked["ffn_gate"]))}
  return {name: (float(np.tanh(block["attention_gate"])), float(np.tanh(block["ffn_gate"])))
          for name, block in sorted(blocks.items()) if name.startswith("cross_attention_")}


def grid_shape(cells_per_frame: int, frame_height: int, frame_width: int) -> tuple[int, int]:
  """(h, w) of a frame's grid of `cells_per_frame` cells with the frames' aspect ratio."""
  h = round(math.sqrt(cells_per_frame * frame_height / frame_width))
  if h < 1 or cells_per_frame % h:
    raise ValueError(f"{cells_per_frame} grid cells per frame do not tile a {frame_height}x{frame_width} frame.")
  return h, cells_per_frame // h


def token_maps(weights: np.ndarray, num_frames: int, grid: tuple[int, int], head: int | None = None
               ) -> np.ndarray:
  """weights float[heads, S, T*h*w] (one example, one block) -> maps float[S, T, h, w].

  head: one head's maps, or None for the mean over heads (each map then sums to the token's attention mass).
  """
  weights = np.asarray(weights, np.float32)
  heads, length, cells = weights.shape
  if cells != num_frames * grid[0] * grid[1]:
    raise ValueError(f"Weights over {cells} visual tokens are not {num_frames} frames of a {grid} grid.")
  chosen = weights.mean(axis=0) if head is None else weights[head]
  return chosen.reshape(length, num_frames, *grid)


def response_tokens(frame_index: np.ndarray, loss_mask: np.ndarray, count: int) -> list[int]:
  """`count` positions spread evenly over the response tokens that see some frame (what to draw)."""
  candidates = np.flatnonzero((np.asarray(loss_mask) > 0) & (np.asarray(frame_index) >= 0))
  if not len(candidates):
    return []
  return sorted({int(candidates[i]) for i in np.linspace(0, len(candidates) - 1, count).round().astype(int)})


def draw_token_maps(frames: np.ndarray, maps: np.ndarray, labels: Sequence[str], alpha: float = 0.6,
                    cell_inches: float = 1.1) -> matplotlib.figure.Figure:
  """One row per token, one column per frame: the frame with the token's attention as a heat map over it.

  frames: uint8[T, H, W, 3]; maps: float[K, T, h, w] (`token_maps` rows); labels: K token texts. The colour
  scale is shared by a row (the token's largest weight), so a row shows where its mass goes across frames.
  """
  maps = np.asarray(maps)
  num_tokens, num_frames = maps.shape[:2]
  if len(labels) != num_tokens or len(frames) != num_frames:
    raise ValueError(f"{num_tokens} maps of {num_frames} frames need as many labels ({len(labels)}) and "
                     f"frames ({len(frames)}).")
  height, width = frames.shape[1:3]
  figure = matplotlib.figure.Figure(figsize=(cell_inches * num_frames + 1.5, cell_inches * num_tokens))
  axes = figure.subplots(num_tokens, num_frames, squeeze=False)
  for row, (token_map, label) in enumerate(zip(maps, labels)):
    top = max(float(token_map.max()), 1e-9)
    for t, axis in enumerate(axes[row]):
      axis.imshow(frames[t])
      axis.imshow(token_map[t], cmap="inferno", alpha=alpha, vmin=0.0, vmax=top, interpolation="nearest",
                  extent=(-0.5, width - 0.5, height - 0.5, -0.5))
      axis.set_xticks([])
      axis.set_yticks([])
      if row == 0:
        axis.set_title(f"frame {t}", fontsize=8)
      axis.set_xlabel(f"{token_map[t].sum():.2f}", fontsize=7)
    axes[row][0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
  figure.suptitle("cross-attention per token (mass per frame below each frame)", fontsize=9)
  figure.tight_layout()
  return figure
