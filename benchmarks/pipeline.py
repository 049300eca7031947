"""The input pipeline at the released recipe's shape (16 frames of 224 px): examples/s with 0 and N Grain
workers for frames stored raw, JPEG and PNG, against what the train step consumes; bytes per example on disk.

  python -m benchmarks.pipeline --out=benchmarks/results/pipeline.json

Frames: generated CATER videos (16 frames) upscaled to 224 px; "textured" adds a fixed 1/f-noise texture and
per-frame sensor noise (sigma 1.5), a stand-in for rendered or camera video (flat-shaded generated frames
compress far better than real ones, PNG best of all): the two bracket real data. Bytes per example: the
TFDS-serialised record, as ArrayRecord stores it (raw uint8 frames go into an int64 list: 1-2 bytes a value). Throughput: records served from memory (TFDS's numpy parsing included) through
`pipeline.make_dataset` (decode the kept frames, tokenize, pad to the recipe's 1024 tokens, batch).
The train step's need: examples/s = chip peak x MFU / (3 x forward FLOPs per example), the forward FLOPs from
XLA's cost analysis of the recipe's model (OPT-125M, ResNet-101 to conv4_x, ResNet-18 motion stream) at
batch 1; per chip, for `--chip` at `--mfu`.
"""
import pathlib
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import common
from lrr_jax.data import pipeline
from lrr_jax.data import rationales
from lrr_jax.data import records
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data import video_transforms
from lrr_jax.data.worlds import cater

flags.DEFINE_string("out", "benchmarks/results/pipeline.json", "Where the JSON results go.")
flags.DEFINE_integer("repetitions", 3, "Timed repetitions (medians are reported).")
flags.DEFINE_integer("batches", 6, "Batches per repetition.")
flags.DEFINE_integer("batch_size", 8, "Examples per batch.")
flags.DEFINE_integer("videos", 16, "Distinct videos (the source cycles over them).")
flags.DEFINE_integer("workers", 2, "Grain worker processes of the N-worker measurement.")
flags.DEFINE_string("chip", "h100", "Accelerator whose train step the need is derived for.")
flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation assumed for the train step.")

FRAMES, RESOLUTION, MAX_LENGTH = 16, 224, 1024
PEAK_FLOPS = {"h100": 989e12, "h200": 989e12, "v5e": 197e12, "v5p": 459e12, "v6e": 918e12}


def textured(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """frames with a 1/f-spectrum texture (amplitude ~20 levels) and per-frame Gaussian noise (sigma 1.5)."""
  size = frames.shape[1]
  spectrum = rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))
  frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size)))
  texture = np.real(np.fft.ifft2(spectrum / np.maximum(frequency, 1 / size)))
  texture = 20 * texture / texture.std()
  noise = rng.normal(0, 1.5, frames.shape)
  return np.clip(frames + texture[None, :, :, None] + noise, 0, 255).astype(np.uint8)


class SerializedSource:
  """Records kept as TFDS serialises them, parsed on read as a TFDS data source parses them."""

  def __init__(self, serialized: list[bytes], frame_format: str):
    self.serialized, self.frame_format, self.features = serialized, frame_format, None

  def __len__(self) -> int:
    return len(self.serialized)

  def __getitem__(self, index: int):
    if self.features is None:  # built in each worker (TFDS features hold locks: not picklable)
      self.features = records.features(RESOLUTION, RESOLUTION, self.frame_format)
    return self.features.deserialize_example_np(self.serialized[index])

  def __getstate__(self):
    return {**self.__dict__, "features": None}


def videos(count: int) -> dict[str, list[dict]]:
  """Records of `count` generated videos at 224 px, flat and textured (raw frames; encoded per format later)."""
  world = cater.generate(cater.CaterConfig(num_frames=FRAMES, resolution=64, num_objects=8), count, seed=0)
  rng = np.random.default_rng(0)
  flat = [video_transforms.resize(world.frames[n], RESOLUTION) for n in range(count)]
  examples = [{v: cater.rationale_example(world, n, v) for v in rationales.VARIANTS} for n in range(count)]
  return {"flat": list(zip(flat, examples, world.label)),
          "textured": [(textured(f, rng), e, l) for f, e, l in zip(flat, examples, world.label)]}


def serialized(video_records: list, frame_format: str) -> list[bytes]:
  features = records.features(RESOLUTION, RESOLUTION, frame_format)
  return [features.serialize_example(records.make_record(frames, examples, int(label), frame_format=frame_format))
          for frames, examples, label in video_records]


