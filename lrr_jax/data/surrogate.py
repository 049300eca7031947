"""LRR's surrogate tasks prompted: a request (detect / re-identify / track at frame t) inserted into a rationale.

LRR asks for its surrogate tasks at random points of training (probability 0.3, `data.surrogate_prompt_prob`)
so that they can be asked for at inference. Here the facts come from the rationale itself: every segment about
frame t (led by its marker `frame t:`) that holds a surrogate marker (`<detect>`, `<reid>`, `<track>`) answers
the request for that task at frame t, e.g. for CATER

  request (prompt, no loss):  `<track> at frame 5? ` then the marker `frame 5:`
  answer (in the loss):       ` <track> snitch 2,3. `  (the rationale's own text about frame 5)

inserted before a segment that opens with a stage tag or a frame marker (never after `<CONCLUSION>`), so that
what follows the answer is always one token that generation stops on (`stop_tokens`). Frame indices follow
generation's rule: the request sees what the text before it saw, the marker opens frame t, and the text after
the answer sees frame t until the next marker or `<CONCLUSION>`. Variants without surrogate text
(`no_surrogate`, `direct`) have no facts, so nothing is inserted: the ablations stay what they were.
"""
import dataclasses
import re

import numpy as np

from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib

TASKS = ("detect", "reid", "track")
_FACT = re.compile(r"^frame (\d+):(.*)$", re.DOTALL)
_STAGE_TAG = re.compile(r"^</?(" + "|".join(rationales.STAGES) + r")>")
# How a user may name a task on the command line (`infer --surrogate="track snitch at frame 5"`).
_TASK_WORDS = {"detect": "detect", "detection": "detect", "reid": "reid", "re-identify": "reid",
               "reidentify": "reid", "re-identification": "reid", "track": "track", "tracking": "track"}
# '<task> [words] <frame>[?]': words of letters only (no numbers but the frame), the frame a whole number.
_REQUEST = re.compile(r"^\s*([a-z-]+)((?:\s+[a-z][a-z'-]*)*)\s+(\d+)\s*\??\s*$", re.IGNORECASE)
REQUEST_GRAMMAR = ("'<task> [words] <frame>[?]': task one of {tasks}, then optional words of letters only "
                   "(e.g. 'snitch at frame'), then the frame as a whole number 0-{last}; no other numbers")


@dataclasses.dataclass(frozen=True)
class Fact:
  """What the rationale says about `frame` for `task`: `answer` is its text after the frame marker."""
  task: str
  frame: int
  answer: str


def facts(example: rationales.Example) -> list[Fact]:
  """Every (task, frame) the response answers, first statement kept, in the order they appear."""
  found: dict[tuple[str, int], Fact] = {}
  for segment in example.response:
    match = _FACT.match(segment.text)
    if match is None:
      continue
    for task in TASKS:
      if f"<{task}>" in match.group(2):
        found.setdefault((task, int(match.group(1))), Fact(task, int(match.group(1)), match.group(2)))
  return list(found.values())


def request_text(task: str, frame: int) -> str:
  """The request for `task` at `frame`, as inserted (before its frame marker)."""
  if task not in TASKS:
    raise ValueError(f"Unknown surrogate task {task!r}; expected one of {TASKS}.")
  return f"<{task}> at frame {frame}? "


def request_segments(task: str, frame: int, previous_frame: int) -> list[rationales.Segment]:
  """The request's prompt segments: the question (seeing `previous_frame`, as the text before it) and the
  marker that opens `frame`. Not in the loss."""
  if not 0 <= frame < tokenizer_lib.MAX_FRAMES:
    raise ValueError(f"Surrogate request at frame {frame}: frames run from 0 to {tokenizer_lib.MAX_FRAMES - 1} "
                     "(the `frame t:` markers).")
  return [rationales.Segment(request_text(task, frame), previous_frame, in_loss=False),
          rationales.Segment(f"frame {frame}:", frame, in_loss=False)]


def parse_request(text: str) -> tuple[str, int]:
  """(task, frame) from a user's request such as 'track snitch at frame 5', 'detect 0', 'reid at frame 3?'.
  Parsed strictly (`REQUEST_GRAMMAR`): 'track -1', 'track 5.5' or 'track 3 and 5' are refused, not read as
  another frame."""
  match = _REQUEST.match(text)
  task = _TASK_WORDS.get(match.group(1).lower()) if match else None
  if task is None or int(match.group(3)) >= tokenizer_lib.MAX_FRAMES:
    grammar = REQUEST_GRAMMAR.format(tasks=sorted(_TASK_WORDS), last=tokenizer_lib.MAX_FRAMES - 1)
    raise ValueError(f"Surrogate request {text!r:.200}: expected {grammar}; e.g. 'track snitch at frame 5'.")
  return task, int(match.group(3))


def insertion_points(response: list[rationales.Segment]) -> list[int]:
  """Indices i where a request may go before response[i]: a segment opening with a stage tag or a frame
  marker, at or before `<CONCLUSION>` (the answer stays the end of the text)."""
  points = []
  for i, segment in enumerate(response):
    if _STAGE_TAG.match(segment.text) or _FACT.match(segment.text):
      points.append(i)
    if segment.text == "<CONCLUSION>":
      break
  return points


def insert(example: rationales.Example, fact: Fact, point: int) -> rationales.Example:
  """`example` with the request for `fact` and its answer inserted before response[point]."""
  response = list(example.response)
  previous = response[point - 1].frame_index if point else example.question[-1].frame_index
  inserted = request_segments(fact.task, fact.frame, previous) + [rationales.Segment(fact.answer, fact.frame)]
  after = response[point:]
  for k, segment in enumerate(after):  # generation's rule: frame t until the next marker or <CONCLUSION>
    if _FACT.match(segment.text) or segment.text == "<CONCLUSION>":
      break
    after[k] = dataclasses.replace(segment, frame_index=fact.frame)
  return rationales.Example(example.question, response[:point] + inserted + after, example.answer)


def maybe_prompt(example: rationales.Example, probability: float, rng: np.random.Generator
                 ) -> tuple[rationales.Example, Fact | None]:
  """With `probability`, `example` with a random request inserted at a random point (a task drawn uniformly
  among those its rationale answers, then one of its frames); else `example` unchanged. Also the fact asked."""
  if probability <= 0 or rng.random() >= probability:
    return example, None
  known, points = facts(example), insertion_points(example.response)
  if not known or not points:
    return example, None
  tasks = sorted({f.task for f in known}, key=TASKS.index)
  task = tasks[rng.integers(len(tasks))]
  of_task = [f for f in known if f.task == task]
  fact = of_task[rng.integers(len(of_task))]
  return insert(example, fact, points[rng.integers(len(points))]), fact


def stop_tokens(tokenizer: tokenizer_lib.Tokenizer) -> list[int]:
  """Tokens that end an answer at inference: stage tags, frame markers and `</s>` (what training puts after it)."""
  tags = [tokenizer.token_id(tag) for tag in tokenizer_lib.TAGS if tag.strip("</>") in rationales.STAGES]
  return sorted({t for t in tags if t is not None} | set(tokenizer.frame_markers()) | {tokenizer.eos_id})
