"""`lrr_jax.scaling --scorers=oracle` on a tiny run: the record's true rationale reaches the oracle scorer."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # trains the tiny run (shared with tests/test_main.py in one session)


def test_the_oracle_scores_a_row_of_the_scaling_table(tiny_run, tmp_path):
  workdir, _ = tiny_run
  out = subprocess.run([sys.executable, "-m", "lrr_jax.scaling", f"--workdir={workdir}",
                        "--strategies=best_of_n,stage_beam", "--num_examples=2", "--num_candidates=2",
                        "--scorers=oracle", "--max_new_tokens=8", f"--output={tmp_path}"],
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads((tmp_path / "scaling.json").read_text())
  assert [(r["strategy"], r["scorer"]) for r in rows] == [("best_of_n", "oracle"), ("stage_beam", "oracle")]
  assert all(r["tokens_judged"] == 0 and len(r["per_example"]["index"]) == 2 for r in rows)
