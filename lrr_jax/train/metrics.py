"""Metrics to TensorBoard event files and a JSON-lines file, without TensorFlow.

The choice (also in README): TensorBoard events are written with TensorFlow's summary writer when TensorFlow is
installed, else with tensorboardX (a dependency of the core). `clu.metric_writers` is not used: importing it
imports TensorFlow. Every scalar also goes to `<logdir>/metrics.jsonl`, which a colab reads with one line.
The logdir may be `gs://...`: tensorboardX then writes to a local staging folder whose event files are copied
up after every write, and metrics.jsonl is rewritten (an object store has no append).
"""
import hashlib
import json
import os
import struct
import time
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np

from lrr_jax import files


class MetricWriter:
  """Scalars to TensorBoard and JSON lines; only process 0 writes."""

  def __init__(self, logdir: str | os.PathLike):
    self.logdir = files.as_path(logdir)
    self.active = jax.process_index() == 0
    if not self.active:
      return
    self.logdir.mkdir(parents=True, exist_ok=True)
    self.staging = self.logdir
    if files.is_remote(self.logdir):  # event files are written locally, then copied up
      self.staging = files.cache_root() / "events" / hashlib.sha256(str(self.logdir).encode()).hexdigest()[:16]
      self.staging.mkdir(parents=True, exist_ok=True)
    self.tensorboard = _tensorboard_writer(self.staging)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.active:
      return
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    files.append_lines(self.logdir / "metrics.jsonl", [json.dumps({"step": int(step), **values})])
    self.tensorboard(step, values)
    self._copy_events_up()

  def close(self) -> None:
    if self.active:
      self.tensorboard(None, None)
      self._copy_events_up()

  def _copy_events_up(self) -> None:
    if self.staging != self.logdir:
      for path in self.staging.glob("events.out.tfevents.*"):
        (self.logdir / path.name).write_bytes(path.read_bytes())


def _tensorboard_writer(logdir):
  """A function (step, scalars) -> None writing event files; (None, None) closes it."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    tf = None
  if tf is not None:
    writer = tf.summary.create_file_writer(str(logdir))

    def write_tf(step, scalars):
      if step is None:
        writer.close()
        return
      with writer.as_default():
        for key, value in scalars.items():
          tf.summary.scalar(key, value, step=step)
      writer.flush()
    return write_tf

  import tensorboardX  # pylint: disable=g-import-not-at-top
  # tensorboardX names files by the second: a suffix keeps two writers of one logdir apart.
  writer = tensorboardX.SummaryWriter(str(logdir), filename_suffix=f".{os.getpid()}.{time.time_ns()}")

  def write_tbx(step, scalars):
    if step is None:
      writer.close()
      return
    for key, value in scalars.items():
      writer.add_scalar(key, value, step)
    writer.flush()
  return write_tbx


def read_jsonl(logdir: str | os.PathLike) -> list[dict[str, float]]:
  """The scalars a run wrote, one dict per write. A last line cut short (no newline: the run was killed while
  writing it) is skipped with a warning; any other line that is not a JSON object is an error naming file and
  line."""
  path = files.as_path(logdir) / "metrics.jsonl"
  if not path.is_file():
    return []
  text = path.read_text()
  lines, rows = text.splitlines(), []
  for number, line in enumerate(lines, 1):
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if number == len(lines) and not text.endswith("\n"):
        logging.warning("%s:%d is cut short (a run killed while writing it?); skipped: %r", path, number, line)
        continue
      raise ValueError(f"{path}:{number} is not a JSON line of metrics: {e}") from e
    if not isinstance(row, dict):
      raise ValueError(f"{path}:{number} holds a JSON {type(row).__name__}, not an object of metrics.")
    rows.append(row)
  return rows


def read_event_scalars(logdir: str | os.PathLike) -> list[dict[str, float]]:
  """The scalars of the TensorBoard event files in `logdir`, one dict per (file, step), without TensorFlow.

  Event files are TFRecords, `[length u64][crc u32][event][crc u32]`; scalars are `simple_value`s
  (tensorboardX) or float tensors (TensorFlow's writer).
  """
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  rows = []
  for path in sorted(files.as_path(logdir).glob("events.out.tfevents.*")):
    data, offset, by_step = path.read_bytes(), 0, {}
    while offset + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        scalar = value.simple_value if value.HasField("simple_value") else (
            value.tensor.float_val[0] if value.tensor.float_val else None)
        if scalar is not None:
          by_step.setdefault(int(event.step), {"step": int(event.step)})[value.tag] = float(scalar)
    rows += [by_step[step] for step in sorted(by_step)]
  return rows


def read_metrics(workdir: str | os.PathLike, source: str = "jsonl") -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Each scalar of a run as (steps int[N], values float[N]), sorted by step: what a colab plots.

  source: 'jsonl' (`metrics.jsonl`) or 'events' (the TensorBoard files). A step written twice (a run resumed
  from an earlier checkpoint) keeps its last value.
  """
  if source not in ("jsonl", "events"):
    raise ValueError(f"read_metrics source={source!r}; expected 'jsonl' or 'events'.")
  rows = read_jsonl(workdir) if source == "jsonl" else read_event_scalars(workdir)
  if not rows:
    raise FileNotFoundError(f"No metrics in {workdir} ({'metrics.jsonl' if source == 'jsonl' else 'event files'}).")
  series: dict[str, dict[int, float]] = {}
  for row in rows:
    for key, value in row.items():
      if key != "step":
        series.setdefault(key, {})[int(row["step"])] = float(value)
  return {key: (np.array(sorted(values), np.int64), np.array([values[s] for s in sorted(values)], np.float64))
          for key, values in series.items()}
