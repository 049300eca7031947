"""Tiny datasets written in each released annotation format, from the generated worlds."""
import json
import pathlib

import numpy as np
from PIL import Image

from lrr_jax.data.worlds import acre
from lrr_jax.data.worlds import cater

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


CATER_SHAPES = {"cube": "cube", "sphere": "sphere", "cylinder": "cylinder", "cone": "cone", "snitch": "spl"}


def write_cater_release(directory: pathlib.Path, split: str, videos: cater.CaterVideos, offset: int = 0) -> None:
  """videos/*.avi (PyAV, MPEG-4), scenes/*.json and lists/localize/<split>.txt as CATER releases them."""
  import av  # pylint: disable=g-import-not-at-top
  for sub in ("videos", "scenes", "lists/localize"):
    (directory / sub).mkdir(parents=True, exist_ok=True)
  lines = []
  for n in range(len(videos)):
    name = f"CLEVR_new_{offset + n:06d}"
    with av.open(str(directory / "videos" / f"{name}.avi"), "w") as container:
      stream = container.add_stream("mpeg4", rate=8)
      stream.width = stream.height = videos.frames.shape[2]
      stream.pix_fmt = "yuv420p"
      for frame in videos.frames[n]:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
      container.mux(stream.encode())
    shapes = [CATER_SHAPES[cater.SHAPES[s]] for s in videos.shape[n]]
    instance = [f"{shape.capitalize()}_{k}" for k, shape in enumerate(shapes)]
    objects = [{"shape": shapes[k], "color": cater.COLOR_NAMES[videos.color[n, k]], "material": "rubber",
                "size": "large", "instance": instance[k],
                "locations": {str(t): [float(videos.cell[n, t, k, 1]) - 2.5, float(videos.cell[n, t, k, 0]) - 2.5,
                                       0.0] for t in range(videos.cell.shape[1])}}
               for k in range(len(shapes))]
    movements = {i: [] for i in instance}
    for action in videos.actions[n]:
      other = instance[action.target] if action.kind == "contain" else None
      movements[instance[action.actor]].append([f"_{action.kind}", other, action.start, action.end])
    (directory / "scenes" / f"{name}.json").write_text(json.dumps({"objects": objects, "movements": movements}))
    lines.append(f"{name}.avi {int(videos.label[n])}")
  (directory / "lists" / "localize" / f"{split}.txt").write_text("\n".join(lines) + "\n")
