"""LRR rationales with surrogate tasks, written in LLaVA-o1's four stages, and their parser.

A rationale is a list of `Segment`s, each carrying the index of the frame it speaks about, so that the model's
frame-visibility mask lets a token about frame t see frames <= t only. Text about frame t starts with the
marker `frame t:` (one token, see `tokenizer.py`), so generation can follow the same rule: a token sees the
frames up to the last marker before it, and every frame from `<CONCLUSION>` on. Surrogate tasks in language:
detection (`<detect>`: objects and their grid cells), re-identification (`<reid>`: which object is which
across frames, e.g. the cone that now covers the snitch) and tracking (`<track>`: the snitch's cell, or its
container's, frame by frame).

Variants (for the ablations): `full`; `no_tags` (the same text without stage tags); `no_surrogate` (the stages
without surrogate tasks); `direct` (the answer only).
"""
import dataclasses
import re

import numpy as np

from lrr_jax.data.worlds import acre
from lrr_jax.data.worlds import cater

STAGES = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")
VARIANTS = ("full", "no_tags", "no_surrogate", "direct")


@dataclasses.dataclass(frozen=True)
class Segment:
  text: str
  frame_index: int  # last frame this text may see; -1: none


@dataclasses.dataclass
class Example:
  """A question (no loss) and its response (loss on rationale and answer), as frame-indexed text."""
  question: list[Segment]
  response: list[Segment]
  answer: str

  @property
  def response_text(self) -> str:
    return "".join(s.text for s in self.response)


def staged(stages: list[tuple[str, list[Segment]]], variant: str, answer_segment: Segment) -> list[Segment]:
  """Wrap each stage's segments in its tags (or not), or keep only the answer for `direct`."""
  if variant not in VARIANTS:
    raise ValueError(f"Unknown rationale variant {variant!r}; expected one of {VARIANTS}.")
  if variant == "direct":
    return [answer_segment]
  out = []
  for name, segments in stages:
    first = segments[0].frame_index
    if variant != "no_tags":  # an opening tag still sees what the text before it saw (CONCLUSION: all)
      out.append(Segment(f"<{name}>", first if name == "CONCLUSION" or not out else out[-1].frame_index))
    out.extend(segments)
    out.append(Segment(f"</{name}>" if variant != "no_tags" else " ", out[-1].frame_index))
  return out


def staged_example(question: list[Segment], summary: list[Segment], caption: list[Segment],
                   reasoning: list[Segment], conclusion: str, answer: str, last_frame: int,
                   variant: str) -> Example:
  """An Example whose response is the four stages; the conclusion text ends with 'answer <answer>'."""
  conclusion_segment = Segment(f"{conclusion} answer {answer}", last_frame)
  stages = [("SUMMARY", summary), ("CAPTION", caption), ("REASONING", reasoning),
            ("CONCLUSION", [conclusion_segment])]
  return Example(question, staged(stages, variant, Segment(f"answer {answer}", last_frame)), answer)


def _name(video: cater.CaterVideos, n: int, k: int) -> str:
  if video.shape[n, k] == cater.SNITCH:
    return "snitch"
  return f"{cater.COLOR_NAMES[video.color[n, k]]} {cater.SHAPES[video.shape[n, k]]}"


def _at(cell: np.ndarray) -> str:
  return f"{cell[0]},{cell[1]}"


def cater_answer(label: int) -> str:
  """The snitch's final cell as the answer is written: 'row,col'."""
  return f"{label // cater.GRID},{label % cater.GRID}"


def cater_example(video: cater.CaterVideos, n: int, variant: str = "full") -> Example:
  """Question, rationale and answer for video n of a batch: where is the snitch at the end?"""
  last = video.cell.shape[1] - 1
  # Answering directly, the model has watched the whole video; with a rationale it looks step by step.
  question = [Segment("Where is the snitch at the end of the video?", last if variant == "direct" else 0)]
  answer = cater_answer(int(video.label[n]))
  summary = [Segment("Find the snitch's final cell: detect the objects, track the snitch and any cone over it.",
                     0)]
  if variant == "no_surrogate":
    caption = [Segment(f"There are {video.shape.shape[1]} objects on a 6x6 grid.", 0)]
    reasoning = [Segment("The snitch may move or be covered; its final place gives the answer.", 0)]
  else:
    caption = [Segment("frame 0: <detect> " + "; ".join(
        f"{_name(video, n, k)} {_at(video.cell[n, 0, k])}" for k in range(video.shape.shape[1])) + ".", 0)]
    reasoning = [_tracking_step(video, n, t) for t in range(1, last + 1)]
  return staged_example(question, summary, caption, reasoning, f"The snitch ends at {_at(video.cell[n, last, 0])}.",
                        answer, last, variant)


def _tracking_step(video: cater.CaterVideos, n: int, t: int) -> Segment:
  """The snitch at frame t: seen at its cell, or re-identified under the cone that covers it."""
  container = video.container[n, t, 0]
  if container < 0:
    state = f"snitch {_at(video.cell[n, t, 0])}" + ("" if video.visible[n, t, 0] else " occluded")
    return Segment(f"frame {t}: <track> {state}. ", t)
  cone = _name(video, n, container)
  return Segment(f"frame {t}: <track> snitch hidden; <reid> {cone} {_at(video.cell[n, t, container])} "
                 f"covers it. ", t)


