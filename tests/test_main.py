"""The main command runs end to end on a tiny budget; inference and the scaling table read its workdir."""
import json
import subprocess
import sys

import pytest


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout)


def test_main_trains_evaluates_and_writes_results(tiny_run):
  workdir, out = tiny_run
  results = json.loads((workdir / "results.json").read_text())
  answer_keys = {k for k in results["eval"] if not k.startswith(("grounding/", "top1/", "count/"))}
  assert answer_keys == {"top1", "top1_ranked", "top5", "l1", "well_formed", "chance_top1"}
  assert {"grounding/frame_fact_acc", "grounding/frame0_acc", "grounding/detect_cell_acc"} <= set(results["eval"])
  assert "| grounding/frame_fact_acc |" in out.stdout and "| top1 by case (records) |" in out.stdout
  assert results["eval"]["top5"] >= results["eval"]["top1_ranked"]
  assert list((workdir / "data").rglob("tokenizer.json")) and list(workdir.rglob("*.array_record-*"))
  assert "| top1 |" in out.stdout
  assert results["eval_examples"] == {"file": "eval_examples.jsonl", "count": 4} and not results["evaluated_only"]
  lines = [json.loads(line) for line in (workdir / "eval_examples.jsonl").read_text().splitlines()]
  assert [line["index"] for line in lines] == [0, 1, 2, 3]
  for metric in ("top1", "top1_ranked", "top5", "l1", "well_formed"):  # each record's, averaging to the score
    assert sum(line["scores"][metric] for line in lines) / 4 == results["eval"][metric], metric


def test_evaluation_runs_during_training(tiny_run):
  workdir, _ = tiny_run
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  evaluated = [line for line in lines if "eval/top5" in line]
  assert [line["step"] for line in evaluated] == [2]  # every 2 steps, not at the end (the final eval is full)
  assert 0.0 <= evaluated[0]["eval/top1_ranked"] <= evaluated[0]["eval/top5"] <= 1.0


def test_infer_prints_the_chosen_stages(tiny_run):
  workdir, _ = tiny_run
  out = run("lrr_jax.infer", f"--workdir={workdir}", "--strategy=stage_beam", "--num_candidates=2",
            "--max_new_tokens=8", "--example=1")
  assert out.returncode == 0, out.stderr[-3000:]
  for stage in ("[SUMMARY] kept", "[CAPTION] kept", "[REASONING] kept", "[CONCLUSION] kept", "Answer:", "Label:"):
    assert stage in out.stdout, out.stdout


def test_infer_answers_about_a_video_file(tiny_run, tmp_path):
  workdir, _ = tiny_run
  video = tmp_path / "clip.mp4"
  write_video(video)
  out = run("lrr_jax.infer", f"--workdir={workdir}", f"--video={video}", "--question=Where is the snitch?",
            "--strategy=greedy", "--max_new_tokens=8")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "greedy with" in out.stdout and "Answer:" in out.stdout


def test_infer_answers_a_surrogate_request(tiny_run):
  workdir, _ = tiny_run
  out = run("lrr_jax.infer", f"--workdir={workdir}", "--example=1", "--surrogate=track snitch at frame 3",
            "--max_new_tokens=8")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Request: <track> at frame 3? frame 3:" in out.stdout and "Surrogate answer:" in out.stdout, out.stdout
  assert "Record:  <track>" not in out.stdout and "Record: <track> snitch" in out.stdout  # the record's own fact
  bad = run("lrr_jax.infer", f"--workdir={workdir}", "--surrogate=where is the snitch?")
  assert bad.returncode != 0 and "--surrogate: Surrogate request 'where is the snitch?'" in bad.stderr


def write_video(path, frames: int = 12, size: int = 48) -> None:
  """A small MP4 (PyAV) of a square moving across the frame."""
  import av  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  with av.open(str(path), "w") as container:
    stream = container.add_stream("mpeg4", rate=8)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    for t in range(frames):
      image = np.zeros((size, size, 3), np.uint8)
      image[10:20, 2 + 3 * t:12 + 3 * t] = 255
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode())


