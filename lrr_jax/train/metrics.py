"""Metrics to TensorBoard event files and a JSON-lines file, without TensorFlow.

The choice (also in README): TensorBoard events are written with TensorFlow's summary writer when TensorFlow is
installed, else with tensorboardX (a dependency of the core). `clu.metric_writers` is not used: importing it
imports TensorFlow. Every scalar also goes to `<logdir>/metrics.jsonl`, which a colab reads with one line.
"""
import json
import os
import pathlib
import time
from typing import Any, Mapping

import jax
import numpy as np


class MetricWriter:
  """Scalars to TensorBoard and JSON lines; only process 0 writes."""

  def __init__(self, logdir: str | os.PathLike):
    self.logdir = pathlib.Path(logdir)
    self.active = jax.process_index() == 0
    if not self.active:
      return
    self.logdir.mkdir(parents=True, exist_ok=True)
    self.jsonl = open(self.logdir / "metrics.jsonl", "a")
    self.tensorboard = _tensorboard_writer(self.logdir)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.active:
      return
    values = {k: float(np.asarray(v)) for k, v in scalars.items()}
    self.jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
    self.jsonl.flush()
    self.tensorboard(step, values)

  def close(self) -> None:
    if self.active:
      self.jsonl.close()
      self.tensorboard(None, None)


def _tensorboard_writer(logdir: pathlib.Path):
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
  """The scalars a run wrote, one dict per write."""
  path = pathlib.Path(logdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
