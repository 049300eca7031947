"""Inference inputs refused with clear errors (issue 30): sampling settings (NaN, negative, infinite), token
budgets (0, negative), a question that is not UTF-8, surrogate requests outside the grammar."""
import math
import os
import pathlib
import subprocess
import sys

from absl import app
from absl import flags
import pytest

from lrr_jax import infer
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.inference import sampling as sampling_lib
from lrr_jax.inference import search
from lrr_jax.inference import surrogate_answer

ROOT = pathlib.Path(__file__).parents[2]


@pytest.mark.parametrize("temperature", [math.nan, -1.0, -0.5, math.inf])
def test_a_temperature_that_is_not_finite_and_non_negative_is_refused(temperature):
  with pytest.raises(ValueError, match=r"temperature=.*expected a finite number >= 0 \(0: greedy\)"):
    sampling_lib.Sampling(temperature=temperature)


@pytest.mark.parametrize("top_k, top_p, match", [(0, math.nan, "top_p=nan"), (-1, 0.9, "top_k .* = -1"),
                                                 (1.5, 0.9, "top_k .* = 1.5"), (0, 1.5, "top_p=1.5")])
def test_top_k_and_top_p_are_checked(top_k, top_p, match):
  with pytest.raises(ValueError, match=match):
    sampling_lib.Sampling(0.6, top_k, top_p)


def test_greedy_and_the_release_settings_are_accepted():
  assert sampling_lib.Sampling(0).temperature == 0
  assert sampling_lib.Sampling(0.6, 40, 0.9).top_k == 40


@pytest.mark.parametrize("field", ["max_new_tokens", "max_step_tokens"])
@pytest.mark.parametrize("budget", [0, -5, 2.5])
def test_token_budgets_below_one_are_refused(field, budget):
  with pytest.raises(ValueError, match=rf"SearchConfig.{field} \(config.search.{field}\) = {budget}: expected "
                                       r"a whole number >= 1"):
    search.SearchConfig(**{field: budget})


@pytest.mark.parametrize("budget", [0, -5])
def test_a_surrogate_answer_budget_below_one_is_refused(budget):
  with pytest.raises(ValueError, match=rf"surrogate answer's max_new_tokens \(infer --max_new_tokens\) = {budget}"):
    surrogate_answer.ask(None, None, None, None, [2], [0], "track", 1, budget)


@pytest.fixture
def infer_flags():
  """Parse infer's flags in this process; unparsed after the test."""
  def parse(*argv):
    flags.FLAGS(["infer", "--workdir=/nonexistent/workdir", *argv])
  yield parse
  flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("flag, message", [
    ("--temperature=nan", "--temperature must be a finite number >= 0"),
    ("--temperature=-1", "--temperature must be a finite number >= 0"),
    ("--top_p=0", r"--top_p must be in \(0, 1\]"), ("--top_k=-2", "--top_k must be >= 0"),
    ("--max_new_tokens=0", "--max_new_tokens must be >= 1"), ("--max_new_tokens=-5", "--max_new_tokens must be >= 1"),
    ("--num_candidates=0", "--num_candidates must be >= 1")])
def test_infer_refuses_bad_settings_when_parsing_its_flags(infer_flags, flag, message):
  with pytest.raises(flags.IllegalFlagValueError, match=message):
    infer_flags(flag)


@pytest.mark.parametrize("request_text", ["track -1", "5.5", "track 3 and 5", "track snitch at frame 2.5"])
def test_infer_refuses_a_surrogate_request_outside_the_grammar_before_loading_the_run(infer_flags, request_text):
  infer_flags(f"--surrogate={request_text}")
  with pytest.raises(app.UsageError, match=r"--surrogate: .*expected '<task> \[words\] <frame>\[\?\]'"):
    infer.main([])


def test_a_question_that_is_not_utf8_is_named(infer_flags):
  question = b"Where is the caf\xe9?".decode("utf-8", "surrogateescape")  # as Python reads such argv bytes
  infer_flags("--video=clip.mp4", f"--question={question}")
  with pytest.raises(app.UsageError, match=r"--question is not valid UTF-8: byte e9 at character 16"):
    infer.main([])
  with pytest.raises(ValueError, match=r"text to encode is not valid UTF-8: byte e9"):
    tokenizer_lib.utf8_text(question, "text to encode")


def test_infer_names_a_non_utf8_question_given_as_bytes():
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  done = subprocess.run([sys.executable, "-m", "lrr_jax.infer", "--workdir=/nonexistent", "--video=clip.mp4",
                         b"--question=Where is the caf\xe9?"], capture_output=True, timeout=120, cwd=ROOT, env=env)
  assert done.returncode != 0
  assert b"--question is not valid UTF-8: byte e9 at character 16" in done.stderr, done.stderr[-2000:]
