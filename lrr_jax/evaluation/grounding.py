"""Grounding: does the model look? Each surrogate-task fact a response states, scored against the record's own
true rationale, and the final answer split by case.

Facts are read from the text after each `frame t:` marker (to the next marker or stage tag; the first statement
of a frame is kept), before `<CONCLUSION>` (the whole text when it has none); the final answer's correctness is
the evaluator's (`rationales.parse_response`). Every reference fact is scored; one the response leaves out counts
as wrong. Nothing here raises on malformed model text. Scores (`grounding/...`, shares of the reference's facts,
pooled over records):
- CATER (generated and released): `frame_fact_acc`, the headline, the share of frame facts (frames 0..T-1) whose
  snitch cell is right (frame 0: the snitch's detection; a hidden snitch: its cone's cell); `frame<t>_acc` the same
  per frame; `detect_cell_acc` every object of the detections at its cell; `track_cell_acc` the frames where the
  snitch is tracked (not covered): `<track> snitch r,c`; `reid_acc` the frames where it is covered: the cone named
  and at its cell; and the final answer by case, `top1/{visible,occluded,contained}_at_end` and
  `top1/{moved,never_moved}` (from the record's full rationale).
- ACRE: `frame_fact_acc` panels whose objects and light are all right; `detect_acc` objects named in their panel;
  `light_acc` the context panels' lights; `status_acc` the blicket statuses of the reasoning (the answer by query
  type is the evaluator's `query_type/*`).
- Something-Else and STAR: `detect_{cell,box}_acc` (box: IoU >= 0.5) or `detect_acc` (names only), per object;
  `frame_fact_acc` frames whose detections are all right; Something-Else's `track_{cell,box}_acc`, both ends right.
- ACRE, Something-Else and STAR: `reid_acc`, per object the reference re-identifies at frame t (`<reid> cup as in
  frames 0, 2`: ACRE's query objects, the others' objects seen again), right when frame t's fact names the same
  earlier frames for it (`frame_fact_acc` leaves these out).
- Every dataset: `stated`, `missing`, `malformed` (a frame fact the response states readably, leaves out, or states
  unreadably), shares of `num_facts`, the reference's frame facts.
Per record (`eval_examples.jsonl`): the record's own shares (NaN-free: a score whose facts a record lacks is left
out of its line); their mean is the pooled score when every record has as many such facts (frame facts: CATER, ACRE).
"""
import collections
import dataclasses
import re
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from lrr_jax.data import boxes as boxes_lib
from lrr_jax.data import rationales

PREFIX = "grounding/"
MARKER = re.compile(r"frame (\d{1,6}):")  # numbers bounded: int() of any text never raises
CELL = re.compile(r"^(\d{1,6}),(\d{1,6})$")
BOX = re.compile(r"^\((\d{1,6}),(\d{1,6}),(\d{1,6}),(\d{1,6})\)$")
PLACE = re.compile(r"^(.*?)\s*(\d+,\d+|\(\d+,\d+,\d+,\d+\))$")
REID_ITEM = re.compile(r"^(.+?) as in frames ((?:\d{1,6}, )*\d{1,6})$")  # ACRE, Something-Else, STAR
STATUS = re.compile(r"([^.:;<>]+?): (not a blicket|blicket|undetermined)\b")
IOU_THRESHOLD = 0.5
CATER_DATASETS = ("generated_cater", "cater")
Place = tuple[int, ...] | None  # a cell (row, col), a quantised box (x1, y1, x2, y2), or none (names only)


def fact_body(text: str) -> str:
  """The text whose facts count: all of it before `<CONCLUSION>` (stated outside a stage's tags too), or all of
  it without one (the `no_tags` variant)."""
  cut = text.find("<CONCLUSION>")
  return text if cut < 0 else text[:cut]


def frame_texts(text: str) -> dict[int, str]:
  """Frame -> the text after its first `frame t:` marker, up to the next marker or stage tag, stripped."""
  body = rationales.TAG_PATTERN.sub("\x00", fact_body(text))
  found: dict[int, str] = {}
  markers = list(MARKER.finditer(body))
  for i, marker in enumerate(markers):
    end = markers[i + 1].start() if i + 1 < len(markers) else len(body)
    found.setdefault(int(marker.group(1)), body[marker.end():end].split("\x00")[0].strip())
  return found


def parse_place(text: str) -> Place:
  """'r,c' -> (r, c); '(x1,y1,x2,y2)' -> the box; anything else None."""
  match = CELL.match(text) or BOX.match(text)
  return tuple(int(g) for g in match.groups()) if match else None


