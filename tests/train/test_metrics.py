"""Metrics reach a TensorBoard event file (read back with its protobuf) and the JSON-lines file."""
import struct
import sys

import pytest

from tensorboardX.proto import event_pb2

from lrr_jax.train import metrics


def read_events(path):
  """Events of a TFRecord event file: [len u64][crc u32][data][crc u32] records."""
  data, events, offset = path.read_bytes(), [], 0
  while offset < len(data):
    (length,) = struct.unpack("<Q", data[offset:offset + 8])
    event = event_pb2.Event()
    event.ParseFromString(data[offset + 12:offset + 12 + length])
    events.append(event)
    offset += 12 + length + 4
  return events


def test_scalars_are_written_to_tensorboard_and_jsonl(tmp_path):
  for run in range(2):  # two writers on one logdir in the same second must not collide
    writer = metrics.MetricWriter(tmp_path)
    writer.write_scalars(10 + run, {"loss": 1.5 - run, "token_accuracy": 0.25})
    writer.close()
  files = sorted(tmp_path.glob("events.out.tfevents.*"))
  assert len(files) == 2
  scalars = {(e.step, v.tag): v.simple_value for f in files for e in read_events(f) for v in e.summary.value}
  assert scalars[(10, "loss")] == 1.5 and scalars[(11, "loss")] == 0.5
  assert metrics.read_jsonl(tmp_path) == [{"step": 10, "loss": 1.5, "token_accuracy": 0.25},
                                          {"step": 11, "loss": 0.5, "token_accuracy": 0.25}]
  assert "tensorflow" not in sys.modules


def test_a_cut_last_line_is_skipped_and_dropped_before_the_next_append(tmp_path):
  """A run killed while writing metrics.jsonl leaves its last line without a newline: read, it is skipped (with
  a warning); the resumed run's next line replaces it rather than running into it."""
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
  assert metrics.read_jsonl(tmp_path) == [{"step": 1, "loss": 2.0}]
  writer = metrics.MetricWriter(tmp_path)
  writer.write_scalars(2, {"loss": 1.0})
  writer.close()
  assert metrics.read_jsonl(tmp_path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]


def test_a_bad_line_inside_metrics_jsonl_is_named(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3}\n')
  with pytest.raises(ValueError, match=f"{tmp_path / 'metrics.jsonl'}:2 is not a JSON line of metrics"):
    metrics.read_jsonl(tmp_path)
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n[1]\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2 holds a JSON list"):
    metrics.read_jsonl(tmp_path)
