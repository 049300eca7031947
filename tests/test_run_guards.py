"""Nothing lost, nothing mixed: `lrr_jax.main` claims its workdir (a second start is refused naming the first),
refuses inputs that changed since run.json fingerprinted them, prints results before writing them and keeps them
when the write fails, and falls back to the previous checkpoint when a finished run's final one is damaged."""
import json
import os
import pathlib
import random
import shutil
import string
import subprocess
import sys
import time

import pytest

from lrr_jax import run_records
from lrr_jax.data import fingerprints
from lrr_jax.data import tokenizer as tokenizer_lib
from tests.conftest import TINY_RUN_FLAGS
from tests.data import test_lease
from tests.train import test_checkpoint

ROOT = pathlib.Path(__file__).parents[1]
pytestmark = pytest.mark.slow  # every test here starts lrr_jax.main or reads the session's tiny run


def main(workdir: pathlib.Path, *flags_: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_THREEFRY_PARTITIONABLE": "false"}
  return subprocess.run([sys.executable, "-m", "lrr_jax.main", f"--workdir={workdir}", *flags_],
                        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)


@pytest.fixture
def finished_run(tiny_run, tmp_path) -> pathlib.Path:
  """A copy of the session's finished 4-step run (conftest's TINY_RUN_FLAGS), its data included."""
  workdir = tmp_path / "run"
  shutil.copytree(tiny_run[0], workdir)
  run_file = workdir / "run.json"  # the copy's own paths
  run_file.write_text(run_file.read_text().replace(str(tiny_run[0]), str(workdir)))
  return workdir


def another_tokenizer(path: pathlib.Path, vocab_size: int) -> None:
  """Overwrite `path` with a BPE of `vocab_size` tokens trained on other text."""
  rng = random.Random(vocab_size)
  texts = ["".join(rng.choice(string.ascii_letters + " ") for _ in range(200)) for _ in range(300)]
  tokenizer_lib.train_bpe(texts, vocab_size).save(path)


def test_a_second_start_on_a_held_workdir_is_refused_naming_the_holder(tmp_path):
  holder = test_lease.hold_in_a_process(str(tmp_path))
  try:
    start = time.time()
    out = main(tmp_path, *TINY_RUN_FLAGS)
    assert out.returncode != 0 and "WorkdirInUse" in out.stderr, out.stderr[-3000:]
    assert f"pid {holder.pid}, started at" in out.stderr
    assert time.time() - start < 120
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lease.json"]  # nothing written: no data, no run.json
  finally:
    holder.kill()
    holder.wait()


def test_a_changed_tokenizer_is_refused_by_evaluation_and_load_run(finished_run):
  meta = json.loads((finished_run / "run.json").read_text())
  assert set(meta["inputs"]) == {"tokenizer", "data:generated_cater"}
  tokenizer_file = pathlib.Path(meta["tokenizer"])
  another_tokenizer(tokenizer_file, 512)  # the same size: only the fingerprint tells
  out = main(finished_run, *TINY_RUN_FLAGS)
  assert out.returncode != 0 and "InputChanged" in out.stderr, out.stderr[-3000:]
  assert f"tokenizer {tokenizer_file} changed" in out.stderr and "--accept_changed_inputs" in out.stderr
  assert "data:generated_cater" not in out.stderr.split("InputChanged")[-1]
  with pytest.raises(fingerprints.InputChanged, match=f"tokenizer {tokenizer_file} changed"):
    run_records.load_run(finished_run)
  assert run_records.load_run(finished_run, accept_changed_inputs=True).step == 4
  out = main(finished_run, *TINY_RUN_FLAGS, "--accept_changed_inputs")  # evaluated again with it, and recorded
  assert out.returncode == 0, out.stderr[-3000:]
  changed = json.loads((finished_run / "run.json").read_text())["starts"][-1]["changed_inputs"]
  assert [c.split(" (")[0] for c in changed] == [f"tokenizer {tokenizer_file} changed"]
  run_records.load_run(finished_run)  # the new tokenizer is now the recorded one
  another_tokenizer(tokenizer_file, 900)
  with pytest.raises(ValueError, match=r"has \d+ tokens, more than the 512 embedding rows"):
    run_records.load_run(finished_run, accept_changed_inputs=True)


def test_results_are_printed_and_kept_when_results_json_cannot_be_written(finished_run):
  (finished_run / "results.json").unlink()
  (finished_run / "results.json").mkdir()  # unwritable: a folder in its place
  out = main(finished_run, *TINY_RUN_FLAGS)
  assert out.returncode != 0 and "ResultsNotSaved" in out.stderr, out.stderr[-3000:]
  assert "| top5 |" in out.stdout  # printed before the write failed
  kept = pathlib.Path(out.stderr.split("they are kept in ")[-1].split()[0])  # not the traceback's line
  results = json.loads((kept / "results.json").read_text())
  assert results["step"] == 4 and "top5" in results["eval"]
  assert len((kept / "eval_examples.jsonl").read_text().splitlines()) == 4


def test_a_finished_run_with_a_damaged_final_checkpoint_falls_back_to_the_previous(finished_run, tiny_run):
  for data_file in (finished_run / "ckpt" / "4" / "state" / "ocdbt.process_0" / "d").iterdir():
    test_checkpoint.flip_bytes(data_file)  # every file: the params' too (evaluation reads no optimizer state)
  out = main(finished_run, *TINY_RUN_FLAGS)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "final checkpoint of" in out.stdout and "Falling back" in out.stdout
  results = json.loads((finished_run / "results.json").read_text())
  original = json.loads((tiny_run[0] / "results.json").read_text())
  assert results["step"] == 4 and not results["evaluated_only"]
  assert results["params_checksum"] == original["params_checksum"]  # steps 3-4 trained again, exactly
  assert (finished_run / "ckpt" / "4.damaged").is_dir()
  assert results["earlier_results"][-1]["params_checksum"] == original["params_checksum"]