def acre_statuses(problem: acre.AcreProblem) -> dict[int, tuple[bool | None, str]]:
  """Each context object's status as the rationale derives it, with the reason, by the disjunctive rule."""
  status: dict[int, tuple[bool | None, str]] = {}
  for ids, light in problem.context:
    for k in ids:
      status.setdefault(k, (None, "undetermined"))
      if not light:
        status[k] = (False, "not a blicket: the light is off with it")
  changed = True
  while changed:
    changed = False
    for ids, light in problem.context:
      unknown = [k for k in ids if status[k][0] is not True and status[k][0] is not False]
      if light and len(unknown) == 1 and all(status[k][0] is False for k in ids if k != unknown[0]):
        reason = "alone, the light is on" if len(ids) == 1 else "the light is on and the others are not"
        status[unknown[0]], changed = (True, f"blicket: {reason}"), True
  return status


def acre_answer(problem: acre.AcreProblem, query_ids: tuple[int, ...]) -> str:
  """The disjunctive rule's answer, as ACRE labels it (a lit panel's undetermined objects together: on)."""
  status = acre_statuses(problem)
  known = [status.get(k, (None, ""))[0] for k in query_ids]
  lit_sets = [{k for k in ids if status[k][0] is not False} for ids, light in problem.context if light]
  if True in known or any(rest and rest <= set(query_ids) for rest in lit_sets):
    return "on"
  return "off" if all(v is False for v in known) else "undetermined"


def acre_example(problem: acre.AcreProblem, query: int, variant: str = "full") -> Example:
  """Context panels are frames 0-5, the query panel frame 6: is the light on, off, or undetermined?"""
  query_ids, _, answer = problem.queries[query]
  last = acre.NUM_CONTEXT
  names = lambda ids: ", ".join(problem.names[k] for k in ids)
  question = [Segment("Is the machine's light on in the last panel?", last if variant == "direct" else 0)]
  summary = [Segment("Find the blickets from the context panels, then judge the last panel.", 0)]
  if variant == "no_surrogate":
    caption = [Segment("There are six context panels and a query panel.", 0)]
    reasoning = [Segment("The light turns on when a blicket is on the machine.", 0)]
  else:
    caption = [Segment(f"frame {i}: <detect> {names(ids)}; light {'on' if light else 'off'}. ", i)
               for i, (ids, light) in enumerate(problem.context)]
    status = acre_statuses(problem)
    reasoning = [Segment(f"{problem.names[k]}: {status[k][1]}. ", last - 1)
                 for k in sorted(status)]
    reasoning.append(Segment(f"frame {last}: <detect> {names(query_ids)}. ", last))
  return staged_example(question, summary, caption, reasoning, f"The light is {answer}.", answer, last, variant)


@dataclasses.dataclass
class ParsedResponse:
  """Stages found in a generated text, the answer, and what was wrong with the text (empty if nothing)."""
  stages: dict[str, str]
  answer: str | None
  problems: list[str]


ANSWER_PATTERN = re.compile(r"answer\s+(\S+?)\.?\s*$")
TAG_PATTERN = re.compile(r"<(/?)(" + "|".join(STAGES) + r")>")


def parse_response(text: str) -> ParsedResponse:
  """Read a (possibly malformed) generated response back into stages and an answer. Never raises.

  A stage runs from its opening tag to its closing tag, or, when that is missing, to the next opening tag or
  the end of the text. The answer is read from the CONCLUSION (or from the whole text, if it has no tags).
  """
  stages, problems = {}, []
  tags = list(TAG_PATTERN.finditer(text))
  for i, tag in enumerate(tags):
    closing, name = tag.group(1) == "/", tag.group(2)
    if closing:
      if i == 0 or tags[i - 1].group(2) != name or tags[i - 1].group(1):
        problems.append(f"</{name}> at character {tag.start()} closes no open <{name}>")
      continue
    if name in stages:
      problems.append(f"<{name}> appears more than once; the first is kept")
      continue
    following = tags[i + 1] if i + 1 < len(tags) else None
    if following is None or following.group(2) != name or not following.group(1):
      problems.append(f"<{name}> is not closed")
    stages[name] = text[tag.end():following.start() if following else len(text)].strip()
  if tags:
    order = [name for name in STAGES if name in stages]
    found = [t.group(2) for t in tags if not t.group(1) and t.group(2) in stages]
    if list(dict.fromkeys(found)) != order:
      problems.append(f"stages out of order: {list(dict.fromkeys(found))}")
    problems.extend(f"<{name}> is missing" for name in STAGES if name not in stages)
  source = stages.get("CONCLUSION", text if not tags else "")
  match = ANSWER_PATTERN.search(source.strip())
  if match is None:
    problems.append("no 'answer ...' at the end of the conclusion")
  return ParsedResponse(stages, match.group(1) if match else None, problems)
