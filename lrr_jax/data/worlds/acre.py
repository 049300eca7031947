"""Seeded ACRE-style trials (Zhang et al., CVPR 2021): which objects are blickets?

A problem shows 6 context panels: objects on a "blicket machine" whose light is on exactly when at least one
object on it is a blicket (the disjunctive rule). Queries show a new panel and ask: on, off, or undetermined?
Contexts are built from evidence patterns; objects and queries are typed as ACRE's generator types them:
- direct: seen alone on a lit machine, or only ever on an unlit one;
- indirect: the one object of a lit panel that is not known to be a non-blicket (AB on + B off => A);
- screen_off: a non-blicket seen both on an unlit machine and beside a blicket on a lit one;
- potential (backward blocking): never shown either way (AB on + A on => B undetermined).
Labels follow ACRE: 0 off, 1 undetermined, 2 on. Splits: `iid`; `compositional` (train and test use disjoint
shape-colour combinations); `systematic` (train contexts light the machine in 3 panels, test in 4 or 5).
The rationale (last section) captions each panel (its objects and whether the machine is on), derives each object's
status by the disjunctive rule and judges the query panel, re-identifying its objects in the context panels they
were seen in; the release builder writes it for the released problems too.
"""
import dataclasses

import numpy as np

from lrr_jax.data import rationales