def train_step_need(chip: str, mfu: float) -> dict[str, float]:
  """Forward FLOPs per example of the released recipe (OPT-125M) and the examples/s one chip consumes."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import released  # pylint: disable=g-import-not-at-top
  from lrr_jax import run_config, run_objects  # pylint: disable=g-import-not-at-top
  from lrr_jax.models import lrr  # pylint: disable=g-import-not-at-top
  config = run_config.RunConfig.from_config_dict(released.get_config("dataset=cater,lm=opt-125m"))
  model = lrr.LRRModel(run_objects.model_config(config))
  text = jax.ShapeDtypeStruct((1, MAX_LENGTH), np.int32)
  video = jax.ShapeDtypeStruct((1, FRAMES, RESOLUTION, RESOLUTION, 3), np.uint8)
  variables = jax.eval_shape(model.init, jax.random.key(0), text, text, text, text, video)
  cost = jax.jit(model.apply).lower(variables, text, text, text, text, video).cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  forward = float(cost["flops"])
  per_chip = PEAK_FLOPS[chip] * mfu / (3 * forward)
  return dict(forward_flops_per_example=forward, need_examples_per_s_per_chip=per_chip, chip=chip, mfu=mfu,
              recipe_batch=config.batch_size, step_s_at_recipe_batch_on_8_chips=config.batch_size / (8 * per_chip))


def examples_per_s(source, tokenizer_path: str, workers: int, f) -> tuple[float, float]:
  """Steady-state examples/s (the buffers filled and drained first: a warm-up of 2 x `batches`, then medians
  of `repetitions` x `batches`) and this process's CPU seconds per example (all its threads: with 0 workers,
  the whole pipeline's cost, which machine load does not inflate)."""
  config = pipeline.PipelineConfig(tokenizer_path=tokenizer_path, max_length=MAX_LENGTH, num_frames=FRAMES,
                                   resolution=RESOLUTION, batch_size=f.batch_size, worker_count=workers,
                                   brightness_jitter=0.2, contrast_jitter=0.2)
  iterator = iter(pipeline.make_dataset([("cater", source, 1.0)], config))
  for _ in range(2 * f.batches):
    next(iterator)
  cpu = time.process_time()
  seconds = common.median_seconds(lambda: [next(iterator) for _ in range(f.batches)], f.repetitions)
  cpu_per_example = (time.process_time() - cpu) / (f.repetitions * f.batches * f.batch_size)
  return f.batches * f.batch_size / seconds, cpu_per_example


def main(argv):
  del argv
  f = flags.FLAGS
  need = train_step_need(f.chip, f.mfu)
  data = videos(f.videos)
  sizes, rates = {}, {}
  with tempfile.TemporaryDirectory() as directory:
    tokenizer = tokenizer_lib.train_bpe(
        [s.text for _, examples, _ in data["flat"] for e in examples.values() for s in e.question + e.response], 512)
    tokenizer_path = str(pathlib.Path(directory) / "tokenizer.json")
    tokenizer.save(tokenizer_path)
    for frame_format in ("raw", "jpeg", "png"):
      encoded = {kind: serialized(video_records, frame_format) for kind, video_records in data.items()}
      sizes[frame_format] = {kind: float(np.mean([len(s) for s in items])) for kind, items in encoded.items()}
      source = SerializedSource(encoded["textured"], frame_format)
      (rate_0, cpu_0), (rate_n, _) = (examples_per_s(source, tokenizer_path, w, f) for w in (0, f.workers))
      rates[frame_format] = {"0_workers": rate_0, f"{f.workers}_workers": rate_n,
                             "cpu_s_per_example": cpu_0, "per_core": 1 / cpu_0,
                             "cores_per_chip": need["need_examples_per_s_per_chip"] * cpu_0}
  results = dict(bytes_per_example=sizes, examples_per_s=rates, train_step=need, batch_size=f.batch_size,
                 frame_shape=[FRAMES, RESOLUTION, RESOLUTION, 3], max_length=MAX_LENGTH)
  jpeg = rates["jpeg"]
  common.write_result(
      f.out, results,
      f"16 x 224 px, JPEG: {jpeg['0_workers']:.1f} examples/s (0 workers), {jpeg[f'{f.workers}_workers']:.1f} "
      f"({f.workers} workers), {jpeg['per_core']:.0f} per CPU core; the train step needs {need['need_examples_per_s_per_chip']:.0f} examples/s per "
      f"{f.chip} at MFU {f.mfu}; bytes/example (textured) raw {sizes['raw']['textured'] / 1e6:.2f} MB, JPEG "
      f"{sizes['jpeg']['textured'] / 1e3:.0f} kB, PNG {sizes['png']['textured'] / 1e3:.0f} kB")


if __name__ == "__main__":
  app.run(main)
