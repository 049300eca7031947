"""The one record format every source is written in, so that every dataset reads the same way.

A record: `frames` uint8[T, H, W, 3], or with `frame_format` ("jpeg" | "png") one encoded image per frame,
bytes[T] (`frame_codec`: records without the field are raw, as every dataset written before it); `examples` (JSON text: per rationale variant, the question and response
as [text, frame_index] segments and the answer); `answer` (text); `label` (int class, -1 if the task has none);
`metadata` (JSON text: split, query type, ... for evaluation).
"""
import json
from typing import Any

import numpy as np

from lrr_jax import files
from lrr_jax.data import frame_codec
from lrr_jax.data import rationales


def features(height: int, width: int, frame_format: str = "raw"):
  """The TFDS features of a record with frames of (height, width), stored raw or encoded (imported lazily:
  TFDS is heavy). Raw records have no `frame_format` field, exactly as before it existed."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  frame_codec.check_format(frame_format)
  encoded = frame_format != "raw"
  frames = (tfds.features.Tensor(shape=(None,), dtype=np.object_) if encoded else
            tfds.features.Tensor(shape=(None, height, width, 3), dtype=np.uint8))
  return tfds.features.FeaturesDict({
      "frames": frames,
      **({"frame_format": tfds.features.Text()} if encoded else {}),
      "examples": tfds.features.Text(),
      "answer": tfds.features.Text(),
      "label": tfds.features.Scalar(dtype=np.int64),
      "metadata": tfds.features.Text(),
  })


def make_record(frames: np.ndarray, examples: dict[str, rationales.Example], label: int = -1,
                frame_format: str = "raw", jpeg_quality: int = 90, **metadata: Any) -> dict[str, Any]:
  """A record from frames uint8[T, H, W, 3] (stored as `frame_format`) and the example of each variant."""
  as_json = {variant: {"question": [[s.text, s.frame_index] for s in e.question],
                       "response": [[s.text, s.frame_index] for s in e.response], "answer": e.answer}
             for variant, e in examples.items()}
  answer = next(iter(examples.values())).answer
  record = {"frames": frame_codec.encode(frames, frame_format, jpeg_quality), "examples": json.dumps(as_json),
            "answer": answer, "label": label, "metadata": json.dumps(metadata)}
  return record if frame_format == "raw" else {**record, "frame_format": frame_format}


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def read_example(record: dict[str, Any], variant: str, source: str = "record") -> rationales.Example:
  """The `variant` example of a record; ValueError naming `source` if the record lacks it or is malformed."""
  try:
    variants = files.parse_json(_text(record["examples"]), f"{source}'s 'examples' field", dict)
    data = variants[variant]
    to_segments = lambda pairs: [rationales.Segment(str(text), int(frame)) for text, frame in pairs]
    return rationales.Example(to_segments(data["question"]), to_segments(data["response"]), str(data["answer"]))
  except KeyError as e:
    raise ValueError(f"{source} has no {e} (variants present: "
                     f"{sorted(variants) if 'variants' in locals() else 'none'}).") from e
  except (json.JSONDecodeError, TypeError, ValueError) as e:
    raise ValueError(f"{source} has a malformed 'examples' field: {e}") from e


def read_metadata(record: dict[str, Any]) -> dict[str, Any]:
  return files.parse_json(_text(record["metadata"]), "a record's 'metadata' field", dict)