def same_place(stated: Place, true: Place) -> bool:
  """Cells: equal; boxes: IoU >= 0.5; names only (true None): always."""
  if true is None:
    return True
  if stated is None or len(stated) != len(true):
    return False
  return stated == true if len(true) == 2 else boxes_lib.iou(stated, true) >= IOU_THRESHOLD  # type: ignore


def detections(text: str, names_only: bool = False) -> list[tuple[str, Place]] | None:
  """The `<detect> a 1,2; b (1,2,3,4).` items as (name, place), names only: `<detect> a, b. ...`; an item without
  a readable place (where places are expected) is left out. None if the text has no `<detect>`, or items but none
  readable."""
  _, found, rest = text.partition("<detect>")
  if not found:
    return None
  rest = rest.strip()
  if names_only:  # STAR: 'a, b. relations. action: ...'; ACRE: 'a, b; light on.'
    names = rest.split(".")[0].split(";")[0]
    return [(n.strip(), None) for n in names.split(",") if n.strip() and n.strip() != "nothing"]
  written = [item.strip() for item in rest.split(".")[0].split(";")]  # a box holds no '.' and no ';'
  written = [item for item in written if item and item != "nothing"]
  matches = [m for m in map(PLACE.match, written) if m is not None and parse_place(m.group(2)) is not None]
  if written and not matches:
    return None
  return [(m.group(1).strip(), parse_place(m.group(2))) for m in matches]


def match_items(stated: list[tuple[str, Place]], true: list[tuple[str, Place]]) -> int:
  """How many true items the stated ones match: the k-th of a name against the k-th stated of that name."""
  by_name = collections.defaultdict(list)
  for name, place in stated:
    by_name[name].append(place)
  seen: collections.Counter = collections.Counter()
  right = 0
  for name, place in true:
    k = seen[name]
    seen[name] += 1
    right += k < len(by_name[name]) and same_place(by_name[name][k], place)
  return right


@dataclasses.dataclass
class Tally:
  """Per record, by score name: [right, out of]."""
  counts: dict[str, list[int]] = dataclasses.field(default_factory=lambda: collections.defaultdict(lambda: [0, 0]))

  def add(self, name: str, right: int | bool, total: int = 1) -> None:
    self.counts[name][0] += int(right)
    self.counts[name][1] += total


def frame_status(tally: Tally, stated_text: str | None, readable: bool) -> None:
  """Count a reference frame fact as stated, missing or malformed."""
  tally.add("stated", stated_text is not None and readable)
  tally.add("missing", stated_text is None)
  tally.add("malformed", stated_text is not None and not readable)


def paired_facts(tally: Tally, response: str, reference: str,
                 parse: Callable[[str], Any]) -> Iterator[tuple[int, Any, Any, str | None]]:
  """(frame, true fact, stated fact or None, stated text or None) for each frame fact of `reference` that
  `parse` reads (None: unreadable), each counted in `tally` as stated, missing or malformed."""
  stated = frame_texts(response)
  for t, true_text in sorted(frame_texts(reference).items()):
    true = parse(true_text)
    if true is None:
      continue
    said = parse(stated[t]) if t in stated else None
    frame_status(tally, stated.get(t), said is not None)
    yield t, true, said, stated.get(t)


def add_frame_fact(tally: Tally, t: int, right: bool) -> None:
  """A whole frame fact, right or not: overall and for frame t."""
  tally.add("frame_fact_acc", right)
  tally.add(f"frame{t}_acc", right)


# CATER: the snitch's cell per frame.

@dataclasses.dataclass(frozen=True)
class SnitchFact:
  kind: str  # detect | track | reid
  cell: tuple[int, ...] | None  # the snitch's (detect, track) or its cone's (reid)
  occluded: bool = False
  cone: str = ""
  items: tuple = ()  # detect: every (name, cell)


TRACK = re.compile(r"<track> snitch (\d+,\d+)( occluded)?")
REID = re.compile(r"<reid> (.+?) (\d+,\d+) covers it")


def snitch_fact(text: str) -> SnitchFact | None:
  """A CATER frame fact read back; None when it holds no readable cell."""
  if "<detect>" in text:
    items = detections(text)
    cells = [place for name, place in items or [] if name == "snitch"]
    return SnitchFact("detect", cells[0], items=tuple(items)) if cells else None
  if (reid := REID.search(text)) is not None and parse_place(reid.group(2)):
    return SnitchFact("reid", parse_place(reid.group(2)), cone=reid.group(1).strip())
  if (track := TRACK.search(text)) is not None and parse_place(track.group(1)):
    return SnitchFact("track", parse_place(track.group(1)), occluded=bool(track.group(2)))
  return None


