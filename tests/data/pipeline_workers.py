"""Run as a script (worker processes need a __main__ guard): the pipeline with 2 Grain workers against none, on
the generated records stored as JPEG (as release builders write them), decoded, resized and colour-jittered in
the workers, with surrogate-task requests inserted there (whole batches compared: tokens and loss masks too)."""
import dataclasses, json, sys
from absl import flags
import numpy as np
from lrr_jax.data import datasets, frame_codec, pipeline


class JpegSource:
  """The records of `source` with their frames stored as JPEG (as a release builder writes them)."""

  def __init__(self, source):
    self.records = [{**source[i], "frames": frame_codec.encode(np.asarray(source[i]["frames"]), "jpeg", 90),
                     "frame_format": "jpeg"} for i in range(len(source))]

  def __len__(self):
    return len(self.records)

  def __getitem__(self, index):
    return self.records[index]


def same(a, b):
  return len(a) == len(b) and all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
                                  for x, y in zip(a, b))


if __name__ == "__main__":
  flags.FLAGS.mark_as_parsed()
  data_dir = sys.argv[1]
  directory = datasets.prepare("generated_cater", "tiny", data_dir, 400, num_train=64, num_test=8)
  source = datasets.builder_for("generated_cater", "tiny", data_dir, num_train=64, num_test=8).as_data_source("train")
  # JPEG frames decoded, resized 32 -> 24 and jittered in the workers, over two epochs.
  config = pipeline.PipelineConfig(
      tokenizer_path=str(directory / "tokenizer.json"), batch_size=8, max_length=320, num_epochs=2, resolution=24,
      brightness_jitter=0.3, contrast_jitter=0.3, worker_count=2, worker_buffer=2, read_threads=1, prefetch_buffer=2,
      surrogate_prompt_prob=0.3)
  encoded = JpegSource(source)
  single = list(pipeline.make_dataset([("c", encoded, 1.0)], dataclasses.replace(config, worker_count=0)))
  multi = pipeline.make_dataset([("c", encoded, 1.0)], config)
  it = iter(multi)
  first = [next(it) for _ in range(5)]  # into the second epoch
  state = it.get_state()
  rest = list(it)
  resumed = iter(multi)
  resumed.set_state(json.loads(json.dumps(state)))  # as a checkpoint stores it
  order = np.concatenate([b["record_index"] for b in single])
  video = np.concatenate([b["video"] for b in single])
  print(json.dumps({"same_batches": same(first + rest, single), "resume_exact": same(rest, list(resumed)),
                    "covers": sorted(order[:64].tolist()) == list(range(64)),
                    "jitter_differs_by_epoch": not np.array_equal(video[np.argmax(order[:64] == 0)],
                                                                  video[64 + np.argmax(order[64:] == 0)]),
                    "video_shape": list(single[0]["video"].shape),
                    "prompted": bool(any((np.diff(b["loss_mask"], axis=1) > 0).sum(1).max() > 1 for b in single))}))
