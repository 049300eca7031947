"""TFDS builder for the released CATER snitch-localisation task (Girdhar & Ramanan, ICLR 2020).

Expected layout (one release, e.g. `all_actions` or `all_actions_cameramotion`, unpacked in manual_dir):
  <manual_dir>/videos/<video>.avi                    the rendered videos (decoded with PyAV)
  <manual_dir>/lists/localize/{train,val}.txt        lines `<video> <class>` (comma or space separated);
                                                     class = the snitch's final cell on the 6x6 grid
  <manual_dir>/scenes/<video stem>.json               (optional) the generator's scene: `objects` with shape
                                                     ('spl' is the snitch), color, material, size, instance and
                                                     per-frame `locations` {frame: [x, y, z]}; `movements`
                                                     {instance: [[action, other, start, end], ...]}
With a scene, the rationale detects the objects on the first kept frame, tracks the snitch (or the cone that
`_contain`s it) on each kept frame, and concludes with the released class. Without one, only the `direct`
variant's content is known, and every variant states just the answer.
Grid cells from scene coordinates: x and y in [-3, 3] split into 6 bands each (row from y, column from x).
"""
import dataclasses
import pathlib
import re

import numpy as np

from lrr_jax import files
from lrr_jax.data import rationales
from lrr_jax.data.builders import release
from lrr_jax.data.builders import video_files
from lrr_jax.data.worlds import cater as cater_world

GRID = cater_world.GRID


@dataclasses.dataclass
class CaterReleaseConfig(release.ReleaseConfig):
  num_frames: int = 16  # frames kept, evenly spaced over the video


def read_list(path: pathlib.Path) -> list[tuple[str, int]]:
  if not path.is_file():
    raise FileNotFoundError(f"CATER list {path} is missing.")
  entries = []
  for line_number, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
    if len(parts) != 2 or not parts[1].isdigit() or not 0 <= int(parts[1]) < GRID * GRID:
      raise ValueError(f"{path}:{line_number}: expected '<video> <class in 0..35>', got {line!r}.")
    entries.append((parts[0], int(parts[1])))
  return entries


def cell(location) -> tuple[int, int]:
  x, y = float(location[0]), float(location[1])
  band = lambda v: int(np.clip(np.floor((v + 3.0) / 6.0 * GRID), 0, GRID - 1))
  return band(y), band(x)


def scene_rationale(scene: dict, kept: np.ndarray, label: int, variant: str) -> rationales.Example:
  """Detection on the first kept frame, then the snitch tracked (or re-identified under its cone), in the
  generated world's words (`worlds/cater.py`)."""
  objects = scene["objects"]
  name = lambda o: "snitch" if o["shape"] == "spl" else f"{o['color']} {o['shape']}"
  at = lambda o, t: cell(o["locations"][str(int(kept[t]))])
  snitch = next(o for o in objects if o["shape"] == "spl")
  contains = [(o, int(start), int(end)) for o in objects
              for action, other, start, end in scene.get("movements", {}).get(o.get("instance"), [])
              if action == "_contain" and other == snitch.get("instance")]
  last = len(kept) - 1
  caption = [cater_world.detection_segment([(name(o), at(o, 0)) for o in objects])]
  reasoning = []
  for t in range(1, last + 1):
    holder = next((o for o, _, end in contains if end <= kept[t]), None)  # covered once it lands
    reasoning.append(cater_world.track_segment(t, at(snitch, t)) if holder is None else
                     cater_world.reid_segment(t, name(holder), at(holder, t)))
  answer = cater_world.answer_text(label)
  return cater_world.snitch_example(caption, reasoning, len(objects), answer, answer, last, variant)


class Cater(release.ReleaseBuilder):
  """CATER snitch localisation from its released files."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Unpack a CATER release (videos/, lists/, optionally scenes/) in manual_dir."
  BUILDER_CONFIGS = [CaterReleaseConfig(name="default")]

  def _split_generators(self, dl_manager):
    manual = pathlib.Path(dl_manager.manual_dir)
    lists = {split: manual / "lists" / "localize" / f"{split}.txt" for split in ("train", "val")}
    entries = {split: read_list(path) for split, path in lists.items()}  # missing or bad lists fail here
    return {split: self._generate_examples(manual, split_entries) for split, split_entries in entries.items()}

  def _generate_examples(self, manual: pathlib.Path, entries: list[tuple[str, int]]):
    cfg = self.builder_config
    for video, label in entries:
      clip = video_files.sample_video(manual / "videos" / video, cfg.resolution, cfg.num_frames)
      kept, frames = clip.kept, clip.frames
      scene_file = manual / "scenes" / f"{pathlib.Path(video).stem}.json"
      scene = files.read_json(scene_file, dict) if scene_file.is_file() else None
      try:
        examples = {v: scene_rationale(scene, kept, label, v) if scene else _answer_only(label, v, len(kept))
                    for v in rationales.VARIANTS}
      except (KeyError, StopIteration, TypeError, ValueError) as e:
        raise ValueError(f"CATER scene {scene_file} is malformed ({type(e).__name__}: {e}).") from e
      yield video, self.make_record(frames, examples, label, video=video, has_scene=scene is not None)


def _answer_only(label: int, variant: str, num_frames: int) -> rationales.Example:
  del variant
  answer = cater_world.answer_text(label)
  last = num_frames - 1
  return rationales.Example([rationales.Segment(cater_world.QUESTION, last)],
                            [rationales.Segment(f"answer {answer}", last)], answer)
