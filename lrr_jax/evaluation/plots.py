"""Figures and tables the colabs show: frame strips and GIFs with their rationales, training curves, and
the steps of a search with their candidates and the scorer's choices.

Everything returns a matplotlib Figure, a Markdown string or a file path, so that a notebook only calls and
displays (`IPython.display.Markdown(...)`), and the same views work in scripts.
"""
import pathlib
from typing import Mapping, Sequence

import matplotlib.figure
import numpy as np
from PIL import Image

from lrr_jax.data import rationales
from lrr_jax.data.worlds import cater
from lrr_jax.inference import search

CURVES = (("loss", "loss"), ("token_accuracy", "token accuracy"), ("learning_rate", "learning rate"),
          ("grad_norm", "gradient global norm"), ("examples_per_s", "examples / s"), ("tokens_per_s", "tokens / s"),
          # the evaluations during training: does the model look (`evaluation.grounding`), and answer?
          ("eval/grounding/frame_fact_acc", "held-out: snitch's cell right (frame facts)"),
          ("eval/grounding/frame0_acc", "held-out: snitch's cell right, frame 0"), ("eval/top1", "held-out top-1"))


def frame_strip(frames: np.ndarray, labels: Sequence[str] | None = None, title: str = "",
                inches: float = 1.4) -> matplotlib.figure.Figure:
  """frames uint8[T, H, W, 3] side by side, each titled by `labels` (default 'frame t')."""
  labels = list(labels) if labels is not None else [f"frame {t}" for t in range(len(frames))]
  if len(labels) != len(frames):
    raise ValueError(f"{len(frames)} frames need as many labels, got {len(labels)}.")
  figure = matplotlib.figure.Figure(figsize=(inches * len(frames), inches + 0.5))
  axes = figure.subplots(1, len(frames), squeeze=False)
  for axis, frame, label in zip(axes[0], frames, labels):
    axis.imshow(frame, interpolation="nearest")
    axis.set_title(label, fontsize=8)
    axis.axis("off")
  if title:
    figure.suptitle(title, fontsize=9)
  figure.tight_layout()
  return figure


def save_gif(frames: np.ndarray, path: str | pathlib.Path, frames_per_second: float = 3.0,
             scale: int = 4) -> pathlib.Path:
  """frames uint8[T, H, W, 3] as a looping GIF, each pixel `scale` x `scale` (small frames stay visible)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  big = np.repeat(np.repeat(np.asarray(frames, np.uint8), scale, axis=1), scale, axis=2)
  images = [Image.fromarray(frame) for frame in big]
  images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / frames_per_second), loop=0)
  return path


def format_rationale(example: rationales.Example) -> str:
  """The question and the response segment by segment, each with the last frame it may see, by stage."""
  frame = lambda segment: "no frame" if segment.frame_index < 0 else f"frames 0-{segment.frame_index}"
  lines = [f"Q [{frame(s)}] {s.text}" for s in example.question]
  for segment in example.response:
    text = segment.text.strip()
    if not text:
      continue
    is_tag = rationales.TAG_PATTERN.fullmatch(text) is not None
    lines.append(text if is_tag else f"    [{frame(segment)}] {text}")
  lines.append(f"answer: {example.answer}")
  return "\n".join(lines)


def cater_truth_table(videos: cater.CaterVideos, n: int) -> str:
  """A Markdown table of video n's actions and, frame by frame, the snitch's cell, visibility and cover."""
  name = lambda k: "snitch" if videos.shape[n, k] == cater.SNITCH else (
      f"{cater.COLOR_NAMES[videos.color[n, k]]} {cater.SHAPES[videos.shape[n, k]]}")
  lines = ["| frame | action | snitch cell | visible | covered by |", "| --- | --- | --- | --- | --- |"]
  for t in range(videos.cell.shape[1]):
    actions = "; ".join(f"{a.kind} {name(a.actor)}" + (f" over {name(a.target)}" if a.target >= 0 else "")
                        for a in videos.actions[n] if a.start <= t <= a.end)
    cone = int(videos.container[n, t, 0])
    lines.append(f"| {t} | {actions or '-'} | {','.join(str(int(c)) for c in videos.cell[n, t, 0])} | "
                 f"{'yes' if videos.visible[n, t, 0] else 'no'} | {name(cone) if cone >= 0 else '-'} |")
  return "\n".join(lines)


def training_curves(metrics: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    curves: Sequence[tuple[str, str]] = CURVES, inches: float = 3.2) -> matplotlib.figure.Figure:
  """One panel per scalar of `metrics` (`train.metrics.read_metrics`) named in `curves` (key, title)."""
  present = [(key, title) for key, title in curves if key in metrics]
  if not present:
    raise ValueError(f"None of {[k for k, _ in curves]} is among the metrics {sorted(metrics)}.")
  columns = min(3, len(present))
  rows = -(-len(present) // columns)
  figure = matplotlib.figure.Figure(figsize=(inches * columns, 0.8 * inches * rows))
  axes = figure.subplots(rows, columns, squeeze=False)
  for axis, (key, title) in zip(axes.flat, present):
    steps, values = metrics[key]
    axis.plot(steps, values, marker="." if len(steps) < 50 else None)
    axis.set_title(title, fontsize=9)
    axis.set_xlabel("step", fontsize=8)
    axis.grid(alpha=0.3)
  for axis in list(axes.flat)[len(present):]:
    axis.axis("off")
  figure.tight_layout()
  return figure


def metrics_table(metrics: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> str:
  """A Markdown table of each scalar's first, last, smallest and largest value, with its steps."""
  lines = ["| scalar | steps | first | last | min | max |", "| --- | --- | --- | --- | --- | --- |"]
  for key, (steps, values) in sorted(metrics.items()):
    lines.append(f"| {key} | {steps[0]}-{steps[-1]} ({len(steps)}) | {values[0]:.4g} | {values[-1]:.4g} | "
                 f"{values.min():.4g} | {values.max():.4g} |")
  return "\n".join(lines)


