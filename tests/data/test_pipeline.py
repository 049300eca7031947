"""Grain pipelines over the TFDS-built generated worlds: exact resume, disjoint process shards, mixtures,
frames fitted with their text, and errors that name the record."""
import dataclasses
import json

import numpy as np
import pytest

from lrr_jax.data import pipeline
from lrr_jax.data import datasets
from lrr_jax.data import rationales
from lrr_jax.data import records


@pytest.fixture(scope="module")
def cater(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  directory = datasets.prepare("generated_cater", "tiny", str(data_dir), 400, num_train=64, num_test=8)
  source = datasets.builder_for("generated_cater", "tiny", str(data_dir), num_train=64, num_test=8)
  return source.as_data_source("train"), str(directory / "tokenizer.json"), data_dir


def config(tokenizer_path, **overrides):
  return dataclasses.replace(pipeline.PipelineConfig(tokenizer_path=tokenizer_path, batch_size=8, max_length=320), **overrides)


def test_records_and_tokenizer_are_written_beside_each_other(cater):
  source, tokenizer_path, data_dir = cater
  assert len(source) == 64 and tokenizer_path.startswith(str(data_dir))
  assert list(data_dir.rglob("*.array_record-*"))


def test_iterator_resumes_exactly(cater):
  source, tokenizer_path, _ = cater
  dataset = pipeline.make_dataset([("cater", source, 1.0)], config(tokenizer_path, brightness_jitter=0.2,
                                                                   surrogate_prompt_prob=0.3))
  iterator = iter(dataset)
  for _ in range(5):  # into the second epoch
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(9)]
  assert any(_prompted(mask) for batch in expected for mask in batch["loss_mask"])  # requests resume too
  resumed = iter(dataset)
  resumed.set_state(json.loads(json.dumps(state)))  # as a checkpoint stores it
  for want, got in zip(expected, (next(resumed) for _ in range(9))):
    assert want.keys() == got.keys()
    for key in want:
      np.testing.assert_array_equal(want[key], got[key], err_msg=key)


def test_two_processes_see_disjoint_shards_that_cover_the_data(cater):
  source, tokenizer_path, _ = cater
  seen = []
  for process in range(2):
    dataset = pipeline.make_dataset([("cater", source, 1.0)], config(tokenizer_path, num_epochs=1), process, 2)
    seen.append(np.concatenate([batch["record_index"] for batch in dataset]).tolist())
  assert len(seen[0]) == len(seen[1]) == 32
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == list(range(64))


def test_epochs_are_reshuffled_and_loss_is_on_the_response(cater):
  source, tokenizer_path, _ = cater
  batches = list(pipeline.make_dataset([("cater", source, 1.0)], config(tokenizer_path, num_epochs=2)))
  order = np.concatenate([b["record_index"] for b in batches])
  assert sorted(order[:64]) == sorted(order[64:]) and (order[:64] != order[64:]).any()
  batch = batches[0]
  assert (batch["loss_mask"] <= batch["segment_ids"]).all() and batch["loss_mask"].sum() > 0
  assert batch["video"].shape == (8, 8, 32, 32, 3)


def test_mixture_and_fitting_frames_keeps_text_and_frames_aligned(cater, tmp_path):
  source, tokenizer_path, _ = cater
  acre_dir = datasets.prepare("generated_acre", "iid", str(tmp_path), 0, num_train=8, num_test=2)
  acre = datasets.builder_for("generated_acre", "iid", str(tmp_path), num_train=8, num_test=2)
  cfg = config(tokenizer_path, max_length=1024, num_frames=4, resolution=16)
  dataset = pipeline.make_dataset([("cater", source, 0.5), ("acre", acre.as_data_source("train"), 0.5)], cfg)
  batch = next(iter(dataset))
  assert batch["video"].shape == (8, 4, 16, 16, 3)
  assert batch["frame_index"].max() <= 3 and batch["frame_index"].min() >= -1
  lengths = batch["segment_ids"].sum(1)
  assert len(set(lengths.tolist())) > 1  # both sources (CATER ~190 tokens, ACRE ~330)
  assert acre_dir.is_dir()


