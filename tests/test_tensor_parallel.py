"""Tensor parallelism over 8 CPU devices trains an OPT-shaped model whose vocabulary grew with the stage tags:
its embedding is padded to a multiple of 128 rows, so the `vocab` axis divides over `tensor=8`."""
import json
import os
import subprocess
import sys

import pytest

from lrr_jax.data import tokenizer as tokenizer_lib
from tests.conftest import save_tiny_hf_opt
from tests import test_released_recipe

pytestmark = pytest.mark.slow  # an end-to-end run on 8 simulated devices

release = test_released_recipe.release  # the CATER release fixture (a module fixture: this module's own copy)


def test_tensor_8_trains_the_grown_vocabulary_opt(release, tmp_path):  # pylint: disable=redefined-outer-name
  root, vocab_size = release
  tokenizer = tokenizer_lib.load(root / "opt" / "tokenizer.json")
  save_tiny_hf_opt(tmp_path / "opt", vocab_size=tokenizer.base_size + 1, max_position_embeddings=512)
  tokenizer.save(tmp_path / "opt" / "tokenizer.json")
  grown = max(tokenizer.base_size + 1, vocab_size)
  assert grown % 8, "the test needs a vocabulary that does not divide over tensor=8 unpadded"
  env = {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu"}
  out = subprocess.run(
      [sys.executable, "-m", "lrr_jax.main", "--config=configs/released.py:dataset=cater", f"--workdir={tmp_path / 'w'}",
       f"--config.data.manual_dir={root / 'CATER'}", f"--config.data.data_dir={root / 'data'}",
       f"--config.model.init_from={tmp_path / 'opt'}", "--config.model.size=tiny", "--config.num_steps=2",
       "--config.batch_size=2", "--config.mesh.data=1", "--config.mesh.tensor=8", "--config.data.max_length=480",
       "--config.data.resolution=32", "--config.eval.max_new_tokens=8", "--config.eval.every=0",
       "--config.data.worker_count=0", "--config.model.video.static_backbone.grid_stage=0",
       "--config.model.video.motion_backbone.grid_stage=0"],
      capture_output=True, text=True, timeout=900, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads((tmp_path / "w" / "results.json").read_text())
  assert results["train"]["loss"] > 0 and results["eval"]["well_formed"] >= 0
