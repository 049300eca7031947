"""A seeded procedural renderer of CATER-style videos (Girdhar & Ramanan, 2020), in NumPy.

CLEVR-like objects (cubes, spheres, cylinders, cones and one small golden snitch) on a floor divided into a
6x6 grid. Each action slot moves one object: slide, pick-and-place (lifted mid-way), rotate, or containment
(a cone is placed over an object, hides it and carries it from then on). Objects are painted far to near
(lifted ones last), so they occlude in depth order; an id buffer records which object owns each pixel, which
gives the per-frame visibility. The moving-camera variant pans the view frame by frame.

The label is the snitch's final grid cell, `row * 6 + col` (36 classes). Simulation loops over a few actions per
video; rendering is vectorised over videos, frames and pixels. The rationale (last section) detects the objects on
frame 0, then tracks the snitch, re-identifying the cone that covers it; the release builder writes the same text.
"""
import dataclasses

import numpy as np

from lrr_jax.data import rationales

GRID = 6
SHAPES = ("cube", "sphere", "cylinder", "cone", "snitch")
CUBE, SPHERE, CYLINDER, CONE, SNITCH = range(5)
COLORS = {"gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
          "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51),
          "gold": (212, 175, 55)}
COLOR_NAMES = tuple(COLORS)
GOLD = COLOR_NAMES.index("gold")
ACTIONS = ("slide", "pick_place", "rotate", "contain")
FLOOR, GRID_LINE = (200, 200, 200), (160, 160, 160)


@dataclasses.dataclass(frozen=True)
class CaterConfig:
  num_frames: int = 8
  resolution: int = 32  # square frames
  num_objects: int = 5  # the snitch included
  num_cones: int = 2
  frames_per_action: int = 2
  contain_prob: float = 0.4  # chance that an action slot is a containment, when one is possible
  moving_camera: bool = False
  camera_pan: float = 0.15  # largest pan, as a fraction of the frame, reached at the last frame
  # The border around the 6x6 floor, as a fraction of the frame on each side. 0: the floor fills the frame, so
  # that at a resolution divisible by 6 every cell is a whole square of pixels (the demo's 48 px: 8 px cells,
  # one grid feature per cell under a stride-8 backbone).
  floor_margin: float = 0.1

  def __post_init__(self):
    if not 1 <= self.num_cones < self.num_objects <= GRID * GRID:
      raise ValueError(f"CaterConfig needs 1 <= num_cones < num_objects <= 36, got num_cones={self.num_cones}, "
                       f"num_objects={self.num_objects}.")
    if not 0.0 <= self.floor_margin < 0.5:
      raise ValueError(f"CaterConfig.floor_margin={self.floor_margin}: expected a fraction in [0, 0.5).")
    if self.num_frames < 1 + self.frames_per_action:
      raise ValueError(f"CaterConfig.num_frames={self.num_frames} leaves no room for an action of "
                       f"frames_per_action={self.frames_per_action}.")


@dataclasses.dataclass
class Action:
  """One object's action over frames [start, end]; `target` is the object a cone covers (contain only)."""
  start: int
  end: int
  actor: int
  kind: str
  source: tuple[int, int]
  destination: tuple[int, int]
  target: int = -1


@dataclasses.dataclass
class CaterVideos:
  """A batch of N videos of T frames with K objects; object 0 is always the snitch."""
  frames: np.ndarray  # uint8[N, T, H, W, 3]
  shape: np.ndarray  # int[N, K] index into SHAPES
  color: np.ndarray  # int[N, K] index into COLOR_NAMES
  cell: np.ndarray  # int[N, T, K, 2] (row, col) of the nearest grid cell
  visible: np.ndarray  # bool[N, T, K] some pixel of the object is seen
  container: np.ndarray  # int[N, T, K] index of the cone covering the object, -1 if none
  actions: list[list[Action]]  # per video
  label: np.ndarray  # int[N] the snitch's final cell, row * 6 + col

  def __len__(self) -> int:
    return len(self.label)