def test_scaling_table_compares_strategies(tiny_run, tmp_path):
  """Per-strategy N, stage_beam per beam, both scorers in one call; per-example outcomes average to the row."""
  workdir, _ = tiny_run
  out = run("lrr_jax.scaling", f"--workdir={workdir}", "--strategies=greedy,best_of_n,stage_beam",
            "--num_examples=2", "--num_candidates=best_of_n:3,stage_beam:2", "--stage_beams=1,2",
            "--scorers=likelihood,judge", "--max_new_tokens=8", f"--output={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads((tmp_path / "scaling.json").read_text())
  assert [(r["strategy"], r["num_candidates"], r["beam"], r["scorer"]) for r in rows] == [
      ("greedy", 1, 1, "none"), ("best_of_n", 3, 1, "likelihood"), ("best_of_n", 3, 1, "judge"),
      ("stage_beam", 2, 1, "likelihood"), ("stage_beam", 2, 1, "judge"),
      ("stage_beam", 2, 2, "likelihood"), ("stage_beam", 2, 2, "judge")]
  assert rows[0]["tokens_sampled"] <= 8 < rows[3]["tokens_sampled"]  # greedy: one response; stage beam: 4 x 2
  assert [r["tokens_judged"] > 0 for r in rows] == [False, False, True, False, True, False, True]
  for row in rows:
    per_example = row["per_example"]
    assert per_example["index"] == [0, 1]
    assert (row["dataset"], row["headline"]) == ("generated_cater", "top1")
    for key in ("top1", "l1", "well_formed", "top5", "top1_ranked", "tokens_sampled", "tokens_judged", "seconds"):
      assert len(per_example[key]) == 2 and row[key] == pytest.approx(sum(per_example[key]) / 2), (row, key)
    assert min(per_example["seconds"]) <= row["seconds_median"] <= max(per_example["seconds"])
    assert row["grounding/frame_fact_acc"] == pytest.approx(sum(per_example["frame_fact_acc"]) / 2)  # 8 facts each
  assert "| stage_beam | judge | 2 | 2 |" in (tmp_path / "scaling.md").read_text()
  assert "| top-1 | top-5 | top-1 contained / visible at end | L1 |" in (tmp_path / "scaling.md").read_text()
  assert (tmp_path / "scaling.png").stat().st_size > 1000


def test_infer_errors_name_the_bad_input(tiny_run, tmp_path):
  workdir, _ = tiny_run
  missing = run("lrr_jax.infer", f"--workdir={tmp_path / 'nowhere'}")
  assert missing.returncode != 0 and "nowhere/run.json is missing" in missing.stderr
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(b"not a video at all")
  bad_video = run("lrr_jax.infer", f"--workdir={workdir}", f"--video={broken}", "--question=Where?")
  assert bad_video.returncode != 0 and "broken.mp4 cannot be decoded" in bad_video.stderr
  no_step = run("lrr_jax.infer", f"--workdir={workdir}", "--step=999")
  assert no_step.returncode != 0 and "No checkpoint for step 999" in no_step.stderr


def test_unknown_config_key_is_rejected(tmp_path):
  out = run("lrr_jax.main", f"--workdir={tmp_path}", "--config.optimizer.lrr=1", timeout=120)
  assert out.returncode != 0 and "lrr" in out.stderr


def test_generated_acre_reports_accuracy_per_query_type(tmp_path):
  out = run("lrr_jax.main", "--config=configs/acre.py:split=compositional", f"--workdir={tmp_path}",
            "--config.num_steps=2", "--config.data.num_train=8", "--config.data.num_eval=4",
            "--config.batch_size=4", "--config.eval.max_new_tokens=8")
  assert out.returncode == 0, out.stderr[-3000:]
  scores = json.loads((tmp_path / "results.json").read_text())["eval"]
  assert {"accuracy", "split/compositional", "query_type/direct", "query_type/screen_off"} <= set(scores)
  grounded = {"grounding/frame_fact_acc", "grounding/detect_acc", "grounding/light_acc", "grounding/status_acc"}
  assert grounded <= set(scores)
