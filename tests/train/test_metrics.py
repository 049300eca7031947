"""Metrics reach a TensorBoard event file (read back with its protobuf) and the JSON-lines file."""
import struct
import sys

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
