"""A dataset written to disk (ArrayRecord, through its TFDS builder) with a tokenizer trained on it beside it,
and its builder opened for reading; the command is `python -m lrr_jax.prepare`.
TFDS shows progress bars while it generates and shuffles; the tokenizer is trained on the train split's text.
"""
import hashlib
import json
import pathlib

from lrr_jax import files
from lrr_jax.data import rationales
from lrr_jax.data import records
from lrr_jax.data import tokenizer as tokenizer_lib

def builder_for(dataset: str, config: str, data_dir: str, **sizes):
  """The TFDS builder of a dataset name and config, writing ArrayRecord files under data_dir.

  sizes: a generated world's fields and sizes; a released dataset's frame settings (`release.FRAME_SETTINGS`:
  resolution, frame_format, jpeg_quality; None: the config's own)."""
  from lrr_jax.data.builders import generated  # pylint: disable=g-import-not-at-top
  from lrr_jax.data.builders import release  # pylint: disable=g-import-not-at-top
  sizes = {k: v for k, v in sizes.items() if v is not None}
  if dataset == "generated_cater":
    return generated.GeneratedCater(config=generated.cater_builder_config(config, **sizes),
                                    data_dir=data_dir, file_format="array_record")
  if dataset == "generated_acre":
    builder_config = config if not sizes else generated.GeneratedConfig(
        name=f"{config}_{sizes.get('num_train')}_{sizes.get('num_test')}",
        world=generated.acre.AcreConfig(split=config), **sizes)
    return generated.GeneratedAcre(config=builder_config, data_dir=data_dir, file_format="array_record")
  released = _released_builders()
  if dataset in released:
    builder_config = release.release_config(released[dataset], config, **sizes)
    return released[dataset](config=builder_config, data_dir=data_dir, file_format="array_record")
  raise ValueError(f"Unknown dataset {dataset!r}; expected generated_cater, generated_acre or one of "
                   f"{sorted(released)}.")


def _released_builders() -> dict:
  """The builders of the released datasets (they read a --manual_dir)."""
  from lrr_jax.data.builders import acre, cater, something_else, star  # pylint: disable=g-import-not-at-top
  return {"cater": cater.Cater, "acre": acre.Acre, "star": star.Star, "something_else": something_else.SomethingElse}


DATASETS = ("generated_cater", "generated_acre", "cater", "acre", "star", "something_else")


def builder_config_error(dataset: str, config: str) -> str:
  """Why (`dataset`, builder `config`) names no dataset this library writes ('' if it names one)."""
  if dataset not in DATASETS:
    return f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}"
  if dataset == "something_else":
    from lrr_jax.data.builders import something_else  # pylint: disable=g-import-not-at-top
    try:
      something_else.builder_config(config)
    except ValueError as e:
      return str(e).rstrip(".")
    return ""
  from lrr_jax.data.builders import generated  # pylint: disable=g-import-not-at-top
  builder = {**_released_builders(), "generated_cater": generated.GeneratedCater,
             "generated_acre": generated.GeneratedAcre}[dataset]
  names = [c.name for c in builder.BUILDER_CONFIGS]
  return "" if config in names else f"unknown builder config {config!r} of {dataset}; expected one of {names}"


def _texts(source) -> list[str]:
  """Every variant's question and response text of the records in `source`."""
  texts = []
  for index in range(len(source)):
    record = source[index]
    for variant in rationales.VARIANTS:
      example = records.read_example(record, variant, f"record {index}")
      texts += [s.text for s in example.question + example.response]
  return texts


def train_tokenizer(source, vocab_size: int) -> tokenizer_lib.Tokenizer:
  """A BPE over every variant's question and response text of the records in `source`."""
  return tokenizer_lib.train_bpe(_texts(source), vocab_size)


def mixture_tokenizer(builders, data_dir: str, vocab_size: int):
  """The path of a BPE trained on the train text of every dataset of a mixture (their prepared `builders`),
  written once under `<data_dir>/mixtures/<digest of the datasets and vocab_size>/tokenizer.json`."""
  names = sorted(builder.info.full_name for builder in builders)
  digest = hashlib.sha256(json.dumps([names, vocab_size]).encode()).hexdigest()[:16]
  path = files.as_path(data_dir) / "mixtures" / digest / "tokenizer.json"
  if not path.is_file():
    texts = [text for builder in sorted(builders, key=lambda b: b.info.full_name)
             for text in _texts(builder.as_data_source("train"))]
    tokenizer_lib.train_bpe(texts, vocab_size).save(path)
    (path.parent / "datasets.json").write_text(json.dumps(names))
  return path


UPLOADED = "_LRR_UPLOAD_COMPLETE"  # written last into a dataset copied to an object store


def local_data_dir(data_dir: str) -> str:
  """Where TFDS reads and writes a data_dir: itself if local; for `gs://`, a local mirror in the cache
  (ArrayRecord files are read and written by C++ that cannot reach an object store)."""
  if not files.is_remote(data_dir):
    return str(files.as_path(data_dir))
  return str(files.cache_root() / "data" / hashlib.sha256(data_dir.encode()).hexdigest()[:16])


def local_builder(dataset: str, config: str, data_dir: str, **sizes):
  """The dataset's builder over a local copy of it: `data_dir` itself, or for `gs://` its local mirror,
  fetched from the object store if this machine lacks it."""
  local = local_data_dir(data_dir)
  builder = builder_for(dataset, config, local, **sizes)
  if files.is_remote(data_dir):
    remote = _remote_directory(builder, local, data_dir)
    local_dir = pathlib.Path(builder.data_dir)
    if (remote / UPLOADED).exists() and not local_dir.exists():
      files.fetch(remote, local_dir)
      builder = builder_for(dataset, config, local, **sizes)  # re-read: now it is prepared
  return builder


def _remote_directory(builder, local: str, data_dir: str):
  return files.as_path(data_dir) / pathlib.Path(builder.data_dir).relative_to(local)


def prepare(dataset: str, config: str, data_dir: str, vocab_size: int = 512, manual_dir: str | None = None,
            **sizes):
  """Write (if missing) the dataset and its tokenizer; return the dataset's directory (an epath.Path).

  Released datasets are read from `manual_dir` (local or gs://, fetched into the cache); TFDS writes into a
  temporary folder and renames it when done, so a failure leaves earlier datasets under `data_dir` untouched.
  A `gs://` data_dir is prepared in its local mirror and copied up, `UPLOADED` last; a dataset already there
  is fetched rather than written again.
  """
  builder = local_builder(dataset, config, data_dir, **sizes)
  download_config = None
  if manual_dir:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    download_config = tfds.download.DownloadConfig(manual_dir=str(files.localize(manual_dir)))
  builder.download_and_prepare(download_config=download_config)
  directory = files.as_path(builder.data_dir)
  if vocab_size and not (directory / "tokenizer.json").is_file():
    train_tokenizer(builder.as_data_source("train"), vocab_size).save(directory / "tokenizer.json")
  if not files.is_remote(data_dir):
    return directory
  remote = _remote_directory(builder, local_data_dir(data_dir), data_dir)
  if not (remote / UPLOADED).exists():
    files.copy_tree(directory, remote)
    (remote / UPLOADED).write_text("")
  return remote
