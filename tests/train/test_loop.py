"""The train loop in-process (no subprocess): evaluation through the callable it is handed, metrics, checkpoints,
and a rerun that resumes at the end and returns the saved state."""
import json

import jax
import numpy as np
import pytest

from configs import cater
from lrr_jax import run_config
from lrr_jax import run_objects
from lrr_jax.train import loop
from lrr_jax.train import throughput


@pytest.mark.slow  # over 10 s
def test_train_loop_evaluates_through_its_callable_and_resumes(tmp_path):
  config = cater.get_config()
  config.num_steps, config.batch_size, config.log_every = 3, 4, 1
  config.data.update(num_train=16, num_eval=4)
  config.checkpoint.every = 2
  config.eval.update(every=2, num_examples=3)
  config.update(peak_flops_per_device=2e11, profile=dict(start_step=1, num_steps=1))
  config = run_config.RunConfig.from_config_dict(config)
  train_data, _, tokenizer = run_objects.build_data(config, tmp_path)
  model = run_objects.make_model(config, tokenizer)
  calls = []

  def evaluate(params, num_examples):
    calls.append((jax.tree.structure(params), num_examples))
    return {"top1": 0.25}

  evaluation = loop.PeriodicEvaluation(evaluate, config.eval.every, config.eval.num_examples)
  state, metrics = loop.train(config, model, train_data, tmp_path, evaluation)
  assert int(state.step) == 3 and np.isfinite(metrics["loss"])
  assert [count for _, count in calls] == [3]  # at step 2 only: the final evaluation is the caller's
  assert calls[0][0] == jax.tree.structure(state.variables)  # what the model is applied with
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [line["step"] for line in lines if "eval/top1" in line] == [2]
  assert sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit()) == [2, 3]
  check_throughput(lines, config, model)
  assert list((tmp_path / "profile").glob("plugins/profile/*/*.xplane.pb"))  # step 2's trace

  resumed, _ = loop.train(config, model, train_data, tmp_path, evaluation)  # nothing left to do
  assert int(resumed.step) == 3 and len(calls) == 1
  assert loop.params_checksum(resumed.params) == loop.params_checksum(state.params)


def check_throughput(lines, config, model) -> None:
  """Step 1 (which compiles) has no step time; step 2 has step time, tokens/s, TFLOP/s per device and, as a peak
  is given, MFU; the FLOPs per step they imply are the compiled count, within 0.9-3x of the analytic model
  FLOPs. The evaluation after step 2 is not timed: step 3 is timed from its end."""
  rows = {line["step"]: line for line in lines if "loss" in line}
  assert "step_time_s" not in rows[1] and all("step_time_s" in rows[s] for s in (2, 3))
  for row in (rows[2], rows[3]):
    assert row["tokens_per_s"] > 0 and row["examples_per_s"] == config.batch_size / row["step_time_s"]
    flops = row["tflops_per_device"] * 1e12 * row["step_time_s"]
    frames, resolution = config.video_shape()
    model_flops = throughput.analytic_train_flops(model.config, config.batch_size, config.data.max_length,
                                                  frames, resolution, resolution)
    assert 0.9 * model_flops <= flops < 3 * model_flops
    np.testing.assert_allclose(row["mfu"], row["tflops_per_device"] * 1e12 / 2e11, rtol=1e-6)


def test_sigterm_is_seen_by_preemption_and_stops_an_evaluation():
  """main hands `Preemption.agreed` to the final evaluation as `should_stop`: a SIGTERM ends it at a batch."""
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  previous = signal.getsignal(signal.SIGTERM)
  try:
    preemption = loop.Preemption()
    assert not preemption.agreed()
    os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.agreed()  # one process: its own flag
  finally:
    signal.signal(signal.SIGTERM, previous)