def cater_cases(reference: str) -> dict[str, str]:
  """The record's case from its true rationale: where the snitch is at the end, and whether it ever moves."""
  facts = {t: snitch_fact(text) for t, text in frame_texts(reference).items()}
  facts = {t: f for t, f in facts.items() if f is not None}
  if not facts:
    return {}
  last = facts[max(facts)]
  end = "contained" if last.kind == "reid" else "occluded" if last.occluded else "visible"
  moved = len({f.cell for f in facts.values()}) > 1
  return {"snitch_at_end": end, "snitch_moved": "moved" if moved else "never_moved"}


def cater_tally(response: str, reference: str) -> Tally:
  tally = Tally()
  for t, true, said, stated_text in paired_facts(tally, response, reference, snitch_fact):
    right = said is not None and said.cell == true.cell
    add_frame_fact(tally, t, right)
    if true.kind == "detect":  # every object, even where the snitch's own cell is unreadable
      items = detections(stated_text) if stated_text is not None else None
      tally.add("detect_cell_acc", match_items(items or [], list(true.items)), len(true.items))
    elif true.kind == "track":
      tally.add("track_cell_acc", right and said.kind == "track")
    else:
      tally.add("reid_acc", right and said.kind == "reid" and said.cone == true.cone)
  return tally


# ACRE: the panels' objects and lights, and the statuses the reasoning derives.

def panel(text: str) -> tuple[list[tuple[str, Place]], str | None] | None:
  """An ACRE panel's (objects, light 'on'/'off' or None) from `<detect> a, b; light on.`; None if unreadable."""
  objects = detections(text, names_only=True)
  if objects is None:
    return None
  light = re.search(r"; light (on|off)\b", text)
  return objects, light.group(1) if light else None


def statuses(text: str) -> dict[str, str]:
  """Object name -> 'blicket' | 'not a blicket' | 'undetermined', as the reasoning states them (first kept)."""
  found: dict[str, str] = {}
  for match in STATUS.finditer(fact_body(text)):
    found.setdefault(match.group(1).strip(), match.group(2))
  return found


def acre_tally(response: str, reference: str) -> Tally:
  tally = Tally()
  for t, true, said, _ in paired_facts(tally, response, reference, panel):
    objects_right = match_items(said[0] if said else [], true[0])
    light_right = true[1] is None or (said is not None and said[1] == true[1])
    tally.add("detect_acc", objects_right, len(true[0]))
    if true[1] is not None:
      tally.add("light_acc", light_right)
    add_frame_fact(tally, t, said is not None and objects_right == len(true[0]) == len(said[0]) and light_right)
  said_status = statuses(response)
  for name, status in statuses(reference).items():
    tally.add("status_acc", said_status.get(name) == status)
  reid_tally(tally, response, reference)
  return tally


def reids(text: str) -> dict[str, tuple[int, ...]]:
  """`<reid> a as in frames 0, 2; b as in frames 1.` as {name: frames}, unreadable items left out."""
  _, found, rest = text.partition("<reid>")
  items = (REID_ITEM.match(item.strip()) for item in rest.split(".")[0].split(";")) if found else ()
  return {m.group(1): tuple(int(f) for f in m.group(2).split(", ")) for m in items if m is not None}


def reid_tally(tally: Tally, response: str, reference: str) -> None:
  """`reid_acc`: each object the reference re-identifies, right where the response's same frame agrees."""
  stated = frame_texts(response)
  for t, text in frame_texts(reference).items():
    said = reids(stated.get(t, ""))
    for name, frames in reids(text).items():
      tally.add("reid_acc", said.get(name) == frames)


# Something-Else and STAR: per-frame detections (cells, boxes or names), Something-Else's tracks.

def detection_tally(response: str, reference: str, names_only: bool) -> Tally:
  tally = Tally()
  for t, true, said, _ in paired_facts(tally, response, reference, lambda text: detections(text, names_only)):
    right = match_items(said or [], true)
    kind = "detect_acc" if names_only else "detect_box_acc" if any(
        p is not None and len(p) == 4 for _, p in true) else "detect_cell_acc"
    if true:
      tally.add(kind, right, len(true))
    add_frame_fact(tally, t, said is not None and right == len(true) == len(said))
  if not names_only:
    track_tally(tally, response, reference)
  reid_tally(tally, response, reference)
  return tally


