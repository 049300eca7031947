"""The colabs' views: metrics read back from both files a run writes, frame strips and GIFs, search tables."""
import numpy as np
from PIL import Image
import pytest

from lrr_jax.data.worlds import cater
from lrr_jax.evaluation import plots
from lrr_jax.inference import search
from lrr_jax.train import metrics


def test_read_metrics_agrees_across_jsonl_and_event_files_and_keeps_a_resumed_step(tmp_path):
  writer = metrics.MetricWriter(tmp_path)
  for step in (1, 2, 3):
    writer.write_scalars(step, {"loss": 4.0 - step, "learning_rate": 0.25 * step})
  writer.close()
  writer = metrics.MetricWriter(tmp_path)  # resumed from step 2: step 3 again, then 4
  for step in (3, 4):
    writer.write_scalars(step, {"loss": 10.0 + step, "learning_rate": 0.25 * step})
  writer.close()
  for source in ("jsonl", "events"):
    read = metrics.read_metrics(tmp_path, source)
    assert sorted(read) == ["learning_rate", "loss"]
    np.testing.assert_array_equal(read["loss"][0], [1, 2, 3, 4])
    np.testing.assert_array_equal(read["loss"][1], [3.0, 2.0, 13.0, 14.0])
  figure = plots.training_curves(metrics.read_metrics(tmp_path))
  assert [a.get_title() for a in figure.axes if a.lines] == ["loss", "learning rate"]
  assert "| loss | 1-4 (4) | 3 | 14 | 2 | 14 |" in plots.metrics_table(metrics.read_metrics(tmp_path))
  with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
    metrics.read_metrics(tmp_path / "empty")


def test_frames_gif_and_rationale(tmp_path):
  videos = cater.generate(cater.CaterConfig(num_objects=4, num_cones=1), 1, seed=0)
  assert len(plots.frame_strip(videos.frames[0]).axes) == 8
  gif = Image.open(plots.save_gif(videos.frames[0], tmp_path / "a" / "v.gif", scale=2))
  durations = []
  for index in range(gif.n_frames):  # Pillow merges repeated frames into one of their summed duration
    gif.seek(index)
    durations.append(gif.info["duration"])
  assert gif.size == (64, 64) and sum(durations) == 8 * 330  # GIF delays count centiseconds
  text = plots.format_rationale(cater.rationale_example(videos, 0))
  assert text.splitlines()[1] == "<SUMMARY>" and "    [frames 0-3] frame 3: <track>" in text
  assert text.endswith(f"answer: {cater.answer_text(int(videos.label[0]))}")
  assert plots.cater_truth_table(videos, 0).count("\n") == 2 + 7


def test_step_tables_show_scores_or_the_judges_record():
  judged = search.Step("CAPTION", ["a <b>", "c|d", "e"], None, [2, 0], [(0, 1, 0), (2, 0, 2)], [3, 4, 5])
  table = plots.step_table(judged)
  assert "| 1 | a &lt;b&gt; | 3 | 1 of 2 | **yes** (2) |" in table
  assert "| 2 | c\\|d | 4 | 0 of 1 |  |" in table and "| 3 | e | 5 | 1 of 1 | **yes** (1) |" in table
  assert "| 2 | #3 | #1 | #3 |" in plots.comparisons_table(judged)
  scored = search.Step("SUMMARY", ["x", "y"], [-1.0, -0.5], [1], [], [1, 1], backtracked=True)
  assert "| 2 | y | 1 | -0.500 | **yes** (1) |" in plots.step_table(scored) and "cutoff" in plots.step_table(scored)
  assert plots.comparisons_table(scored) == ""
  result = search.SearchResult("xy", [scored, judged], 12, 30, 1.5)
  assert "| CAPTION | e | 3 |" in plots.search_summary(result) and "12 tokens sampled" in plots.search_summary(result)
