"""The rationale format every dataset writes (LLaVA-o1's four stages, LRR's surrogate tasks), and its parser.

A rationale is a list of `Segment`s, each carrying the index of the frame it speaks about, so that the model's
frame-visibility mask lets a token about frame t see frames <= t only. Text about frame t starts with the
marker `frame t:` (one token, see `tokenizer.py`), so generation can follow the same rule: a token sees the
frames up to the last marker before it, and every frame from `<CONCLUSION>` on. Surrogate tasks in language:
detection (`<detect>`: objects and their grid cells), re-identification (`<reid>`: which object is which
across frames: CATER's cone that now covers the snitch; elsewhere an object seen again, with the earlier frames
it was seen in, `reid_text`) and tracking (`<track>`: CATER's snitch cell, or its container's, frame by frame;
Something-Else's objects from their first place to their last).

Variants (for the ablations): `full`; `no_tags` (the same text without stage tags); `no_surrogate` (the stages
without surrogate tasks); `direct` (the answer only).

This module knows no dataset: each world (`worlds/cater.py`, `worlds/acre.py`) and release builder writes its
own question and stages with `question_segment`, `frame_segment` and `staged_example`.
"""
import dataclasses
import re

STAGES = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")
VARIANTS = ("full", "no_tags", "no_surrogate", "direct")


@dataclasses.dataclass(frozen=True)
class Segment:
  text: str
  frame_index: int  # last frame this text may see; -1: none
  in_loss: bool = True  # in a response: False for a prompt inside it (a surrogate request, `surrogate.py`)


@dataclasses.dataclass
class Example:
  """A question (no loss) and its response (loss on rationale and answer, but segments marked `in_loss=False`),
  as frame-indexed text."""
  question: list[Segment]
  response: list[Segment]
  answer: str

  @property
  def response_text(self) -> str:
    return "".join(s.text for s in self.response)


def question_segment(text: str, last_frame: int, variant: str) -> Segment:
  """The question. Answering directly, the model has watched the whole video; with a rationale it looks step
  by step, from frame 0."""
  return Segment(text, last_frame if variant == "direct" else 0)


def frame_segment(frame: int, text: str) -> Segment:
  """Text about `frame`, led by its marker `frame <frame>: ` and seeing frames up to it."""
  return Segment(f"frame {frame}: {text}", frame)


def reid_text(seen_before: list[tuple[str, list[int]]]) -> str:
  """An object seen again, with the earlier frames it was seen in: `<reid> cup as in frames 0, 2. ` for
  [('cup', [0, 2])] (items joined by '; '); '' for none."""
  items = "; ".join(f"{name} as in frames {', '.join(map(str, frames))}" for name, frames in seen_before)
  return f"<reid> {items}. " if items else ""


def reappearances(names_per_frame: list[list[str]]) -> list[list[tuple[str, list[int]]]]:
  """Per frame, the objects (by name, each once) seen again after at least one frame without them: each with
  the earlier frames it was seen in. An object in consecutive frames is tracked, not re-identified."""
  seen: dict[str, list[int]] = {}
  result = []
  for t, names in enumerate(names_per_frame):
    present = list(dict.fromkeys(names))
    result.append([(n, list(seen[n])) for n in present if n in seen and seen[n][-1] < t - 1])
    for n in present:
      seen.setdefault(n, []).append(t)
  return result


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
