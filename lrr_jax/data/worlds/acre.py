"""Seeded ACRE-style trials (Zhang et al., CVPR 2021): which objects are blickets?

A problem shows 6 context panels: objects on a "blicket machine" whose light is on exactly when at least one
object on it is a blicket (the disjunctive rule). Queries show new panels and ask: on, off, or undetermined?
Contexts are built from ACRE's evidence patterns, and queries of its four types are drawn from them:
- direct: an object seen alone on the machine;
- indirect: an object whose status follows from several panels (AB on + B off => A is a blicket);
- screened-off: a known blicket with an undetermined object: on, whatever the other is;
- backward-blocking: AB on + A on => B undetermined.
Splits: `iid`; `compositional` (train and test use disjoint shape-colour combinations); `systematic` (train
contexts light the machine in at most 3 panels, test contexts in at least 4).
"""
import dataclasses

import numpy as np

SHAPES = ("cube", "sphere", "cylinder")
MATERIALS = ("rubber", "metal")
COLORS = {"gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
          "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51)}
COLOR_NAMES = tuple(COLORS)
ANSWERS = ("on", "off", "undetermined")
QUERY_TYPES = ("direct", "indirect", "screened_off", "backward_blocking")
SPLITS = ("iid", "compositional", "systematic")
NUM_CONTEXT = 6
# Evidence patterns over local object names; each panel is (objects on the machine, light on?).
PATTERNS = {
    "one_cause": [("A", True), ("B", False), ("AB", True)],  # A blicket, B not (both direct)
    "indirect_on": [("CD", True), ("D", False)],  # C blicket (indirect), D not (direct)
    "indirect_off": [("EF", False)],  # E, F not blickets (indirect)
    "backward_blocking": [("GH", True), ("G", True)],  # G blicket (direct), H undetermined
}
# Pattern combinations filling the 6 context panels (each has a backward-blocking pattern, so that every
# query type can be asked), with the number of panels that light up.
CONTEXTS = [("one_cause", "backward_blocking", "indirect_off"),  # 4 on
            ("indirect_on", "backward_blocking", "indirect_on"),  # 4 on
            ("backward_blocking", "backward_blocking", "indirect_on"),  # 5 on
            ("indirect_on", "backward_blocking", "indirect_off", "indirect_off"),  # 3 on
            ("backward_blocking", "indirect_off", "indirect_off", "indirect_off", "indirect_off")]  # 2 on


@dataclasses.dataclass(frozen=True)
class AcreConfig:
  resolution: int = 32
  split: str = "iid"

  def __post_init__(self):
    if self.split not in SPLITS:
      raise ValueError(f"AcreConfig.split={self.split!r}; expected one of {SPLITS}.")


@dataclasses.dataclass
class AcreProblem:
  """One problem: objects (shape, material, colour) indices, 6 context panels, 4 queries (one per type)."""
  objects: list[tuple[int, int, int]]
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
  """Context from a pattern combination; one query of each type drawn from its facts."""
  combo = _contexts(config.split, train)[rng.integers(len(_contexts(config.split, train)))]
  pool = _allowed_objects(config.split, train)
  names = [(i, letter) for i, name in enumerate(combo) for letter in sorted({c for p, _ in PATTERNS[name] for c in p})]
  chosen = rng.choice(len(pool), len(names), replace=False)
  index = {key: k for k, key in enumerate(names)}
  objects = [pool[j] for j in chosen]
  context = [(tuple(index[(i, c)] for c in panel), light) for i, name in enumerate(combo)
             for panel, light in PATTERNS[name]]
  context = [context[j] for j in rng.permutation(len(context))]
  status = _pattern_status(combo, index)
  blickets = [status[k][0] if status[k][0] is not None else bool(rng.random() < 0.5) for k in range(len(objects))]
  queries = [_query(kind, status, rng) for kind in QUERY_TYPES]
  return AcreProblem(objects, blickets, context, queries, *render_problem(config, objects, context, queries))


def _pattern_status(combo, index) -> dict[int, tuple[bool | None, str]]:
  """Each object's status (True/False/None = undetermined) and how it is known (direct / indirect)."""
  facts = {"one_cause": {"A": (True, "direct"), "B": (False, "direct")},
           "indirect_on": {"C": (True, "indirect"), "D": (False, "direct")},
           "indirect_off": {"E": (False, "indirect"), "F": (False, "indirect")},
           "backward_blocking": {"G": (True, "direct"), "H": (None, "backward_blocking")}}
  return {index[(i, letter)]: fact for i, name in enumerate(combo) for letter, fact in facts[name].items()}


def _query(kind: str, status, rng) -> tuple[tuple[int, ...], str, str]:
  pick = lambda keep: int(rng.choice([k for k, fact in status.items() if keep(fact)]))
  if kind in ("direct", "indirect"):
    candidates = [k for k, (known, how) in status.items() if how == kind]
    if not candidates:  # every context has direct facts; indirect ones come from indirect_on/off
      kind, candidates = "direct", [k for k, (_, how) in status.items() if how == "direct"]
    obj = int(rng.choice(candidates))
    return (obj,), kind, "on" if status[obj][0] else "off"
  if kind == "backward_blocking":
    return (pick(lambda f: f[1] == "backward_blocking"),), kind, "undetermined"
  blicket, other = pick(lambda f: f[0] is True), pick(lambda f: f[0] is None)
  return tuple(sorted((blicket, other))), kind, "on"


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
