"""The decode benchmark's correctness check at the tiniest size: our cached greedy tokens equal HF `generate`'s."""
import numpy as np

from benchmarks import decode


def test_decode_benchmark_greedy_tokens_equal_hugging_face(tmp_path):
  hf_model = decode.save_random_opt(tmp_path, "tiny", max_positions=32)
  generator, variables = decode.load_ours(tmp_path, cache_length=16)
  prompts = decode.random_prompts(decode.SIZES["tiny"]["vocab_size"], batch=2, length=8)
  tokens = decode.check_same_greedy_tokens(generator, variables, hf_model, prompts, new_tokens=8)
  assert tokens.shape == (2, 8) and len(np.unique(tokens)) > 1  # not a degenerate all-equal output