def _simulate(config: CaterConfig, rng: np.random.Generator):
  """World state of one video: positions float[T, K, 2], lift/angle float[T, K], container int[T, K]."""
  t_total, k = config.num_frames, config.num_objects
  shape = np.array([SNITCH] + [CONE] * config.num_cones
                   + list(rng.choice([CUBE, SPHERE, CYLINDER], k - 1 - config.num_cones)))
  color = np.concatenate([[GOLD], rng.choice(GOLD, k - 1)])
  cells = rng.choice(GRID * GRID, k, replace=False)
  position = np.zeros((t_total, k, 2))
  position[:] = np.stack([cells // GRID, cells % GRID], -1)
  lift, angle = np.zeros((t_total, k)), np.zeros((t_total, k))
  container = np.full((t_total, k), -1)
  actions = []
  for start in range(0, t_total - config.frames_per_action, config.frames_per_action):
    end = start + config.frames_per_action
    action = _choose_action(config, rng, shape, position[start], container[start], start, end)
    actions.append(action)
    _apply_action(action, position, lift, angle, container)
  return shape, color, position, lift, angle, container, actions


def _cell(position: np.ndarray) -> tuple[int, int]:
  return int(round(position[0])), int(round(position[1]))


def _choose_action(config, rng, shape, position, container, start, end) -> Action:
  free = np.flatnonzero(container < 0)
  occupied = {_cell(p) for p in position[free]}
  empty = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in occupied]
  holding = set(container[container >= 0])
  open_cones = [i for i in free if shape[i] == CONE and i not in holding]
  coverable = [i for i in free if shape[i] != CONE]
  if open_cones and coverable and rng.random() < config.contain_prob:
    # Cover the snitch more often than anything else: that is what makes CATER hard.
    target = 0 if 0 in coverable and rng.random() < 0.6 else int(rng.choice(coverable))
    actor = int(rng.choice(open_cones))
    return Action(start, end, actor, "contain", _cell(position[actor]),
                  _cell(position[target]), target)
  actor = int(rng.choice(free))
  kind = str(rng.choice(["slide", "pick_place", "rotate"], p=[0.4, 0.4, 0.2]))
  source = _cell(position[actor])
  destination = source if kind == "rotate" else empty[rng.integers(len(empty))]
  return Action(start, end, actor, kind, source, destination)


def _apply_action(action: Action, position, lift, angle, container) -> None:
  """Write the action's effect into frames start+1 .. end, and carry the state to the last frame."""
  a, steps = action.actor, action.end - action.start
  source, destination = np.array(action.source, float), np.array(action.destination, float)
  for step in range(1, steps + 1):
    t, fraction = action.start + step, step / steps
    if action.kind == "rotate":
      angle[t:, a] = angle[action.start, a] + fraction * np.pi / 4
    else:
      position[t:, a] = source + fraction * (destination - source)
      if action.kind in ("pick_place", "contain"):
        lift[t, a] = 1.0 if step < steps else 0.0
    if action.kind == "contain" and step == steps:
      container[t:, action.target] = a
    carried = container[t] == a  # contents move with their cone
    position[t:, carried] = position[t, a]


def _screen_geometry(config: CaterConfig, num_videos: int, rng: np.random.Generator):
  """Per video and frame: pixel origin of the floor (float[N, T, 2]) and pixels per cell."""
  cell_px = (1 - 2 * config.floor_margin) * config.resolution / GRID
  origin = np.full((num_videos, config.num_frames, 2), config.floor_margin * config.resolution)
  if config.moving_camera:
    direction = rng.normal(size=(num_videos, 1, 2))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    progress = np.linspace(0.0, 1.0, config.num_frames)[None, :, None]
    origin = origin + direction * progress * config.camera_pan * config.resolution
  return origin, cell_px


def _object_masks(shape, angle, dx, dy, radius):
  """bool[..., H, W] silhouettes; shape/angle broadcast against offsets dx, dy [..., H, W] (pixels)."""
  cos, sin = np.cos(angle), np.sin(angle)
  u, v = dx * cos + dy * sin, -dx * sin + dy * cos
  cube = (np.abs(u) < 0.85 * radius) & (np.abs(v) < 0.85 * radius)
  sphere = dx ** 2 + dy ** 2 < radius ** 2
  cylinder = (np.abs(dx) < 0.75 * radius) & (np.abs(dy) < radius)
  cone = (np.abs(dy) < radius) & (np.abs(dx) < radius * (dy + radius) / (2 * radius) + 0.3)
  snitch = (dx ** 2 + dy ** 2 < (0.6 * radius) ** 2) | ((np.abs(dy) < 0.25 * radius) & (np.abs(dx) < 1.1 * radius))
  return np.select([shape == CUBE, shape == SPHERE, shape == CYLINDER, shape == CONE],
                   [cube, sphere, cylinder, cone], snitch)


def render(config: CaterConfig, shape, color, position, lift, angle, container, origin, cell_px):
  """Paint N videos: returns uint8[N, T, H, W, 3] and the visibility bool[N, T, K] from the id buffer."""
  n, t, k = position.shape[:3]
  res = config.resolution
  ys, xs = np.mgrid[0:res, 0:res] + 0.5
  floor_x = (xs - origin[..., 1, None, None]) / cell_px  # [N, T, H, W] in cells
  floor_y = (ys - origin[..., 0, None, None]) / cell_px
  on_floor = (floor_x >= 0) & (floor_x < GRID) & (floor_y >= 0) & (floor_y < GRID)
  near_line = lambda z: np.abs(z - np.round(z)) * cell_px < 0.5
  frames = np.where(on_floor[..., None], np.where((near_line(floor_x) | near_line(floor_y))[..., None],
                                                  GRID_LINE, FLOOR), (90, 90, 100)).astype(np.float32)
  owner = np.full((n, t, res, res), -1)

  centre_y = origin[..., None, 0] + (position[..., 0] + 0.5) * cell_px - lift * 0.6 * cell_px  # [N, T, K]
  centre_x = origin[..., None, 1] + (position[..., 1] + 0.5) * cell_px
  radius = np.where(shape == SNITCH, 0.3, 0.42)[:, None, :] * cell_px  # [N, 1, K]
  depth = position[..., 0] + 10.0 * lift  # far rows first, lifted objects last
  depth = np.where(container >= 0, -np.inf, depth)
  order = np.argsort(depth, axis=-1, kind="stable")
  rgb = np.asarray(list(COLORS.values()), np.float32)[color]  # [N, K, 3]
  for slot in range(k):
    obj = order[..., slot]  # [N, T]
    take = lambda a: np.take_along_axis(np.broadcast_to(a, (n, t, k)), obj[..., None], -1)[..., 0, None, None]
    dx, dy = xs - take(centre_x), ys - take(centre_y)
    r = take(radius)
    mask = _object_masks(take(shape[:, None, :]), take(angle), dx, dy, r) & (take(container) < 0)
    shade = np.clip(1.15 - 0.35 * (dy + r) / (2 * r), 0.6, 1.2)[..., None]
    colour = rgb[np.arange(n)[:, None], obj][:, :, None, None, :]  # [N, T, 1, 1, 3]
    frames = np.where(mask[..., None], colour * shade, frames)
    owner = np.where(mask, obj[..., None, None], owner)
  visible = (owner[:, :, None] == np.arange(k)[None, None, :, None, None]).any(axis=(-1, -2))
  return np.clip(frames, 0, 255).astype(np.uint8), visible


def generate(config: CaterConfig, num_videos: int, seed: int) -> CaterVideos:
  """`num_videos` videos, the same bytes for the same (config, num_videos, seed)."""
  rng = np.random.default_rng(seed)
  worlds = [_simulate(config, rng) for _ in range(num_videos)]
  shape, color, position, lift, angle, container = (np.stack([w[i] for w in worlds]) for i in range(6))
  origin, cell_px = _screen_geometry(config, num_videos, rng)
  frames, visible = render(config, shape, color, position, lift, angle, container, origin, cell_px)
  cell = np.clip(np.round(position).astype(int), 0, GRID - 1)
  final_snitch = cell[:, -1, 0]
  return CaterVideos(frames=frames, shape=shape, color=color, cell=cell, visible=visible, container=container,
                     actions=[w[6] for w in worlds], label=final_snitch[:, 0] * GRID + final_snitch[:, 1])


# The rationale: its text, written alike for generated videos and for the release's scenes.
QUESTION = "Where is the snitch at the end of the video?"
SUMMARY = "Find the snitch's final cell: detect the objects, track the snitch and any cone over it."


def cell_text(cell) -> str:
  """A grid cell (row, col) as the rationale writes it: 'row,col'."""
  return f"{cell[0]},{cell[1]}"


def answer_text(label: int) -> str:
  """The snitch's final cell (the label, row * 6 + col) as the answer is written: 'row,col'."""
  return cell_text((label // GRID, label % GRID))


def detection_segment(objects: list[tuple[str, tuple[int, int]]]) -> rationales.Segment:
  """Frame 0's detections from (name, cell) pairs: 'frame 0: <detect> red cube 1,2; snitch 3,4.'."""
  return rationales.frame_segment(0, "<detect> " + "; ".join(f"{name} {cell_text(cell)}" for name, cell in objects)
                                  + ".")


def track_segment(frame: int, cell, occluded: bool = False) -> rationales.Segment:
  """The snitch seen (or occluded) at its cell on `frame`."""
  return rationales.frame_segment(frame, f"<track> snitch {cell_text(cell)}{' occluded' if occluded else ''}. ")


def reid_segment(frame: int, cone: str, cell) -> rationales.Segment:
  """The snitch hidden on `frame`: re-identified under the cone (named, at its cell) that covers it."""
  return rationales.frame_segment(frame, f"<track> snitch hidden; <reid> {cone} {cell_text(cell)} covers it. ")


def snitch_example(caption: list[rationales.Segment], reasoning: list[rationales.Segment], num_objects: int,
                   final_cell: str, answer: str, last_frame: int, variant: str) -> rationales.Example:
  """The question and the four stages around a caption (detections) and reasoning (tracking); `no_surrogate`
  replaces both with plain text."""
  question = [rationales.question_segment(QUESTION, last_frame, variant)]
  if variant == "no_surrogate":
    caption = [rationales.Segment(f"There are {num_objects} objects on a 6x6 grid.", 0)]
    reasoning = [rationales.Segment("The snitch may move or be covered; its final place gives the answer.", 0)]
  return rationales.staged_example(question, [rationales.Segment(SUMMARY, 0)], caption, reasoning,
                                   f"The snitch ends at {final_cell}.", answer, last_frame, variant)


def object_name(videos: CaterVideos, n: int, k: int) -> str:
  """'snitch', or colour and shape: 'red cone'."""
  if videos.shape[n, k] == SNITCH:
    return "snitch"
  return f"{COLOR_NAMES[videos.color[n, k]]} {SHAPES[videos.shape[n, k]]}"


def _tracking_step(videos: CaterVideos, n: int, t: int) -> rationales.Segment:
  """The snitch at frame t: seen at its cell, or re-identified under the cone that covers it."""
  container = videos.container[n, t, 0]
  if container < 0:
    return track_segment(t, videos.cell[n, t, 0], occluded=not videos.visible[n, t, 0])
  return reid_segment(t, object_name(videos, n, container), videos.cell[n, t, container])


def rationale_example(videos: CaterVideos, n: int, variant: str = "full") -> rationales.Example:
  """Question, rationale and answer for video n of a batch: where is the snitch at the end?"""
  last, num_objects = videos.cell.shape[1] - 1, videos.shape.shape[1]
  caption = [detection_segment([(object_name(videos, n, k), videos.cell[n, 0, k]) for k in range(num_objects)])]
  reasoning = [_tracking_step(videos, n, t) for t in range(1, last + 1)]
  return snitch_example(caption, reasoning, num_objects, cell_text(videos.cell[n, last, 0]),
                        answer_text(int(videos.label[n])), last, variant)