def constant_records(value: int, count: int) -> list[dict]:
  """`count` records whose frames are all `value` (which tells a mixture's sources apart in a batch)."""
  example = lambda v: rationales.staged_example([rationales.Segment("Q?", 0)], [rationales.Segment("s", 0)],
                                                [rationales.Segment("c", 0)], [rationales.Segment("r", 0)],
                                                "So", "1", 0, v)
  return [records.make_record(np.full((2, 8, 8, 3), value, np.uint8), {v: example(v) for v in rationales.VARIANTS})
          for _ in range(count)]


def test_a_mixture_draws_its_sources_by_weight_and_resumes_exactly(cater):
  _, tokenizer_path, _ = cater
  cfg = config(tokenizer_path, batch_size=4, num_frames=2, resolution=8, max_length=64)
  dataset = pipeline.make_dataset([("dark", constant_records(0, 5), 1.0), ("light", constant_records(255, 3), 3.0)],
                                  cfg)
  iterator = iter(dataset)
  batches = [next(iterator) for _ in range(25)]
  light = np.concatenate([b["video"].reshape(4, -1).mean(1) for b in batches]) == 255
  assert light.mean() == pytest.approx(0.75, abs=0.02)  # 3:1 over 100 examples
  assert all(0.5 <= (b["video"].reshape(4, -1).mean(1) == 255).mean() <= 1 for b in batches)  # mixed in each batch
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(6)]
  resumed = iter(dataset)
  resumed.set_state(json.loads(json.dumps(state)))
  for want, got in zip(expected, (next(resumed) for _ in range(6))):
    for key in want:
      np.testing.assert_array_equal(want[key], got[key], err_msg=key)


def test_fit_frames_maps_frames_and_rejects_bad_shapes():
  frames = (np.arange(6)[:, None, None, None] * np.ones((6, 8, 8, 3))).astype(np.uint8)
  fitted, kept = pipeline.fit_frames(frames, 3, 4, "x")
  assert fitted.shape == (3, 4, 4, 3) and kept.tolist() == [0, 2, 5] and fitted[:, 0, 0, 0].tolist() == [0, 2, 5]
  with pytest.raises(ValueError, match=r"clip record 3: frames have shape \(6, 8, 8\)"):
    pipeline.fit_frames(frames[..., 0], 3, 4, "clip record 3")


class BrokenSource:
  """A data source whose record 2 is corrupt (examples JSON cut short) and record 3 has 2-D frames."""

  def __init__(self, good):
    self.good = good

  def __len__(self):
    return 4

  def __getitem__(self, index):
    record = dict(self.good[index])
    if index == 2:
      record["examples"] = record["examples"][:50]
    if index == 3:
      record["frames"] = record["frames"][..., 0]
    return record


@pytest.mark.parametrize("index,message", [(2, "broken record 2 has a malformed 'examples' field"),
                                           (3, r"broken record 3: frames have shape \(8, 32, 32\)")])
def test_corrupt_records_are_named(cater, index, message):
  source, tokenizer_path, _ = cater
  encode = pipeline.EncodeRecord(config(tokenizer_path), "broken")
  encode.map((0, 0, BrokenSource(source)[0]))  # a good record passes
  with pytest.raises(ValueError, match=message):
    encode.map((index, index, BrokenSource(source)[index]))


