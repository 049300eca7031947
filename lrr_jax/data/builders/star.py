"""TFDS builder for STAR (Wu et al., NeurIPS 2021): situated reasoning on Charades videos, from its release.

Expected layout in manual_dir:
  STAR_{train,val}.json   a list of questions: question_id ('<Type>_<template>_<n>'), question, video_id,
                          start, end (seconds), answer, choices [{choice_id, choice}], situations
                          {frame id: {rel_pairs, rel_labels, actions, bbox, bbox_labels}}
  videos/<video_id>.mp4   the Charades videos
  classes/{object,relationship,action}_classes.txt   (optional) lines '<id> <name>' (e.g. 'o000 person')
The rationale turns the situation graphs into language: per keyframe, the objects detected, the relations
between them, the actions and the objects re-identified (an object class back after a keyframe without it, with
the frames of the earlier keyframes that showed it; each text about a keyframe carries that frame's index), then
the choice.
The answer is the letter of the correct choice ('answer B'); label = its index.
"""
import dataclasses
import pathlib

import numpy as np

from lrr_jax import files
from lrr_jax.data import rationales
from lrr_jax.data.builders import release
from lrr_jax.data.builders import video_files

LETTERS = "ABCDEFGH"
QUESTION_TYPES = ("Interaction", "Sequence", "Prediction", "Feasibility")


@dataclasses.dataclass
class StarReleaseConfig(release.ReleaseConfig):
  num_frames: int = 16  # frames kept, evenly spaced over the clip


def read_classes(directory: pathlib.Path) -> dict[str, str]:
  names = {}
  for kind in ("object", "relationship", "action"):
    path = directory / f"{kind}_classes.txt"
    if path.is_file():
      for line in path.read_text().splitlines():
        if line.strip():
          class_id, _, name = line.strip().partition(" ")
          names[class_id] = name.replace("_", " ")
  return names


def star_example(question: dict, kept_frames: np.ndarray, fps: float, start: float, names: dict[str, str],
                 variant: str) -> rationales.Example:
  """Question with lettered choices; rationale from the situation graphs; answer = the correct letter."""
  name = lambda class_id: names.get(class_id, class_id)
  choices = question["choices"]
  label = next(i for i, c in enumerate(choices) if c["choice"] == question["answer"])
  letter = LETTERS[label]
  last = len(kept_frames) - 1
  options = " ".join(f"{LETTERS[i]}) {c['choice']}" for i, c in enumerate(choices))
  prompt = [rationales.question_segment(f"{question['question']} Options: {options}", last, variant)]
  kind = question["question_id"].split("_")[0]
  summary = [rationales.Segment(f"A {kind.lower()} question: read each situation, then pick the option.", 0)]
  caption, seen = [], {}  # seen: object -> (keyframe, frame) of the earlier keyframes that show it
  for k, (frame_id, graph) in enumerate(sorted(question["situations"].items(), key=lambda kv: int(kv[0]))):
    # The keyframe's time in the clip -> the last kept frame at or before it.
    t = int(np.clip(np.searchsorted(kept_frames, (int(frame_id) / fps - start) * fps, side="right") - 1, 0, last))
    labels = list(dict.fromkeys(graph.get("bbox_labels", [])))
    objects = ", ".join(dict.fromkeys(name(o) for o in labels))
    relations = "; ".join(f"{name(a)} {name(r)} {name(b)}"
                          for (a, b), r in zip(graph.get("rel_pairs", []), graph.get("rel_labels", [])))
    actions = "; ".join(name(a) for a in graph.get("actions", []))
    # re-identification: an object (a class id of the situation graphs) back after a keyframe without it
    again = [(name(o), sorted({frame for _, frame in seen[o]})) for o in labels
             if o in seen and seen[o][-1][0] < k - 1]
    for o in labels:
      seen.setdefault(o, []).append((k, t))
    caption.append(rationales.frame_segment(t, f"<detect> {objects or 'nothing'}. "
                                               f"{relations + '. ' if relations else ''}"
                                               f"{'action: ' + actions + '. ' if actions else ''}"
                                               f"{rationales.reid_text(again)}"))
  if not caption or variant == "no_surrogate":
    caption = [rationales.Segment("The video shows a person in a room.", 0)]
  reasoning = [rationales.Segment(f"The situations support option {letter}: {question['answer']}",
                                  caption[-1].frame_index)]
  return rationales.staged_example(prompt, summary, caption, reasoning, f"The answer is {letter}.", letter, last,
                                   variant)


class Star(release.ReleaseBuilder):
  """STAR from its released question/situation files and the Charades videos."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Put STAR_{train,val}.json, videos/ (Charades) and classes/ in manual_dir."
  BUILDER_CONFIGS = [StarReleaseConfig(name="default")]

  def _split_generators(self, dl_manager):
    manual = pathlib.Path(dl_manager.manual_dir)
    files = {split: manual / f"STAR_{split}.json" for split in ("train", "val")}
    for path in files.values():
      if not path.is_file():
        raise FileNotFoundError(f"STAR: {path} is missing (manual_dir={manual}).")
    names = read_classes(manual / "classes")
    return {split: self._generate_examples(manual, path, names) for split, path in files.items()}

  def _generate_examples(self, manual: pathlib.Path, path: pathlib.Path, names: dict[str, str]):
    cfg = self.builder_config
    for index, question in enumerate(files.read_json(path, list)):
      source = f"{path} question {index} ({question.get('question_id', '?')})"
      try:
        start, end = float(question["start"]), float(question["end"])
        clip = video_files.sample_video(manual / "videos" / f"{question['video_id']}.mp4", cfg.resolution,
                                        cfg.num_frames, start, end)
        examples = {v: star_example(question, clip.kept, clip.fps, start, names, v) for v in rationales.VARIANTS}
      except (KeyError, StopIteration, TypeError) as e:
        raise ValueError(f"{source} is malformed ({type(e).__name__}: {e}).") from e
      label = LETTERS.index(examples["full"].answer)
      yield question["question_id"], self.make_record(
          clip.frames, examples, label,
          question_type=question["question_id"].split("_")[0], video=question["video_id"])
