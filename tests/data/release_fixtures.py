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


def write_video(path: pathlib.Path, frames: np.ndarray, fps: int = 24) -> None:
  """An MPEG-4 video file of uint8[T, H, W, 3] frames (PyAV)."""
  import av  # pylint: disable=g-import-not-at-top
  path.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(path), "w") as container:
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def write_star_release(directory: pathlib.Path) -> list[dict]:
  """STAR_{train,val}.json, classes/ and two 2-second Charades-like videos; returns the train questions."""
  rng = np.random.default_rng(0)
  for video_id in ("ABC12", "XYZ34"):
    write_video(directory / "videos" / f"{video_id}.mp4", rng.integers(0, 255, (48, 32, 32, 3), dtype=np.uint8))
  (directory / "classes").mkdir(parents=True, exist_ok=True)
  (directory / "classes" / "object_classes.txt").write_text("o000 person\no001 cup\no002 table\n")
  (directory / "classes" / "relationship_classes.txt").write_text("r000 holding\nr001 on\n")
  (directory / "classes" / "action_classes.txt").write_text("a000 holding_a_cup\na001 putting_a_cup_somewhere\n")

  def question(qid, video_id, answer_index):
    choices = ["The cup.", "The table.", "The book.", "The phone."]
    return {"question_id": qid, "question": "Which object was put down by the person?", "video_id": video_id,
            "start": 0.5, "end": 1.75, "answer": choices[answer_index],
            "choices": [{"choice_id": i, "choice": c} for i, c in enumerate(choices)],
            "situations": {"000018": {"rel_pairs": [["o000", "o001"]], "rel_labels": ["r000"], "actions": ["a000"],
                                      "bbox": [[1, 2, 10, 12]], "bbox_labels": ["o000", "o001"]},
                           "000036": {"rel_pairs": [["o001", "o002"]], "rel_labels": ["r001"], "actions": ["a001"],
                                      "bbox": [[3, 3, 9, 9]], "bbox_labels": ["o001", "o002", "o000"]}}}

  train = [question("Interaction_T1_1", "ABC12", 0), question("Sequence_T2_7", "XYZ34", 2)]
  (directory / "STAR_train.json").write_text(json.dumps(train))
  (directory / "STAR_val.json").write_text(json.dumps([question("Prediction_T4_3", "ABC12", 1)]))
  return train


def write_something_else_release(directory: pathlib.Path) -> None:
  """annotations/ (split files, labels.json, box file) and frames/<id>/*.jpg as Something-Else releases them."""
  rng = np.random.default_rng(1)
  (directory / "annotations").mkdir(parents=True, exist_ok=True)
  labels = {"Moving something from left to right": "93", "Putting something on a surface": "139"}
  videos = {"train": [("1001", "Moving [something] from left to right", ["cup"]),
                      ("1002", "Putting [something] on a surface", ["pen"])],
            "validation": [("2001", "Moving [something] from left to right", ["box"])]}
  boxes = {}
  for split, entries in videos.items():
    (directory / "annotations" / f"{split}.json").write_text(json.dumps(
        [{"id": vid, "label": template.replace("[something]", obj[0]), "template": template, "placeholders": obj}
         for vid, template, obj in entries]))
    for vid, _, obj in entries:
      frames = []
      (directory / "frames" / vid).mkdir(parents=True, exist_ok=True)
      for t in range(10):  # 10 frames of 96x64; the object moves from left to right
        image = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
        image.save(directory / "frames" / vid / f"{t + 1:04d}.jpg")
        x = 4 + 8 * t
        frames.append({"name": f"{vid}/{t + 1:04d}.jpg", "nr_instances": 2, "gt_placeholders": obj, "labels": [
            {"box2d": {"x1": x, "x2": x + 8, "y1": 28, "y2": 36}, "category": obj[0], "standard_category": "0000"},
            {"box2d": {"x1": x, "x2": x + 10, "y1": 40, "y2": 60}, "category": "hand", "standard_category": "hand"}]})
      boxes[vid] = frames
  (directory / "annotations" / "labels.json").write_text(json.dumps(labels))
  (directory / "annotations" / "bounding_box_smthsmth_part1.json").write_text(json.dumps(boxes))


def write_audio(path: pathlib.Path, seconds: float = 0.5, rate: int = 16000) -> None:
  """An audio-only file (AAC silence; the container from the suffix, e.g. .mp4)."""
  import av  # pylint: disable=g-import-not-at-top
  path.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(path), "w") as container:
    stream = container.add_stream("aac", rate=rate)
    for i in range(int(seconds * rate) // 1024):
      frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
      frame.sample_rate, frame.pts = rate, i * 1024
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