def test_truncated_array_record_file_fails_loudly_and_names_the_file(cater, tmp_path):
  _, _, data_dir = cater
  original = sorted(data_dir.rglob("*train.array_record-*"))[0]
  truncated = tmp_path / original.name
  truncated.write_bytes(original.read_bytes()[:len(original.read_bytes()) // 2])
  with pytest.raises(ValueError, match=f"clips: .*{truncated.name}"):
    source = pipeline.open_array_record([str(truncated)], "clips")
    [source[i] for i in range(len(source))]
  whole = pipeline.open_array_record([str(original)], "clips")
  assert len(whole) == 64 and isinstance(whole[0], bytes)
  assert original.stat().st_size > truncated.stat().st_size  # the written data is untouched


def test_a_damaged_tfds_file_is_named_with_the_record(cater, tmp_path):
  """Through a TFDS source (as runs read it), the error names the very file of the failing record."""
  import shutil  # pylint: disable=g-import-not-at-top
  _, tokenizer_path, data_dir = cater
  copy = tmp_path / "tfds"
  shutil.copytree(data_dir, copy)
  train = sorted(copy.rglob("*train.array_record-*"))[0]
  train.write_bytes(train.read_bytes()[:int(train.stat().st_size * 0.95)])
  source = datasets.builder_for("generated_cater", "tiny", str(copy), num_train=64, num_test=8).as_data_source("train")
  batches = iter(pipeline.make_dataset([("clips", source, 1.0)], config(tokenizer_path, shuffle=False)))
  with pytest.raises(ValueError, match=f"clips: record \\d+ could not be read \\(in {train}\\)"):
    for _ in range(8):
      next(batches)


@pytest.mark.slow  # Grain worker processes
def test_worker_processes_give_the_same_batches_and_resume_exactly(tmp_path):
  """JPEG frames decoded, resized and colour-jittered in the workers: the batches (videos included) equal those
  made in this process, a resumed iterator continues exactly, the jitter changes each epoch."""
  import pathlib, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  script = pathlib.Path(__file__).with_name("pipeline_workers.py")
  out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300,
                       cwd=pathlib.Path(__file__).parents[2])
  assert out.returncode == 0, out.stderr[-2000:]
  assert json.loads(out.stdout.strip().splitlines()[-1]) == {
      "same_batches": True, "resume_exact": True, "covers": True, "jitter_differs_by_epoch": True,
      "video_shape": [8, 8, 24, 24, 3], "prompted": True}


def _prompted(loss_mask: np.ndarray) -> bool:
  """A response with a gap in its loss (an inserted surrogate request)."""
  inside = loss_mask[np.argmax(loss_mask):len(loss_mask) - np.argmax(loss_mask[::-1])]
  return bool((inside == 0).any())


def test_surrogate_requests_are_inserted_at_the_configured_rate_per_record_and_epoch(cater):
  source, tokenizer_path, _ = cater
  encode = pipeline.EncodeRecord(config(tokenizer_path, surrogate_prompt_prob=0.3), "cater")
  records = [source[i] for i in range(8)]
  draws = [(draw % 8, draw) for draw in range(1000)]  # 125 epochs of 8 records
  prompted = [_prompted(encode.map((index, draw, records[index]))["loss_mask"]) for index, draw in draws]
  assert abs(sum(prompted) - 300) < 4.5 * np.sqrt(1000 * 0.3 * 0.7)  # a binomial bound (~1e-5 to fail)
  again = [_prompted(encode.map((index, draw, records[index]))["loss_mask"]) for index, draw in draws[:50]]
  assert again == prompted[:50]  # the same (seed, record, draw), the same request
  unprompted = pipeline.EncodeRecord(config(tokenizer_path), "cater")
  assert not any(_prompted(unprompted.map((i, i, records[i]))["loss_mask"]) for i in range(8))
  lengths = [int(unprompted.map((i, i, records[i]))["segment_ids"].sum()) for i in range(8)]
  tight = pipeline.EncodeRecord(config(tokenizer_path, surrogate_prompt_prob=1.0, max_length=max(lengths)), "cater")
  longest = int(np.argmax(lengths))  # no room for a request: trained on unprompted rather than failing
  assert not _prompted(tight.map((longest, longest, records[longest]))["loss_mask"])
