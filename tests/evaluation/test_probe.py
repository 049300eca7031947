"""The probe: ridge probes against hand-built features (a cell coded linearly is read; noise is not), the
positions before each cell against the tokens there, and the command on the tiny trained run."""
import json
import subprocess
import sys

import numpy as np
import pytest

from lrr_jax import run_records
from lrr_jax.data import encoding
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.worlds import cater
from lrr_jax import probe


def test_a_linearly_coded_cell_is_read_and_noise_is_not():
  rng = np.random.default_rng(0)
  cells = rng.integers(0, 36, 720)
  code = np.eye(36)[cells] @ rng.normal(size=(36, 20)) + 0.05 * rng.normal(size=(720, 20))
  assert probe.linear_probe(code[:540], cells[:540], code[540:], cells[540:])["accuracy"] == 1.0
  noise = rng.normal(size=(720, 20))
  assert probe.linear_probe(noise[:540], cells[:540], noise[540:], cells[540:])["accuracy"] < 0.15


def test_ridge_in_the_dual_form_equals_the_primal():
  rng = np.random.default_rng(1)
  x, targets = rng.normal(size=(12, 30)), rng.normal(size=(12, 4))
  with_bias = np.concatenate([x, np.ones((12, 1))], 1)
  primal = np.linalg.solve(with_bias.T @ with_bias + 0.5 * np.eye(31), with_bias.T @ targets)
  np.testing.assert_allclose(probe.fit_ridge(x, targets, 0.5), primal, atol=1e-8)  # 31 features > 12: dual


def test_positions_point_at_the_token_before_each_snitch_cell():
  videos = cater.generate(cater.CaterConfig(num_objects=4, num_cones=1), 6, seed=5)
  examples = [cater.rationale_example(videos, n) for n in range(6)]
  tokenizer = tokenizer_lib.train_bpe([e.response_text for e in examples], 400)
  for n, example in enumerate(examples):
    inputs = encoding.encode_example(example, tokenizer, 512)["inputs"]
    found = probe.cell_positions(example, tokenizer)
    assert [t for t, _, _ in found] == list(range(8))
    true_cells = probe.snitch_cells(example.response_text, 8)
    for t, position, cell_tokens in found:
      written = inputs[position + 1:position + 1 + len(cell_tokens)].tolist()
      assert written == cell_tokens  # the next tokens of the teacher-forced input are the cell's
      row, col = (int(v) for v in tokenizer.decode(cell_tokens).strip().split(","))
      assert row * 6 + col == true_cells[t]
    # the world's own snitch cells (a covered snitch moves with its cone, whose cell the rationale states)
    assert true_cells.tolist() == [int(videos.cell[n, t, 0] @ [6, 1]) for t in range(8)]


@pytest.mark.slow
def test_the_probe_command_on_the_tiny_run(tiny_run, tmp_path):
  workdir, _ = tiny_run
  output = tmp_path / "probe.json"
  out = subprocess.run([sys.executable, "-m", "lrr_jax.probe", f"--workdir={workdir}",
                        "--num_examples=4", "--test_fraction=0.25", f"--output={output}"],
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  table = json.loads(output.read_text())
  assert table["probe_train_records"] == 3 and table["probe_test_records"] == 1 and table["records"] == 4
  num_frames = run_records.load_run(workdir).config.video_shape()[0]
  for name in ("encoder_mean", "encoder_grid", "static_grid", "decoder_hidden"):
    assert table[name]["test"] == num_frames and table[name]["train"] == 3 * num_frames, name
    assert 0.0 <= table[name]["accuracy"] <= 1.0
  assert 0.0 <= table["decoder_written"]["accuracy"] <= 1.0 and table["chance"]["uniform"] == 1 / 36
  assert "| encoder_grid |" in out.stdout and "| decoder_hidden |" in out.stdout
