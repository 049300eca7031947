"""The released-dataset recipe end to end: a CATER release in its own layout, a local Hugging Face OPT to start
from (its tokenizer is the run's), only the video encoder and cross-attention trained, top-5 evaluated."""
import json
import subprocess
import sys

import flax
import numpy as np
import pytest

from lrr_jax.convert import hf_opt
from lrr_jax.data import datasets
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.worlds import cater
from lrr_jax import run_records
from tests.conftest import save_tiny_hf_opt
from tests.data import release_fixtures

pytestmark = pytest.mark.slow  # end-to-end runs of the released recipe

# 'cross_attention': the blocks unrolled (cross_attention_<i>) or scanned (layers/cross_attention), as the recipe has them
TRAINABLE = "--config.optimizer.trainable=('^video_encoder/', 'cross_attention')"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """A 6-video CATER release (train 4, val 2) and a tiny random OPT with a tokenizer trained on its text."""
  root = tmp_path_factory.mktemp("released")
  world = cater.CaterConfig(num_frames=16, resolution=32, contain_prob=0.7)  # the recipe samples 16 frames
  train, val = cater.generate(world, 4, 0), cater.generate(world, 2, 1)
  release_fixtures.write_cater_release(root / "CATER", "train", train)
  release_fixtures.write_cater_release(root / "CATER", "val", val, offset=100)
  directory = datasets.prepare("cater", "default", str(root / "data"), 400, str(root / "CATER"))
  tokenizer = tokenizer_lib.load(directory / "tokenizer.json")  # a BPE on the release's own rationales
  for name, vocab in (("opt", 512), ("opt_small_vocab", 97)):
    save_tiny_hf_opt(root / name, vocab_size=vocab, max_position_embeddings=512)
    tokenizer.save(root / name / "tokenizer.json")
  return root, tokenizer.vocab_size


def main(root, workdir, opt: str, *flags: str) -> subprocess.CompletedProcess:
  command = [sys.executable, "-m", "lrr_jax.main", "--config=configs/released.py:dataset=cater",
             f"--workdir={workdir}", f"--config.data.manual_dir={root / 'CATER'}",
             f"--config.data.data_dir={root / 'data'}", f"--config.model.init_from={root / opt}",
             "--config.model.size=tiny", "--config.num_steps=2", "--config.batch_size=2", "--config.mesh.data=1",
             "--config.data.max_length=480", "--config.data.resolution=32", "--config.eval.max_new_tokens=16", "--config.data.worker_count=0",
             # the tiny backbones have two stages: their last gives the grid (the recipe's conv4_x is ResNet-101's)
             "--config.model.video.static_backbone.grid_stage=0", "--config.model.video.motion_backbone.grid_stage=0",
             *flags]
  return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_recipe_starts_from_the_local_opt_trains_only_the_visual_parts_and_reports_top5(release, tmp_path):
  release, _ = release
  out = main(release, tmp_path, "opt", TRAINABLE)
  assert out.returncode == 0, out.stderr[-3000:]
  scores = json.loads((tmp_path / "results.json").read_text())["eval"]
  assert {"top1", "top5", "l1", "well_formed"} <= set(scores) and scores["top5"] >= scores["top1_ranked"]
  run = run_records.load_run(tmp_path)
  assert run.step == 2 and run.model.config.decoder.vocab_size == 512  # the OPT's architecture, not the preset
  layout = run.model.config.decoder  # the recipe scans the layers: the OPT's stacked as the run's params
  assert layout.scan_layers
  _, pretrained = hf_opt.load_hf_opt(release / "opt", scan_layers=True,
                                     cross_attention_layers=layout.cross_attention_layers)
  trained = flax.traverse_util.flatten_dict(run.params["decoder"])
  for path, value in flax.traverse_util.flatten_dict(pretrained).items():  # frozen: still the OPT's weights
    np.testing.assert_array_equal(np.asarray(trained[path]), value, err_msg="/".join(path))
  gates = [np.asarray(v) for k, v in trained.items() if k[-1].endswith("_gate")]
  assert gates and any(np.any(g != 0) for g in gates)  # the cross-attention did train


def test_infer_answers_about_a_video_file_with_a_released_dataset_run(release, tmp_path):
  """A released-dataset config has no generated world: the frame shape comes from `config.data`."""
  release, _ = release
  assert main(release, tmp_path, "opt", "--config.eval.every=0").returncode == 0
  video = sorted((release / "CATER" / "videos").glob("*.avi"))[0]
  out = subprocess.run([sys.executable, "-m", "lrr_jax.infer", f"--workdir={tmp_path}", f"--video={video}",
                        "--question=Where is the snitch at the end?", "--strategy=greedy", "--max_new_tokens=8"],
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Answer:" in out.stdout and "Label:" not in out.stdout


def test_a_tokenizer_larger_than_the_opt_vocabulary_is_a_clear_error(release, tmp_path):
  release, vocab_size = release
  out = main(release, tmp_path, "opt_small_vocab")
  assert out.returncode != 0
  assert f"has {vocab_size} tokens, more than the model's vocabulary of 97 (the OPT at config.model.init_from)" in out.stderr, out.stderr[-2000:]


def test_the_recipe_with_pretrained_batch_norm_resnets_trains_resumes_and_keeps_their_statistics(release, tmp_path):
  """The released structure scaled down in width and depth only: BatchNorm ResNets on both streams loaded from a
  Hugging Face ResNet (its running statistics included), cross-attention in every other OPT layer."""
  from lrr_jax.convert import resnet_weights  # pylint: disable=g-import-not-at-top
  from tests.convert.test_resnet_convert import TINY, save_hf_resnet  # pylint: disable=g-import-not-at-top
  release, _ = release
  save_hf_resnet(tmp_path / "resnet", **TINY)
  workdir = tmp_path / "run"
  backbone = ["--config.model.video.coordinate_channels=False", "--config.model.decoder.cross_attention_layers=(1,)"]
  for stream in ("static", "motion"):
    backbone += [f"--config.model.video.{stream}_backbone.{key}" for key in (
        "stage_sizes=(1,1)", "width=8", "bottleneck=False", "norm=batch", "stem_pool=True")]
    backbone.append(f"--config.model.video.{stream}_init_from={tmp_path / 'resnet'}")
  out = main(release, workdir, "opt", "--config.eval.every=0", *backbone)
  assert out.returncode == 0, out.stderr[-3000:]
  out = main(release, workdir, "opt", "--config.eval.every=0", "--config.num_steps=3",
             "--config.resume_with_changes=True", *backbone)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "top5" in json.loads((workdir / "results.json").read_text())["eval"]
  run = run_records.load_run(workdir)
  assert run.step == 3
  _, pretrained = resnet_weights.load_resnet(tmp_path / "resnet", run.model.config.video.static_backbone)
  expected = flax.traverse_util.flatten_dict(pretrained["batch_stats"])
  for stream in ("static_stream", "motion_stream"):
    found = flax.traverse_util.flatten_dict(run.variables["batch_stats"]["video_encoder"][stream])
    assert found.keys() == expected.keys()
    for path, value in expected.items():
      np.testing.assert_array_equal(np.asarray(found[path]), value, err_msg=f"{stream}/{'/'.join(path)}")
  out = subprocess.run([sys.executable, "-m", "lrr_jax.infer", f"--workdir={workdir}", "--strategy=greedy",
                        "--max_new_tokens=8"], capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Answer:" in out.stdout
