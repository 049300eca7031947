"""Write a dataset to disk (ArrayRecord, through its TFDS builder) and a tokenizer trained on it beside it
(`lrr_jax.data.datasets`); a run writes its dataset itself when it is missing, so this is for doing it once ahead.

  python -m lrr_jax.prepare --dataset=generated_cater --config=tiny --data_dir=~/lrr_data
  python -m lrr_jax.prepare --dataset=generated_acre --config=compositional --num_train=4096
  python -m lrr_jax.prepare --dataset=star --config=default --manual_dir=~/STAR --data_dir=~/lrr_data
  python -m lrr_jax.prepare --dataset=cater --config=default --manual_dir=~/CATER --frame_format=png
"""
from absl import app
from absl import flags

from lrr_jax.data import datasets

def main(argv):
  del argv
  f = flags.FLAGS
  sizes = (dict(num_train=f.num_train, num_test=f.num_test) if f.dataset.startswith("generated_") else
           dict(resolution=f.resolution, frame_format=f.frame_format, jpeg_quality=f.jpeg_quality))
  directory = datasets.prepare(f.dataset, f.config, f.data_dir, f.vocab_size, f.manual_dir, **sizes)
  print(f"Prepared {f.dataset}/{f.config} in {directory}")


def define_flags() -> None:
  """Command-line flags, defined only when run as a command (so that importing this module defines none)."""
  flags.DEFINE_string("dataset", "generated_cater",
                      "generated_cater | generated_acre | cater | acre | star | something_else")
  flags.DEFINE_string("manual_dir", None, "Where a released dataset's files are (cater, acre, star, something_else).")
  flags.DEFINE_string("config", "tiny", "Builder config (generated_cater: tiny|static|moving; generated_acre: "
                      "iid|compositional|systematic).")
  flags.DEFINE_string("data_dir", "~/lrr_data", "Where TFDS writes the dataset.")
  flags.DEFINE_integer("num_train", None, "Override the number of training videos/problems.")
  flags.DEFINE_integer("num_test", None, "Override the number of test videos/problems.")
  flags.DEFINE_integer("resolution", None, "Released datasets: frame size written (default 224).")
  flags.DEFINE_enum("frame_format", None, ["jpeg", "png", "raw"], "Released datasets: how frames are stored "
                    "(default jpeg).")
  flags.DEFINE_integer("jpeg_quality", None, "Released datasets: JPEG quality (default 90).")
  flags.DEFINE_integer("vocab_size", 512, "Size of the BPE trained on the data (0: no tokenizer).")


if __name__ == "__main__":
  define_flags()
  app.run(main)
