"""Throughput of the Grain pipeline (frames/s, batches/s) on this machine, and of world generation.

  python -m benchmarks.pipeline --out=benchmarks/results/pipeline.json
Medians over repetitions; the pipeline is read from the TFDS-built generated CATER (written once).
"""
import tempfile


from absl import app
from absl import flags

from benchmarks import common
from lrr_jax.data import pipeline
from lrr_jax.data import prepare
from lrr_jax.data.worlds import acre
from lrr_jax.data.worlds import cater

flags.DEFINE_string("out", "benchmarks/results/pipeline.json", "Where the JSON results go.")
flags.DEFINE_integer("repetitions", 5, "Timed repetitions (medians are reported).")
flags.DEFINE_integer("batches", 20, "Batches per repetition.")
flags.DEFINE_integer("batch_size", 16, "Examples per batch.")
flags.DEFINE_integer("worker_count", 0, "Grain worker processes.")


def median_rate(run, count: int, repetitions: int) -> float:
  return count / common.median_seconds(run, repetitions)


def main(argv):
  del argv
  f = flags.FLAGS
  world = cater.CaterConfig(num_objects=4, num_cones=1)
  results = {"cater_videos_per_s": median_rate(lambda: cater.generate(world, 256, 0), 256, f.repetitions),
             "acre_problems_per_s": median_rate(lambda: acre.generate(acre.AcreConfig(), 256, 0), 256,
                                                f.repetitions)}
  with tempfile.TemporaryDirectory() as data_dir:
    sizes = dict(num_train=1024, num_test=16)
    directory = prepare.prepare("generated_cater", "tiny", data_dir, 512, **sizes)
    source = prepare.builder_for("generated_cater", "tiny", data_dir, **sizes).as_data_source("train")
    config = pipeline.PipelineConfig(tokenizer_path=str(directory / "tokenizer.json"), batch_size=f.batch_size,
                                     worker_count=f.worker_count)
    iterator = iter(pipeline.make_dataset([("cater", source, 1.0)], config))
    next(iterator)  # warm up
    batches_per_s = median_rate(lambda: [next(iterator) for _ in range(f.batches)], f.batches, f.repetitions)
  results.update(batches_per_s=batches_per_s, examples_per_s=batches_per_s * f.batch_size,
                 frames_per_s=batches_per_s * f.batch_size * world.num_frames,
                 batch_size=f.batch_size, worker_count=f.worker_count,
                 frame_shape=[world.num_frames, world.resolution, world.resolution, 3])
  common.write_result(
      f.out, results,
      f"pipeline: {results['batches_per_s']:.1f} batches/s, {results['frames_per_s']:.0f} frames/s "
      f"(batch {f.batch_size}, {f.worker_count} workers); generation: {results['cater_videos_per_s']:.0f} "
      f"CATER videos/s, {results['acre_problems_per_s']:.0f} ACRE problems/s")


if __name__ == "__main__":
  app.run(main)
