"""Benchmarks at the tiniest size: the decode benchmark's correctness check (our cached greedy tokens equal HF
`generate`'s) and the stage-level search against the release's way in Hugging Face (`--peer=hf`)."""
import numpy as np
import pytest
import torch

from benchmarks import decode
from benchmarks import release_hf
from benchmarks import stage_search_speed
from lrr_jax.data import tokenizer as tokenizer_lib

pytestmark = pytest.mark.slow  # benchmarks against torch


def test_decode_benchmark_greedy_tokens_equal_hugging_face(tmp_path):
  hf_model = decode.save_random_opt(tmp_path, "tiny", max_positions=32)
  generator, variables = decode.load_ours(tmp_path, cache_length=16)
  prompts = decode.random_prompts(decode.SIZES["tiny"]["vocab_size"], batch=2, length=8)
  tokens = decode.check_same_greedy_tokens(generator, variables, hf_model, prompts, new_tokens=8)
  assert tokens.shape == (2, 8) and len(np.unique(tokens)) > 1  # not a degenerate all-equal output


def test_stage_search_against_hugging_face_runs_with_equal_work():
  result = stage_search_speed.run_hf_peer("tiny", 0, num_candidates=2, step_tokens=3, prompt_tokens=8,
                                          repetitions=1)
  # run_hf_peer asserts that ours and the HF peer sampled the same tokens and kept responses of the same length
  assert result["same_greedy_tokens"] and result["sampled_tokens_per_search"] == 4 * 2 * 3
  assert all(result[k] > 0 for k in ("ours_seconds", "release_on_ours_seconds", "release_hf_seconds"))


def test_release_stopping_criterion_stops_at_the_closing_tag_only():
  tokenizer = tokenizer_lib.train_bpe(["the snitch is under the cone"], 300)
  stop = release_hf.StopOnStrings(["</SUMMARY>"], release_hf.hf_tokenizer(tokenizer))
  text = tokenizer.encode("the snitch")
  closing, other = tokenizer.token_id("</SUMMARY>"), tokenizer.token_id("</CAPTION>")
  assert stop(torch.as_tensor([text + [closing] + text]), None).tolist() == [True]
  assert stop(torch.as_tensor([text + [other]]), None).tolist() == [False]
