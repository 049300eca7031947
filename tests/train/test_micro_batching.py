"""grad_accum_steps=0 (auto): the fewest micro-batches whose compiled step fits, tried ascending, cached."""
import json
import pathlib
import subprocess
import sys

import jax
import pytest

from lrr_jax.train import micro_batching

# Peak bytes per device of a made-up step by micro-batch count: it halves its activations per doubling.
PEAKS = {1: 100, 2: 60, 4: 40, 8: 30}


def measured(peaks: dict[int, int]):
  """measure(k) -> peaks[k], and the list of the k it was asked for (the compiles a search would run)."""
  asked = []

  def measure(k: int) -> int:
    asked.append(k)
    return peaks[k]
  return measure, asked


def test_candidates_are_the_divisors_of_the_rows_ascending():
  assert micro_batching.candidates(12) == [1, 2, 3, 4, 6, 12]
  assert micro_batching.candidates(1) == [1]


def test_one_micro_batch_where_the_step_fits_and_no_other_compiled():
  measure, asked = measured(PEAKS)
  choice = micro_batching.choose(measure, 8, limit_bytes=100)
  assert (choice.steps, choice.fits, asked) == (1, True, [1])


def test_more_micro_batches_where_the_step_does_not_fit_stopping_at_the_first_that_fits():
  measure, asked = measured(PEAKS)
  choice = micro_batching.choose(measure, 8, limit_bytes=50)
  assert (choice.steps, choice.fits, choice.peaks, asked) == (4, True, {1: 100, 2: 60, 4: 40}, [1, 2, 4])


def test_none_fitting_is_an_error_naming_each_peak(tmp_path):
  measure, _ = measured({k: v * 2**30 for k, v in PEAKS.items()})
  with pytest.raises(ValueError, match=r"k=1: 100.00 GiB, k=2: 60.00 GiB, k=4: 40.00 GiB, k=8: 30.00 GiB.*"
                                       r"none fits"):
    micro_batching.resolve(measure, 8, 10 * 2**30, {}, tmp_path / "cache.json")
  assert not (tmp_path / "cache.json").exists()


def test_no_known_limit_gives_one_micro_batch_without_compiling():
  measure, asked = measured(PEAKS)
  choice = micro_batching.choose(measure, 8, limit_bytes=None)
  assert (choice.steps, choice.fits, asked) == (1, True, [])
  assert "device_memory_gib" in choice.describe()


def test_the_limit_is_the_configured_one_else_the_devices():
  device = jax.devices("cpu")[0]  # XLA:CPU reports no memory limit
  assert micro_batching.memory_limit_bytes(device, 0.0) is None
  assert micro_batching.memory_limit_bytes(device, 1.5) == 3 * 2**29

  class Accelerator:
    def memory_stats(self):
      return {"bytes_limit": 16 * 2**30, "bytes_in_use": 0}
  assert micro_batching.memory_limit_bytes(Accelerator(), 0.0) == 16 * 2**30
  assert micro_batching.memory_limit_bytes(Accelerator(), 8.0) == 8 * 2**30


def test_a_cached_choice_compiles_nothing_and_a_changed_key_searches_again(tmp_path):
  cache = tmp_path / "micro_batches.json"
  fields = dict(model="tiny", devices=8, device_kind="TPU v5 lite")
  measure, asked = measured(PEAKS)
  first = micro_batching.resolve(measure, 8, 50, fields, cache)
  again = micro_batching.resolve(measure, 8, 50, fields, cache)
  assert (first.steps, first.cached, again.steps, again.cached, again.peaks) == (4, False, 4, True, first.peaks)
  assert asked == [1, 2, 4]  # the second call compiled nothing
  other = micro_batching.resolve(measure, 8, 50, dict(fields, devices=16), cache)
  assert not other.cached and asked == [1, 2, 4, 1, 2, 4]
  assert len(json.loads(cache.read_text())) == 2


@pytest.mark.slow  # a subprocess compiling a tiny train step a few times on 2 simulated devices
def test_the_loop_search_on_simulated_devices_with_the_configured_limit():
  root = pathlib.Path(__file__).parents[2]
  out = subprocess.run([sys.executable, "-m", "tests.train.micro_batching_check"], capture_output=True, text=True,
                       cwd=root, timeout=900, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert report["devices"] == 2
  fits, split, again = report["fits"], report["split"], report["again"]
  assert (fits["steps"], fits["built"], fits["cached"]) == (1, [1], False)
  peaks = {int(k): v for k, v in split["peaks"].items()}
  assert split["steps"] > 1 and peaks[split["steps"]] <= split["limit_bytes"]
  assert all(peaks[k] > split["limit_bytes"] for k in peaks if k < split["steps"])
  assert split["built"] == [k for k in (1, 2, 4, 8) if k <= split["steps"]]  # ascending, stopping at the first fit
  assert (again["steps"], again["cached"], again["built"]) == (split["steps"], True, [])
