"""TFDS builder for the released ACRE dataset (Zhang et al., CVPR 2021), read from a manual directory.

Expected layout (one regime per directory, as released):
  <manual_dir>/config/{train,val,test}.json   a list of problems, each 10 panels: 6 context panels
                                               {"light_state": "on"|"off", "objects": [ids]} and 4 queries
                                               {"light_state": "no", "objects", "label": 0|1|2, "type", "ref"?}
  <manual_dir>/images/ACRE_{split}_{problem:06d}_{panel:02d}.png
  <manual_dir>/scenes/ACRE_{split}_{problem:06d}_{panel:02d}.json   (optional: names objects by attributes)
Each query becomes a record: the 6 context panels and the query panel as 7 frames; labels 0 off, 1 undetermined,
2 on. The rationale is built from the context by the disjunctive rule; the answer is the released label.
"""
import pathlib

import numpy as np

from lrr_jax import files
from lrr_jax.data import rationales
from lrr_jax.data.builders import release
from lrr_jax.data.builders import video_files
from lrr_jax.data.worlds import acre

SPLITS = ("train", "val", "test")

def object_names(scene_dir: pathlib.Path, stems: list[str], panels: list[dict]) -> dict[int, str]:
  """Object id -> 'colour material shape' from the scene files (where present), else 'object <id>'."""
  names = {}
  for stem, panel in zip(stems, panels):
    scene_file = scene_dir / f"{stem}.json"
    scene_objects = files.read_json(scene_file, dict).get("objects", []) if scene_file.is_file() else []
    for k, obj_id in enumerate(panel["objects"]):
      if k < len(scene_objects) and len(scene_objects) == len(panel["objects"]):
        o = scene_objects[k]
        names.setdefault(obj_id, f"{o['color']} {o['material']} {o['shape']}")
      names.setdefault(obj_id, f"object {obj_id}")
  return names


class Acre(release.ReleaseBuilder):
  """ACRE from its released files; panels are resized to the config's resolution."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put one ACRE regime's config/, images/ and scenes/ folders in manual_dir."
  BUILDER_CONFIGS = [release.ReleaseConfig(name=regime) for regime in ("iid", "compositional", "systematic")]

  def _split_generators(self, dl_manager):
    manual = pathlib.Path(dl_manager.manual_dir)
    present = [s for s in SPLITS if (manual / "config" / f"{s}.json").is_file()]
    if "train" not in present:
      raise FileNotFoundError(f"ACRE: {manual / 'config' / 'train.json'} is missing (manual_dir={manual}).")
    return {split: self._generate_examples(manual, split) for split in present}

  def _generate_examples(self, manual: pathlib.Path, split: str):
    config_file = manual / "config" / f"{split}.json"
    for p, panels in enumerate(files.read_json(config_file, list)):
      source = f"{config_file} problem {p}"
      if len(panels) != 10 or any(panel.get("light_state") not in ("on", "off") for panel in panels[:6]):
        raise ValueError(f"{source}: expected 6 context panels (light on/off) and 4 queries.")
      stems = [f"ACRE_{split}_{p:06d}_{i:02d}" for i in range(10)]
      read = lambda i: video_files.read_image(manual / "images" / f"{stems[i]}.png", self.builder_config.resolution)
      context_frames = np.stack([read(i) for i in range(6)])
      problem = acre.AcreProblem(
          names=object_names(manual / "scenes", stems, panels), objects=[], blickets=[],
          context=[(tuple(panel["objects"]), panel["light_state"] == "on") for panel in panels[:6]],
          queries=[(tuple(q["objects"]), q["type"], acre.ANSWERS[q["label"]]) for q in panels[6:]],
          context_frames=context_frames, query_frames=None)
      for q in range(4):
        frames = np.concatenate([context_frames, read(6 + q)[None]])
        examples = {v: acre.rationale_example(problem, q, v) for v in rationales.VARIANTS}
        yield f"{p}_{q}", self.make_record(frames, examples, int(panels[6 + q]["label"]),
                                              query_type=panels[6 + q]["type"], problem=p, split=split)
