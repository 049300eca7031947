"""Linear probes for the snitch's cell per frame: where does a trained run lose it?

  python -m lrr_jax.probe --workdir=workdirs/cater_demo [--num_examples=256] [--test_fraction=0.25]

From held-out records of a generated (or released) CATER run, per frame t and the snitch's true cell there (from
the record's full rationale: its detection on frame 0, its track or its cone's cell after), features from:
- `encoder_mean`: the video encoder's output (what the cross-attention reads) for frame t, averaged over the grid;
- `encoder_grid`: the same, every grid token kept (flattened);
- `static_grid`: the static ResNet stream's grid for frame t (flattened), before fusion and attention;
- `read/<block>`: what each gated cross-attention block reads from the video (its attention's output, before the
  gate) at the token right before the `frame t:` fact's cell is written (below);
- `decoder_hidden`: the decoder's last hidden state at the token right before the `frame t:` fact's cell is
  written, teacher-forced on the record's true rationale (the run's variant; none when it states no facts; a
  record longer than the model's positions is left out);
and `decoder_written`, the share of those cells the teacher-forced model predicts (argmax) token for token.
Each source is fitted by closed-form ridge regression onto the 36 one-hot cells (features standardised, the ridge
chosen on a fifth of the probe's training records), records split into probe-train and probe-test. Reading it:
encoder low: the encoder lacks the position; encoder high, read low: the cross-attention does not read it; read
high, decoder hidden low: the decoder loses it; hidden high, written low: the decoder does not write it. Chance:
the probe-train's most frequent cell.
Writes `<workdir>/probe.json` and prints a table. Grid features wider than `MAX_FEATURES` are projected per grid
cell onto fewer channels by a fixed random matrix (the layout, hence the position, is kept).
"""
import json
import re
from typing import Any, Sequence

from absl import app
from absl import flags
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lrr_jax import run_inference
from lrr_jax import run_records
from lrr_jax.data import encoding
from lrr_jax import files
from lrr_jax.data import records
from lrr_jax.data.worlds import cater
from lrr_jax.evaluation import grounding
from lrr_jax.models import cross_attention
from lrr_jax.models import lrr

NUM_CELLS = cater.GRID * cater.GRID
MAX_FEATURES = 4096
RIDGES = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
SOURCES = ("encoder_mean", "encoder_grid", "static_grid", "decoder_hidden")


# Probes.

def fit_ridge(x: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
  """Weights float[F + 1, K] of ridge regression from x float[N, F] (a bias column added) onto targets
  float[N, K]; the dual form when F > N."""
  x = np.concatenate([x, np.ones((len(x), 1))], 1)
  if x.shape[1] <= x.shape[0]:
    return np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ targets)
  return x.T @ np.linalg.solve(x @ x.T + ridge * np.eye(len(x)), targets)


