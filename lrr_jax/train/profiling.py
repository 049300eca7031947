"""`jax.profiler` traces of configured train steps, under `<workdir>/profile` (TensorBoard's profile plugin,
Perfetto or XProf read them).

`config.profile = dict(start_step=S, num_steps=N)` traces the N updates from step S (the update that takes the
state from step S to S + 1 first; N = 0: off). Process 0 traces its host; with a gs:// workdir the trace is
written locally and copied up when it stops (the profiler writes through the local filesystem).
"""
import dataclasses
import hashlib
import os
from typing import Any

from absl import logging
import jax

from lrr_jax import files


@dataclasses.dataclass(frozen=True)
class ProfileConfig:
  """config.profile."""
  start_step: int = 10  # the first update traced
  num_steps: int = 0  # updates traced (0: no trace)


class StepProfiler:
  """Start a trace before step `start_step` and stop it after `num_steps` steps; call `before(step)` ahead of
  each step and `after(step, outputs)` when it is dispatched (the trace waits for `outputs`)."""

  def __init__(self, profile: ProfileConfig, workdir: files.PathLike):
    self.start, self.count = int(profile.start_step), int(profile.num_steps)
    if self.start < 0 or self.count < 0:
      raise ValueError(f"config.profile start_step={self.start} and num_steps={self.count} must be >= 0.")
    self.destination = files.as_path(workdir) / "profile"
    self.local = self.destination
    if files.is_remote(self.destination):
      digest = hashlib.sha256(str(self.destination).encode()).hexdigest()[:16]
      self.local = files.cache_root() / "profile" / digest
    self.active = self.count > 0 and jax.process_index() == 0
    self.tracing = False

  def before(self, step: int) -> None:
    if self.active and step == self.start:
      os.makedirs(self.local, exist_ok=True)
      jax.profiler.start_trace(str(self.local))
      self.tracing = True

  def after(self, step: int, outputs: Any) -> None:
    if self.tracing and step + 1 == self.start + self.count:
      self.stop(outputs)

  def stop(self, outputs: Any = None) -> None:
    """End the trace (if one runs) once `outputs` are computed, and copy it to the workdir."""
    if not self.tracing:
      return
    jax.block_until_ready(outputs)
    jax.profiler.stop_trace()
    self.tracing = False
    if self.local != self.destination:
      files.copy_tree(files.as_path(self.local), self.destination)
    logging.info("Profile of steps %d-%d written to %s", self.start + 1, self.start + self.count, self.destination)