SHAPES = ("cube", "sphere", "cylinder")
MATERIALS = ("rubber", "metal")
COLORS = {"gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
          "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51)}
COLOR_NAMES = tuple(COLORS)
ANSWERS = ("off", "undetermined", "on")  # index = ACRE's label
QUERY_TYPES = ("direct", "indirect", "screen_off", "potential")
SPLITS = ("iid", "compositional", "systematic")
NUM_CONTEXT = 6
# Evidence patterns over local object names; each panel is (objects on the machine, light on?).
PATTERNS = {
    "one_cause": [("A", True), ("B", False), ("AB", True)],  # A direct blicket, B screen-off
    "indirect_on": [("CD", True), ("D", False)],  # C indirect blicket, D screen-off
    "indirect_off": [("EF", False)],  # E, F direct non-blickets
    "backward_blocking": [("GH", True), ("G", True)],  # G direct blicket, H potential
}
# Pattern combinations filling the 6 context panels, each giving every query type; lit panels in comments.
CONTEXTS = [("indirect_on", "backward_blocking", "indirect_off", "indirect_off"),  # 3 on
            ("indirect_on", "backward_blocking", "indirect_on"),  # 4 on
            ("indirect_on", "backward_blocking", "backward_blocking")]  # 5 on


def classify(context: list[tuple[tuple[int, ...], bool]]) -> dict[int, tuple[str, int]]:
  """Each context object's ACRE query type and label (0 off, 1 undetermined, 2 on), by ACRE's rules."""
  on = [set(ids) for ids, light in context if light]
  off = [set(ids) for ids, light in context if not light]
  non_blickets = set().union(*off)
  blickets = {next(iter(ids - non_blickets)) for ids in on if len(ids - non_blickets) == 1}
  on_objects = set().union(*on)
  direct = {next(iter(ids)) for ids in on if len(ids) == 1} | (non_blickets - on_objects)
  types = {}
  for obj in set().union(*on, *off):
    label = 0 if obj in non_blickets else 2 if obj in blickets else 1
    kind = ("direct" if obj in direct else "screen_off" if obj in non_blickets else
            "indirect" if obj in blickets else "potential")
    types[obj] = (kind, label)
  return types


@dataclasses.dataclass(frozen=True)
class AcreConfig:
  resolution: int = 32
  split: str = "iid"

  def __post_init__(self):
    if self.split not in SPLITS:
      raise ValueError(f"AcreConfig.split={self.split!r}; expected one of {SPLITS}.")


@dataclasses.dataclass
class AcreProblem:
  """One problem: objects, 6 context panels, 4 queries (one per type), and their rendered panels."""
  names: list[str]  # how the rationale calls each object
  objects: list[tuple[int, int, int]]  # (shape, material, colour) indices
  blickets: list[bool]  # the true (hidden) status; queries may still be undetermined from the context
  context: list[tuple[tuple[int, ...], bool]]  # (object indices on the machine, light on)
  queries: list[tuple[tuple[int, ...], str, str]]  # (object indices, query type, answer)
  context_frames: np.ndarray  # uint8[6, H, W, 3]
  query_frames: np.ndarray  # uint8[4, H, W, 3]


def object_name(obj: tuple[int, int, int]) -> str:
  shape, material, color = obj
  return f"{COLOR_NAMES[color]} {MATERIALS[material]} {SHAPES[shape]}"


def _allowed_objects(split: str, train: bool) -> list[tuple[int, int, int]]:
  combos = [(s, m, c) for s in range(len(SHAPES)) for m in range(len(MATERIALS)) for c in range(len(COLORS))]
  if split != "compositional":
    return combos
  return [o for o in combos if ((o[0] + o[2]) % 3 != 0) == train]  # hold out a third of shape-colours


def _contexts(split: str, train: bool) -> list[tuple[str, ...]]:
  if split != "systematic":
    return CONTEXTS
  lit = lambda combo: sum(light for name in combo for _, light in PATTERNS[name])
  return [c for c in CONTEXTS if (lit(c) <= 3) == train]


def sample_problem(config: AcreConfig, rng: np.random.Generator, train: bool) -> AcreProblem:
  """Context from a pattern combination; one single-object query of each type."""
  contexts = _contexts(config.split, train)
  combo = contexts[rng.integers(len(contexts))]
  pool = _allowed_objects(config.split, train)
  names = [(i, c) for i, name in enumerate(combo) for c in sorted({c for p, _ in PATTERNS[name] for c in p})]
  objects = [pool[j] for j in rng.choice(len(pool), len(names), replace=False)]
  index = {key: k for k, key in enumerate(names)}
  context = [(tuple(index[(i, c)] for c in panel), light) for i, name in enumerate(combo)
             for panel, light in PATTERNS[name]]
  context = [context[j] for j in rng.permutation(len(context))]
  types = classify(context)
  queries = []
  for kind in QUERY_TYPES:
    obj = int(rng.choice(sorted(k for k, (t, _) in types.items() if t == kind)))
    queries.append(((obj,), kind, ANSWERS[types[obj][1]]))
  blickets = [types[k][1] == 2 or (types[k][1] == 1 and bool(rng.random() < 0.5)) for k in range(len(objects))]
  return AcreProblem([object_name(o) for o in objects], objects, blickets, context, queries,
                     *render_problem(config, objects, context, queries))


def _panel(resolution: int, objects: list[tuple[int, int, int]], light: bool | None) -> np.ndarray:
  """One panel: the machine (a box) with up to 3 objects on it and its light; light None: a query panel."""
  r = resolution
  ys, xs = np.mgrid[0:r, 0:r] + 0.5
  image = np.empty((r, r, 3), np.float32)
  image[:] = (215, 215, 215)
  machine = (ys > 0.62 * r) & (ys < 0.9 * r) & (xs > 0.08 * r) & (xs < 0.92 * r)
  image[machine] = (120, 120, 140)
  lamp = (ys - 0.14 * r) ** 2 + (xs - 0.85 * r) ** 2 < (0.09 * r) ** 2
  image[lamp] = {True: (255, 230, 40), False: (40, 40, 40), None: (160, 160, 220)}[light]
  size = 0.12 * r
  for slot, (shape, material, color) in enumerate(objects):
    cx, cy = (0.25 + 0.25 * slot) * r, 0.62 * r - size
    dx, dy = xs - cx, ys - cy
    mask = {0: (np.abs(dx) < size) & (np.abs(dy) < size), 1: dx ** 2 + dy ** 2 < size ** 2,
            2: (np.abs(dx) < 0.7 * size) & (np.abs(dy) < size)}[shape]
    image[mask] = COLORS[COLOR_NAMES[color]]
    if material == 1:  # metal: a specular highlight
      image[mask & ((dx + 0.4 * size) ** 2 + (dy + 0.4 * size) ** 2 < (0.3 * size) ** 2)] = (250, 250, 250)
  return image.astype(np.uint8)


def render_problem(config: AcreConfig, objects, context, queries) -> tuple[np.ndarray, np.ndarray]:
  """uint8[6, H, W, 3] context panels and uint8[4, H, W, 3] query panels (light unknown)."""
  draw = lambda ids, light: _panel(config.resolution, [objects[k] for k in ids], light)
  return (np.stack([draw(ids, light) for ids, light in context]),
          np.stack([draw(ids, None) for ids, _, _ in queries]))


def generate(config: AcreConfig, num_problems: int, seed: int, train: bool = True) -> list[AcreProblem]:
  """`num_problems` problems of the config's split (its train or test side); same seed, same bytes."""
  rng = np.random.default_rng([seed, int(train)])
  return [sample_problem(config, rng, train) for _ in range(num_problems)]


def blicket_statuses(problem: AcreProblem) -> dict[int, tuple[bool | None, str]]:
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


def rule_answer(problem: AcreProblem, query_ids: tuple[int, ...]) -> str:
  """The disjunctive rule's answer, as ACRE labels it (a lit panel's undetermined objects together: on)."""
  status = blicket_statuses(problem)
  known = [status.get(k, (None, ""))[0] for k in query_ids]
  lit_sets = [{k for k in ids if status[k][0] is not False} for ids, light in problem.context if light]
  if True in known or any(rest and rest <= set(query_ids) for rest in lit_sets):
    return "on"
  return "off" if all(v is False for v in known) else "undetermined"


def rationale_example(problem: AcreProblem, query: int, variant: str = "full") -> rationales.Example:
  """Context panels are frames 0-5, the query panel frame 6: is the light on, off, or undetermined?"""
  query_ids, _, answer = problem.queries[query]
  last = NUM_CONTEXT
  names = lambda ids: ", ".join(problem.names[k] for k in ids)
  question = [rationales.question_segment("Is the machine's light on in the last panel?", last, variant)]
  summary = [rationales.Segment("Find the blickets from the context panels, then judge the last panel.", 0)]
  if variant == "no_surrogate":
    caption = [rationales.Segment("There are six context panels and a query panel.", 0)]
    reasoning = [rationales.Segment("The light turns on when a blicket is on the machine.", 0)]
  else:
    caption = [rationales.frame_segment(i, f"<detect> {names(ids)}; light {'on' if light else 'off'}. ")
               for i, (ids, light) in enumerate(problem.context)]
    status = blicket_statuses(problem)
    reasoning = [rationales.Segment(f"{problem.names[k]}: {status[k][1]}. ", last - 1) for k in sorted(status)]
    # re-identification: each query object with the context panels it was seen in
    seen = [(problem.names[k], [i for i, (ids, _) in enumerate(problem.context) if k in ids]) for k in query_ids]
    reid = rationales.reid_text([(name, panels) for name, panels in seen if panels])
    reasoning.append(rationales.frame_segment(last, f"<detect> {names(query_ids)}. {reid}"))
  return rationales.staged_example(question, summary, caption, reasoning, f"The light is {answer}.", answer, last,
                                   variant)
