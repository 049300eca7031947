"""TFDS builder for Something-Else (Materzynska et al., CVPR 2020): Something-Something v2 actions with boxes.

Expected layout in manual_dir:
  annotations/{train,validation}.json   [{id, label, template, placeholders}] (e.g. the compositional split)
  annotations/labels.json               {template without brackets: class id as a string}
  annotations/bounding_box_smthsmth*.json   {video id: [{name: '<id>/0001.jpg', labels: [{box2d: {x1, x2, y1,
                                         y2}, category, standard_category}], ...} per frame]}
  frames/<video id>/<0001.jpg ...>      the videos as frames (Something-Else's boxes refer to these)
The rationale detects the hand and the objects on each kept frame, re-identifies an object (by its
annotated category) seen again after frames without it, tracks each object from first to last frame, and
names the action; answer = the class id. A box is written as the 6x6 grid cell of its centre
(config `default`) or as its corners `(x1,y1,x2,y2)` quantised to `box_bins` bins per side (`boxes`: 32 bins;
`boxes<N>`: N bins; `lrr_jax.data.boxes` reads them back).
"""
import dataclasses
import pathlib

import numpy as np
from PIL import Image

from lrr_jax.data import boxes as boxes_lib
from lrr_jax import files
from lrr_jax.data import frame_sampling
from lrr_jax.data import rationales
from lrr_jax.data.builders import release
from lrr_jax.data.builders import video_files

GRID = 6
BOX_BINS = 32  # the `boxes` config's bins per side
BOX_FILE_BYTES = 16 * 2**30  # bounding_box_smthsmth_part*.json are gigabytes each


@dataclasses.dataclass
class SomethingElseConfig(release.ReleaseConfig):
  num_frames: int = 8  # frames kept, evenly spaced over the video
  box_bins: int = 0  # >0: boxes as quantised (x1,y1,x2,y2), this many bins per side; 0: the cell of the centre


def builder_config(name: str) -> SomethingElseConfig:
  """`default` (boxes as cells), `boxes` (corners in BOX_BINS bins) or `boxes<N>` (N bins, 2 <= N <= 1000)."""
  if name == "default":
    return SomethingElseConfig(name="default")
  bins = BOX_BINS if name == "boxes" else int(name[5:]) if name[5:].isdigit() and name.startswith("boxes") else 0
  if not 2 <= bins <= 1000:
    raise ValueError(f"Unknown Something-Else builder config {name!r}; expected default, boxes or boxes<N> "
                     "(N bins per side, 2..1000).")
  return SomethingElseConfig(name=name, box_bins=bins,
                             description=f"boxes as (x1,y1,x2,y2) quantised to {bins} bins per side")


def box_cell(box: dict, width: int, height: int) -> tuple[int, int]:
  """The 6x6 grid cell (row, col) of a box2d's centre in a width x height frame."""
  x = (float(box["x1"]) + float(box["x2"])) / 2 / width
  y = (float(box["y1"]) + float(box["y2"])) / 2 / height
  return int(np.clip(y * GRID, 0, GRID - 1)), int(np.clip(x * GRID, 0, GRID - 1))


def box_place(box: dict, width: int, height: int, box_bins: int = 0) -> str:
  """A box in rationale text: its corners quantised to `box_bins` bins ('(x1,y1,x2,y2)') or, with 0, the
  6x6 cell of its centre ('row,col')."""
  if box_bins:
    return boxes_lib.box_text(boxes_lib.quantize(box, width, height, box_bins))
  return "{},{}".format(*box_cell(box, width, height))