def predict(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
  return np.argmax(np.concatenate([x, np.ones((len(x), 1))], 1) @ weights, -1)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 num_classes: int = NUM_CELLS, ridges: Sequence[float] = RIDGES) -> dict[str, float]:
  """Test accuracy of a ridge probe (x float[N, F] -> y int[N]), its ridge chosen on the last fifth of train."""
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
  one_hot = np.eye(num_classes)[train_y]
  cut = max(1, len(train_x) * 4 // 5) if len(train_x) > 1 else len(train_x)
  def held_out(ridge):
    if cut >= len(train_x):
      return 0.0
    return float(np.mean(predict(fit_ridge(train_x[:cut], one_hot[:cut], ridge), train_x[cut:]) == train_y[cut:]))
  ridge = max(ridges, key=held_out)  # the first of the best
  weights = fit_ridge(train_x, one_hot, ridge)
  return {"accuracy": float(np.mean(predict(weights, test_x) == test_y)),
          "train_accuracy": float(np.mean(predict(weights, train_x) == train_y)), "ridge": ridge,
          "features": int(train_x.shape[1]), "train": int(len(train_y)), "test": int(len(test_y))}


# Labels and positions from the true rationale.

def snitch_cells(reference: str, num_frames: int) -> np.ndarray:
  """int[T]: the snitch's cell (row * 6 + col) per frame as the rationale states it, -1 where it states none."""
  cells = np.full(num_frames, -1)
  for t, text in grounding.frame_texts(reference).items():
    fact = grounding.snitch_fact(text)
    if fact is not None and 0 <= t < num_frames and fact.cell and max(fact.cell) < cater.GRID:
      cells[t] = fact.cell[0] * cater.GRID + fact.cell[1]
  return cells


def cell_span(text: str) -> tuple[int, int] | None:
  """Character span of the snitch's cell in a frame fact's text (its cone's cell when it is hidden)."""
  for pattern, group in ((grounding.REID, 2), (grounding.TRACK, 1), (r"(?:> |; )snitch (\d+,\d+)", 1)):
    match = re.search(pattern, text)
    if match:
      return match.span(group)
  return None


def cell_positions(example, tokenizer) -> list[tuple[int, int, list[int]]]:
  """(frame, index in the encoded example's inputs whose next token is the cell's first, the cell's tokens) of
  each `frame t:` fact; positions as `encoding.encode_example` lays the example out (each segment on its own)."""
  prompt, _ = encoding.encode_prompt(example, tokenizer)
  offset, found = len(prompt), []
  for segment in example.response:
    encoded = tokenizer.tokenizer.encode(segment.text, add_special_tokens=False)
    marker = grounding.MARKER.match(segment.text)
    span = cell_span(segment.text) if marker else None
    if span is not None:
      first = next(k for k, (_, end) in enumerate(encoded.offsets) if end > span[0])
      last = next(k for k, (_, end) in enumerate(encoded.offsets) if end >= span[1])
      found.append((int(marker.group(1)), offset + first - 1, encoded.ids[first:last + 1]))
    offset += len(encoded.ids)
  return found


# Features.

def channel_projection(channels: int, cells: int, seed: int) -> np.ndarray | None:
  """A fixed float[C, C'] random projection keeping cells * C' <= MAX_FEATURES (None: no need)."""
  if cells * channels <= MAX_FEATURES:
    return None
  kept = max(1, MAX_FEATURES // cells)
  return np.random.default_rng(seed).normal(size=(channels, kept)) / np.sqrt(kept)


def grid_features(grid: np.ndarray, projection: np.ndarray | None) -> np.ndarray:
  """float[B, T, N, C] -> [B, T, N * C'] (C' = C unprojected)."""
  if projection is not None:
    grid = grid @ projection
  return grid.reshape(*grid.shape[:2], -1)


def reads_video(module: nn.Module, method: str) -> bool:
  """Capture the attention inside each gated cross-attention block: what it read from the video."""
  return method == "attend" and isinstance(module.parent, cross_attention.GatedCrossAttention)


class Forward:
  """The run's model jitted once: `encode(video)` -> the encoder's output float[B, T, N, D] and the static
  stream's grid [B, T, gh*gw, C] (None without one); `teacher_forced(examples, video)` -> the decoder's last
  hidden states float[B, S, D] and its argmax tokens int[B, S] (S: config.data.max_length)."""

  def __init__(self, run: run_records.Run):
    self.run = run
    def encode(variables, video):
      memory, state = run.model.apply(variables, video, method=lrr.LRRModel.encode_video,
                                      capture_intermediates=lambda module, _: module.name == "static_stream")
      static = state["intermediates"].get("video_encoder", {}).get("static_stream", {}).get("__call__")
      return memory.tokens, static[0] if static else None
    def forward(variables, batch, video):
      hidden, state = run.model.apply(variables, batch["inputs"], batch["positions"], batch["segment_ids"],
                                      batch["frame_index"], video, method=lrr.LRRModel.features,
                                      capture_intermediates=reads_video)
      logits = run.model.apply(variables, hidden, method=lrr.LRRModel.output_logits)
      read = {"/".join(path[:-2]): value[0] for path, value in  # (also sown there: the attention weights)
              flax.traverse_util.flatten_dict(state.get("intermediates", {})).items() if path[-1] == "attend"}
      return hidden, jnp.argmax(logits, -1), read
    self._encode, self._forward = jax.jit(encode), jax.jit(forward)

  def encode(self, video: np.ndarray) -> dict[str, np.ndarray]:
    tokens, static = self._encode(self.run.variables, jnp.asarray(video))
    b, t = video.shape[:2]
    found = {"encoder": np.asarray(tokens, np.float32).reshape(b, t, -1, tokens.shape[-1])}
    if static is not None:
      found["static"] = np.asarray(static, np.float32).reshape(b, t, -1, static.shape[-1])
    return found

  def teacher_forced(self, examples: Sequence, video: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, list[bool], dict[str, np.ndarray]]:
    """Also whether each example fits the model's positions (one that does not is left out: its rows are zero)
    and, by block, what each cross-attention block read float[B, S, E] (before its gate). Rows are as long as the
    batch's longest example, rounded up to 64 tokens (a few shapes compile)."""
    run, positions = self.run, self.run.model.config.decoder.max_positions
    lengths = [len(encoding.encode_prompt(e, run.tokenizer)[0]) + len(encoding.segment_tokens(e.response,
                                                                                              run.tokenizer)[0])
               for e in examples]  # the inputs: `</s> question response`
    fits = [n <= positions for n in lengths]
    width = min(positions, -(-max([n for n, ok in zip(lengths, fits) if ok] or [1]) // 64) * 64)
    arrays = [encoding.encode_example(e, run.tokenizer, width) if ok else None for e, ok in zip(examples, fits)]
    blank = {k: np.zeros(width, np.int32) for k in ("inputs", "positions", "segment_ids", "frame_index")}
    batch = {k: jnp.asarray(np.stack([(a or blank)[k] for a in arrays]))
             for k in ("inputs", "positions", "segment_ids", "frame_index")}
    hidden, predicted, read = self._forward(run.variables, batch, jnp.asarray(video))
    read = {name: np.asarray(value, np.float32) for name, value in read.items()}
    return np.asarray(hidden, np.float32), np.asarray(predicted), fits, read


# Held-out records -> per-frame samples of every source.

def collect(run: run_records.Run, source, num_examples: int, batch_size: int) -> dict[str, Any]:
  """Per source, features float[M, F] with each sample's record int[M] and the snitch's cell int[M] (frames whose
  cell the rationale states), and `decoder_written` bool[M'] of the decoder's samples."""
  samples: dict[str, list] = {name: [] for name in (*SOURCES, "decoder_written")}
  projections: dict[str, np.ndarray | None] = {}
  forward = Forward(run)
  for start in range(0, num_examples, batch_size):
    count = min(batch_size, num_examples - start)  # real records; the rest repeat the last (one shape)
    indices = list(range(start, start + count)) + [start + count - 1] * (min(batch_size, num_examples) - count)
    rows = [source[i] for i in indices]
    video = np.stack([run_inference.read_test_example(run, source, i)["video"] for i in indices])
    full = [records.read_example(r, "full", f"test record {i}") for r, i in zip(rows, indices)]
    cells = np.stack([snitch_cells(e.response_text, video.shape[1]) for e in full])
    features = forward.encode(video)
    per_frame = {"encoder_mean": features["encoder"].mean(2)}
    for name, key in (("encoder_grid", "encoder"), ("static_grid", "static")):
      if key in features:
        grid = features[key]
        projections.setdefault(name, channel_projection(grid.shape[-1], grid.shape[2], len(projections)))
        per_frame[name] = grid_features(grid, projections[name])
    for name, values in per_frame.items():
      for b, t in zip(*np.nonzero(cells[:count] >= 0)):
        samples[name].append((values[b, t], indices[b], cells[b, t]))
    own = [records.read_example(r, run.config.data.variant, f"test record {i}") for r, i in zip(rows, indices)]
    positions = [cell_positions(e, run.tokenizer) for e in own]
    if any(positions):
      hidden, predicted, fits, read = forward.teacher_forced(own, video)
      for b, found in enumerate(positions[:count]):
        for t, p, cell_tokens in found:
          if fits[b] and 0 <= t < len(cells[b]) and cells[b, t] >= 0:
            for name, values in read.items():
              samples.setdefault(f"read/{name}", []).append((values[b, p], indices[b], cells[b, t]))
            samples["decoder_hidden"].append((hidden[b, p], indices[b], cells[b, t]))
            samples["decoder_written"].append(all(predicted[b, p + k] == tok for k, tok in enumerate(cell_tokens)))
  return samples


def source_order(samples: dict[str, list]) -> list[str]:
  """The sources with samples, in the video's path: encoder, each cross-attention block's read, decoder."""
  reads = sorted(name for name in samples if name.startswith("read/"))
  return [name for name in (*SOURCES[:3], *reads, SOURCES[3]) if samples.get(name)]


def probe_table(samples: dict[str, list], test_fraction: float, num_examples: int) -> dict[str, Any]:
  """Each source's probe on records split by index (the last `test_fraction` of them are the probe's test),
  chance (the train split's most frequent cell) and the share of cells the decoder writes."""
  first_test = int(round(num_examples * (1 - test_fraction)))
  table: dict[str, Any] = {"probe_train_records": first_test, "probe_test_records": num_examples - first_test}
  for name in source_order(samples):
    x = np.stack([f for f, _, _ in samples[name]]).astype(np.float64)
    record = np.array([r for _, r, _ in samples[name]])
    y = np.array([c for _, _, c in samples[name]])
    train, test = record < first_test, record >= first_test
    if not train.any() or not test.any():
      raise ValueError(f"Probe of {name}: {train.sum()} train and {test.sum()} test samples; use more "
                       "--num_examples or another --test_fraction.")
    table[name] = linear_probe(x[train], y[train], x[test], y[test])
    if "chance" not in table:
      majority = np.bincount(y[train], minlength=NUM_CELLS).argmax()
      table["chance"] = {"accuracy": float(np.mean(y[test] == majority)), "uniform": 1.0 / NUM_CELLS}
  if samples["decoder_written"]:
    table["decoder_written"] = {"accuracy": float(np.mean(samples["decoder_written"])),
                                "test": len(samples["decoder_written"])}
  return table


def markdown(table: dict[str, Any]) -> str:
  lines = ["| features | probe accuracy (test) | train | dims | ridge |", "| --- | --- | --- | --- | --- |"]
  for name in [n for n in table if n in SOURCES or n.startswith("read/")]:
    row = table[name]
    lines.append(f"| {name} | {row['accuracy']:.3f} | {row['train_accuracy']:.3f} | {row['features']} "
                 f"| {row['ridge']:g} |")
  if "decoder_written" in table:
    lines.append(f"| decoder_written (teacher-forced argmax, all records) | {table['decoder_written']['accuracy']:.3f}"
                 " | | | |")
  if "chance" in table:
    lines.append(f"| chance (train's most frequent cell; uniform {1 / NUM_CELLS:.3f}) | "
                 f"{table['chance']['accuracy']:.3f} | | | |")
  return "\n".join(lines)


def define_flags() -> None:
  """The command's flags, defined when it runs (importing the module defines none: no clash with other commands'
  flags in one process)."""
  flags.DEFINE_string("workdir", None, "A CATER run's workdir (written by lrr_jax.main).", required=True)
  flags.DEFINE_integer("num_examples", 256, "Held-out records probed (from the test split's start).")
  flags.DEFINE_float("test_fraction", 0.25, "The last this share of the records are the probes' test set.")
  flags.DEFINE_integer("batch_size", 8, "Records per forward pass.")
  flags.DEFINE_integer("step", None, "The checkpoint's step (default: the latest).")
  flags.DEFINE_string("output", None, "Where to write probe.json (default: <workdir>/probe.json).")


def main(argv):
  del argv
  f = flags.FLAGS
  run = run_records.load_run(f.workdir, f.step)
  if run.config.data.dataset not in grounding.CATER_DATASETS:
    raise ValueError(f"The probe reads the snitch's cell: {run.workdir} trained on {run.config.data.dataset!r}, "
                     f"not one of {grounding.CATER_DATASETS}.")
  source = run_inference.test_source(run)
  num_examples = min(f.num_examples, len(source))
  table = probe_table(collect(run, source, num_examples, f.batch_size), f.test_fraction, num_examples)
  table.update(step=run.step, variant=run.config.data.variant, records=num_examples)
  output = files.as_path(f.output or run.workdir / "probe.json")
  output.write_text(json.dumps(table, indent=2))
  print(f"{run.workdir} at step {run.step}: linear probes for the snitch's cell per frame ({num_examples} held-out "
        f"records, {table['probe_test_records']} of them the probes' test)")
  print(markdown(table))
  print(f"\nWritten to {output}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
