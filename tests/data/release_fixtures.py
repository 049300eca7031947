"""Tiny datasets written in each released annotation format, from the generated worlds."""
import json
import pathlib

import numpy as np
from PIL import Image

from lrr_jax.data.worlds import acre

ACRE_LABELS = {answer: label for label, answer in enumerate(acre.ANSWERS)}


def write_acre_release(directory: pathlib.Path, split: str, problems: list[acre.AcreProblem]) -> None:
  """config/<split>.json, images/ and scenes/ as ACRE releases them (object ids: global combination ids)."""
  for sub in ("config", "images", "scenes"):
    (directory / sub).mkdir(parents=True, exist_ok=True)
  config = []
  for p, problem in enumerate(problems):
    global_id = lambda k: problem.objects[k][0] * 16 + problem.objects[k][1] * 8 + problem.objects[k][2]
    panels = [{"light_state": "on" if light else "off", "objects": [global_id(k) for k in ids]}
              for ids, light in problem.context]
    panels += [{"light_state": "no", "objects": [global_id(k) for k in ids], "label": ACRE_LABELS[answer],
                "type": kind} for ids, kind, answer in problem.queries]
    config.append(panels)
    frames = list(problem.context_frames) + list(problem.query_frames)
    all_ids = [ids for ids, _ in problem.context] + [ids for ids, _, _ in problem.queries]
    for i, (frame, ids) in enumerate(zip(frames, all_ids)):
      stem = f"ACRE_{split}_{p:06d}_{i:02d}"
      Image.fromarray(np.kron(frame, np.ones((2, 2, 1), np.uint8))).save(directory / "images" / f"{stem}.png")
      scene = {"light_state": panels[i]["light_state"], "objects": [
          {"shape": acre.SHAPES[problem.objects[k][0]], "material": acre.MATERIALS[problem.objects[k][1]],
           "color": acre.COLOR_NAMES[problem.objects[k][2]], "size": "medium"} for k in ids]}
      (directory / "scenes" / f"{stem}.json").write_text(json.dumps(scene))
  (directory / "config" / f"{split}.json").write_text(json.dumps(config, indent=4))