def something_else_example(video: dict, class_id: int, frame_boxes: list[list[dict]], size: tuple[int, int],
                           variant: str, box_bins: int = 0) -> rationales.Example:
  """Per kept frame the boxes as detections; the objects tracked first to last; the action class.
  box_bins: as SomethingElseConfig's (0: cells)."""
  width, height = size
  last = len(frame_boxes) - 1
  question = [rationales.question_segment("What action does the hand perform?", last, variant)]
  summary = [rationales.Segment("Find the hand and the objects, follow how they move, then name the action.", 0)]
  caption, tracks = [], {}
  again = rationales.reappearances([[label["category"] for label in boxes] for boxes in frame_boxes])
  for t, boxes in enumerate(frame_boxes):
    seen = []
    for label in boxes:
      place = box_place(label["box2d"], width, height, box_bins)
      tracks.setdefault(label["category"], []).append(place)
      seen.append(f"{label['category']} {place}")
    caption.append(rationales.frame_segment(
        t, f"<detect> {'; '.join(seen) or 'nothing'}. {rationales.reid_text(again[t])}"))
  track_text = "; ".join(f"{name} {path[0]} -> {path[-1]}" for name, path in tracks.items())
  reasoning = [rationales.Segment(f"<track> {track_text or 'nothing moves'}. ", last)]
  if variant == "no_surrogate":
    caption = [rationales.Segment("A hand acts on some objects.", 0)]
    reasoning = [rationales.Segment("The motion of the objects tells the action.", 0)]
  action = video["template"].replace("[", "").replace("]", "")
  return rationales.staged_example(question, summary, caption, reasoning, f"The action is: {action}.",
                                   str(class_id), last, variant)


class SomethingElse(release.ReleaseBuilder):
  """Something-Else from its released annotations, boxes and frames."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put annotations/ (split, labels, boxes) and frames/ in manual_dir."
  BUILDER_CONFIGS = [builder_config("default"), builder_config("boxes")]

  @classmethod
  def named_config(cls, name: str) -> SomethingElseConfig:
    """`default`, `boxes` or `boxes<N>` (bins from the name)."""
    return builder_config(name)

  def _split_generators(self, dl_manager):
    manual = pathlib.Path(dl_manager.manual_dir)
    labels = files.read_json(manual / "annotations" / "labels.json", dict)
    box_files = sorted((manual / "annotations").glob("bounding_box_smthsmth*.json"))
    if not box_files:
      raise FileNotFoundError(f"Something-Else: no bounding_box_smthsmth*.json in {manual / 'annotations'}.")
    boxes = {k: v for path in box_files for k, v in files.read_json(path, dict, BOX_FILE_BYTES).items()}
    splits = {"train": "train", "validation": "validation"}
    return {split: self._generate_examples(manual, files.read_json(manual / "annotations" / f"{name}.json", list),
                                           labels, boxes) for split, name in splits.items()}

  def _generate_examples(self, manual: pathlib.Path, videos: list[dict], labels: dict, boxes: dict):
    cfg = self.builder_config
    for video in videos:
      video_id = str(video["id"])
      source = f"Something-Else video {video_id}"
      template = video["template"].replace("[", "").replace("]", "")
      if template not in labels:
        raise ValueError(f"{source}: template {template!r} is not in labels.json.")
      frame_files = sorted((manual / "frames" / video_id).glob("*.jpg"))
      if not frame_files:
        raise FileNotFoundError(f"{source}: no frames in {manual / 'frames' / video_id}.")
      kept = frame_sampling.evenly_spaced(len(frame_files), cfg.num_frames)
      frames = np.stack([video_files.read_image(frame_files[i], cfg.resolution) for i in kept])
      with Image.open(frame_files[0]) as first:
        size = first.size
      by_name = {entry["name"].split("/")[-1]: entry.get("labels", []) for entry in boxes.get(video_id, [])}
      frame_boxes = [by_name.get(frame_files[i].name, []) for i in kept]
      class_id = int(labels[template])
      examples = {v: something_else_example(video, class_id, frame_boxes, size, v, cfg.box_bins)
                  for v in rationales.VARIANTS}
      yield video_id, self.make_record(frames, examples, class_id, template=template,
                                          placeholders=video.get("placeholders", []))