def tracks(text: str) -> list[tuple[str, Place, Place]]:
  """Something-Else's `<track> cup 1,2 -> 3,4; hand ... .` as (name, first place, last place)."""
  _, found, rest = fact_body(text).partition("<track>")
  parsed = []
  for item in rest.split(".")[0].split(";") if found else []:
    first, arrow, last = item.partition("->")
    match = PLACE.match(first.strip())
    if arrow and match:
      parsed.append((match.group(1).strip(), parse_place(match.group(2)), parse_place(last.strip())))
  return parsed


def track_tally(tally: Tally, response: str, reference: str) -> None:
  said = {name: (a, b) for name, a, b in reversed(tracks(response))}  # first statement kept
  for name, first, last in tracks(reference):
    kind = "track_box_acc" if first is not None and len(first) == 4 else "track_cell_acc"
    got = said.get(name)
    tally.add(kind, got is not None and same_place(got[0], first) and same_place(got[1], last))


# Over records.

def record_tally(dataset: str, response: str, reference: str) -> Tally | None:
  """The record's tally (None: the dataset states no frame facts that this module reads)."""
  if dataset in CATER_DATASETS:
    return cater_tally(response, reference)
  if dataset in ("generated_acre", "acre"):
    return acre_tally(response, reference)
  if dataset in ("something_else", "star"):
    return detection_tally(response, reference, names_only=dataset == "star")
  return None


@dataclasses.dataclass
class Grounding:
  """Pooled scores (`grounding/...`, `top1/<case>`), per-record values (NaN where a record has no such facts)
  and per-record case groups (CATER's `snitch_at_end`, `snitch_moved`)."""
  scores: dict[str, float]
  per_record: dict[str, np.ndarray]
  groups: dict[str, list[str]]


def evaluate(dataset: str, responses: Sequence[str], references: Sequence[str],
             case_references: Sequence[str] = (), correct: np.ndarray | None = None) -> Grounding:
  """Grounding of `responses` against each record's true rationale `references` (the evaluated variant's: a
  variant without facts gives no fact scores), with the final answer's `correct` (0/1 per record) split by the
  cases of `case_references` (the records' full rationales; CATER only)."""
  tallies = [record_tally(dataset, r, ref) for r, ref in zip(responses, references)]
  names = sorted({name for t in tallies if t for name, (_, total) in t.counts.items() if total},
                 key=_score_order)
  scores, per_record = {}, {}
  for name in names:
    counts = np.array([t.counts[name] if t and name in t.counts else (0, 0) for t in tallies], np.float64)
    scores[PREFIX + name] = float(counts[:, 0].sum() / counts[:, 1].sum())
    per_record[PREFIX + name] = np.where(counts[:, 1] > 0, counts[:, 0] / np.maximum(counts[:, 1], 1), np.nan)
  if "stated" in names:
    scores[PREFIX + "num_facts"] = float(sum(t.counts["stated"][1] for t in tallies if t))
  groups = case_groups(dataset, case_references)
  if correct is not None and groups:
    scores.update(case_scores(groups, np.asarray(correct)))
  return Grounding(scores, per_record, groups)


def _score_order(name: str) -> tuple:
  """The headline first, then the per-task scores, the per-frame ones by frame, the counts last."""
  frame = re.fullmatch(r"frame(\d+)_acc", name)
  if name == "frame_fact_acc":
    return (0, 0, name)
  if frame:
    return (2, int(frame.group(1)), name)
  return (3 if name in ("stated", "missing", "malformed") else 1, 0, name)


def case_groups(dataset: str, case_references: Sequence[str]) -> dict[str, list[str]]:
  """{case key: each record's case} (CATER: `snitch_at_end`, `snitch_moved`; 'unknown' without facts)."""
  if dataset not in CATER_DATASETS or not case_references:
    return {}
  cases = [cater_cases(reference) for reference in case_references]
  if not any(cases):
    return {}
  return {key: [c.get(key, "unknown") for c in cases] for key in ("snitch_at_end", "snitch_moved")}


CASE_NAMES = {"contained": "contained_at_end", "occluded": "occluded_at_end", "visible": "visible_at_end",
              "moved": "moved", "never_moved": "never_moved"}


def case_scores(groups: dict[str, list[str]], correct: np.ndarray) -> dict[str, float]:
  """`top1/<case>`: the answer's accuracy over each case's records, and `count/<case>` their number."""
  scores = {}
  for of_record in groups.values():
    for value, name in CASE_NAMES.items():
      chosen = np.array([v == value for v in of_record])
      if chosen.any():
        scores[f"top1/{name}"] = float(correct[chosen].mean())
        scores[f"count/{name}"] = float(chosen.sum())
  return scores

