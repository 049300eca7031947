"""The main command runs end to end on a tiny budget and writes its results."""
import json
import subprocess
import sys


def test_main_trains_evaluates_and_writes_results(tmp_path):
  command = [sys.executable, "-m", "lrr_jax.main", "--config=configs/cater.py", f"--workdir={tmp_path}",
             "--config.num_steps=3", "--config.data.num_train=32", "--config.data.num_eval=4",
             "--config.eval.max_new_tokens=12", "--config.batch_size=4"]
  out = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert set(results["eval"]) == {"top1", "l1", "well_formed", "chance_top1"}
  assert list((tmp_path / "data").rglob("tokenizer.json")) and list(tmp_path.rglob("*.array_record-*"))
  assert "| top1 |" in out.stdout


def test_unknown_config_key_is_rejected(tmp_path):
  command = [sys.executable, "-m", "lrr_jax.main", f"--workdir={tmp_path}", "--config.optimizer.lrr=1"]
  out = subprocess.run(command, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "lrr" in out.stderr