def _cell(text: str, limit: int) -> str:
  text = " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
  return text if len(text) <= limit else text[:limit - 1] + "…"


def step_table(step: search.Step, max_chars: int = 160) -> str:
  """A Markdown table of one search step: each candidate, its tokens, its score or tournament record, kept."""
  wins = {i: sum(winner == i for _, _, winner in step.comparisons) for i in range(len(step.candidates))}
  played = {i: sum(i in (a, b) for a, b, _ in step.comparisons) for i in range(len(step.candidates))}
  rank = {index: place for place, index in enumerate(step.kept)}
  header = "| # | candidate | tokens | " + ("score" if step.scores is not None else "judge wins") + " | kept |"
  lines = [f"**{step.name}**" + (" (below the cutoff: back to the previous stage)" if step.backtracked else ""),
           "", header, "| --- | --- | --- | --- | --- |"]
  for i, text in enumerate(step.candidates):
    tokens = step.num_tokens[i] if i < len(step.num_tokens) else ""
    judged = f"{step.scores[i]:.3f}" if step.scores is not None else f"{wins[i]} of {played[i]}"
    kept = f"**yes** ({rank[i] + 1})" if i in rank else ""
    lines.append(f"| {i + 1} | {_cell(text, max_chars)} | {tokens} | {judged} | {kept} |")
  return "\n".join(lines)


def comparisons_table(step: search.Step) -> str:
  """A Markdown table of the judge's pairwise comparisons in one step (empty for absolute scorers)."""
  if not step.comparisons:
    return ""
  lines = [f"Judge's knockout in {step.name}:", "", "| comparison | response 1 | response 2 | chosen |",
           "| --- | --- | --- | --- |"]
  for n, (a, b, winner) in enumerate(step.comparisons):
    lines.append(f"| {n + 1} | #{a + 1} | #{b + 1} | #{winner + 1} |")
  return "\n".join(lines)


def search_summary(result: search.SearchResult) -> str:
  """A Markdown table of the kept text per step, and the compute the search spent."""
  lines = ["| step | kept | candidates |", "| --- | --- | --- |"]
  for step in result.steps:
    kept = step.candidates[step.kept[0]] if step.kept else ""
    lines.append(f"| {step.name}{' (backtracked)' if step.backtracked else ''} | {_cell(kept, 200)} | "
                 f"{len(step.candidates)} |")
  lines += ["", f"{result.generated_tokens} tokens sampled, {result.judge_tokens} read by the judge, "
            f"{result.seconds:.1f} s."]
  return "\n".join(lines)
