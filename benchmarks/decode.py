"""Decoding speed: our cached `Generator` against Hugging Face `generate`, and shared-prefix stage candidates.

  python -m benchmarks.decode --size=tiny --out=benchmarks/results/decode_tiny.json
  python -m benchmarks.decode --size=opt-125m --repetitions=3 --out=benchmarks/results/decode_opt-125m.json

(a) Greedy decoding, the same model on both sides: a random `OPTForCausalLM` is saved with `save_pretrained`
and read back with `lrr_jax.convert.hf_opt`. Both decode the same prompts (same length, no padding) for exactly
the same number of new tokens (HF: `use_cache=True`, `min_new_tokens = max_new_tokens`, no end-of-sequence
token, so nothing stops early or is suppressed; ours: a stop sequence no token matches). Before any timing the
two must produce the same greedy tokens (an assertion: that is the correctness check). Prefill included,
compilation excluded (warm-up first); medians, ours and theirs alternately.

Ours runs text-only: an `LRRModel` without cross-attention layers, its decoder's params those read from the
checkpoint and no video (`Generator.start(..., visual=None)`); the video encoder's params are never read.

(b) One stage of stage-level beam search: N candidates of `--step_tokens` from a prefix of `--prefix_tokens`.
Ours: the prefix prefilled once, its `DecodeState` rows repeated (`select_rows`) and the N candidates decoded
as one batch. Against: N independent generations from scratch (prefill + decode, one row at a time, as the
LLaVA-CoT release runs them), and the same N from scratch as one batch (the prefix prefilled N times). Greedy,
so that every candidate must equal the from-scratch tokens (asserted on the timed runs' outputs).
"""
import pathlib
import tempfile


from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from lrr_jax.convert import hf_opt
from lrr_jax.inference import generate as generate_lib
from lrr_jax.models import lrr

# Hugging Face OPTConfig fields per size; 'opt-125m' is OPT-125M's shape (random weights, HF's default init).
SIZES = {"tiny": dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128),
         "opt-125m": dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          ffn_dim=3072)}
NEVER = jnp.asarray(generate_lib.stop_table([[-5]]))  # a stop sequence no token matches
PAD_ID = 1  # OPT's


def save_random_opt(directory: str | pathlib.Path, size: str, max_positions: int, seed: int = 0):
  """A random `OPTForCausalLM` of `size` saved with `save_pretrained` to `directory`; returns it in eval mode."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  config = transformers.OPTConfig(**SIZES[size], max_position_embeddings=max_positions, dropout=0.0,
                                  attention_dropout=0.0, pad_token_id=PAD_ID)
  model = transformers.OPTForCausalLM(config).eval()
  model.save_pretrained(directory)
  return model


def load_ours(directory: str | pathlib.Path, cache_length: int) -> tuple[generate_lib.Generator, dict]:
  """Our text-only generator and variables for the Hugging Face checkpoint in `directory`."""
  decoder_config, params = hf_opt.load_hf_opt(directory)  # no cross-attention layers
  model = lrr.LRRModel(lrr.LRRConfig(decoder=decoder_config))
  return generate_lib.Generator(model, cache_length), {"params": {"decoder": jax.tree.map(jnp.asarray, params)}}


def random_prompts(vocab_size: int, batch: int, length: int, seed: int = 0) -> np.ndarray:
  """int32[batch, length] token ids, none of them padding or a special token."""
  return np.random.default_rng(seed).integers(3, vocab_size, (batch, length)).astype(np.int32)


def prefill(generator: generate_lib.Generator, variables, prompts: np.ndarray) -> generate_lib.DecodeState:
  prompt = generate_lib.left_pad(prompts.tolist(), [[0] * prompts.shape[1]] * len(prompts), PAD_ID)
  return generator.start(variables, prompt, None)


def decode(generator: generate_lib.Generator, variables, state: generate_lib.DecodeState,
           new_tokens: int) -> np.ndarray:
  """Exactly `new_tokens` greedy tokens per row of `state`: int32[B, new_tokens]."""
  _, sampled = generator.sample(variables, state, jax.random.key(0), NEVER, 0, max_new_tokens=new_tokens,
                                sampling=generate_lib.Sampling())
  return np.asarray(sampled.tokens)


def our_greedy(generator: generate_lib.Generator, variables, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
  return decode(generator, variables, prefill(generator, variables, prompts), new_tokens)


def their_greedy(hf_model, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
  """Hugging Face greedy `generate` with its KV cache, exactly `new_tokens` per row: int[B, new_tokens]."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.GenerationConfig(do_sample=False, num_beams=1, use_cache=True, max_new_tokens=new_tokens,
                                         min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=PAD_ID)
  ids = torch.as_tensor(prompts, dtype=torch.long)
  with torch.no_grad():
    out = hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
  return out[:, prompts.shape[1]:].numpy()


def check_same_greedy_tokens(generator, variables, hf_model, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
  """Our greedy tokens, asserted equal to Hugging Face's (and exactly `new_tokens` per row)."""
  ours, theirs = our_greedy(generator, variables, prompts, new_tokens), their_greedy(hf_model, prompts, new_tokens)
  if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
    rows, columns = np.nonzero(ours != theirs) if ours.shape == theirs.shape else ([], [])
    raise AssertionError(f"Greedy tokens differ from Hugging Face's: shapes {ours.shape} vs {theirs.shape}, "
                         f"first difference at (row, token) {list(zip(rows, columns))[:1]}.")
  return ours


def greedy_row(generator, variables, hf_model, vocab_size: int, batch: int, f) -> dict:
  """(a) for one batch size: the correctness check, then tokens/s of both, measured alternately."""
  prompts = random_prompts(vocab_size, batch, f.prompt_tokens, seed=batch)
  check_same_greedy_tokens(generator, variables, hf_model, prompts, f.new_tokens)  # also the warm-up
  timing = common.alternating_medians_over_threads(
      lambda: our_greedy(generator, variables, prompts, f.new_tokens),
      lambda: their_greedy(hf_model, prompts, f.new_tokens), common.parse_threads(f.threads), f.repetitions)
  tokens = batch * f.new_tokens
  return dict(batch=batch, prompt_tokens=f.prompt_tokens, new_tokens=f.new_tokens, same_greedy_tokens=True,
              ours_s=timing["ours_s"], hf_s=timing["theirs_s"], ours_tokens_per_s=tokens / timing["ours_s"],
              hf_tokens_per_s=tokens / timing["theirs_s"], ratio_ours_over_theirs=timing["theirs_s"] / timing["ours_s"],
              hf_torch_threads=timing["torch_threads"], by_torch_threads=timing["by_threads"])


def stage_row(generator, variables, vocab_size: int, num_candidates: int, f) -> dict:
  """(b) for N candidates: shared prefix cache against N independent generations, one by one and batched."""
  prefix = random_prompts(vocab_size, 1, f.prefix_tokens, seed=100)
  shared = prefill(generator, variables, prefix)  # what a search has in hand when a stage starts
  rows = [0] * num_candidates
  methods = {
      "ours_shared_prefix": lambda: decode(generator, variables, generate_lib.select_rows(
          prefill(generator, variables, prefix), rows), f.step_tokens),
      "ours_from_prefix_cache": lambda: decode(generator, variables, generate_lib.select_rows(shared, rows),
                                               f.step_tokens),
      "independent_one_by_one": lambda: np.concatenate(
          [our_greedy(generator, variables, prefix, f.step_tokens) for _ in rows]),
      "independent_batched": lambda: our_greedy(generator, variables, np.repeat(prefix, num_candidates, 0),
                                                f.step_tokens),
  }
  outputs = {name: run() for name, run in methods.items()}  # compile, and check
  for name, tokens in outputs.items():
    np.testing.assert_array_equal(tokens, outputs["independent_one_by_one"], err_msg=name)
  medians = {f"{name}_s": t for name, t in common.interleaved_medians(methods, f.repetitions).items()}
  return dict(num_candidates=num_candidates, prefix_tokens=f.prefix_tokens, step_tokens=f.step_tokens, **medians,
              speedup_vs_one_by_one=medians["independent_one_by_one_s"] / medians["ours_shared_prefix_s"],
              speedup_vs_batched=medians["independent_batched_s"] / medians["ours_shared_prefix_s"],
              speedup_from_cache_vs_one_by_one=medians["independent_one_by_one_s"]
              / medians["ours_from_prefix_cache_s"])


def run(f) -> dict:
  """Both parts for `f.size`; returns the result dict (see the module docstring)."""
  max_positions = max(f.prompt_tokens + f.new_tokens, f.prefix_tokens + f.step_tokens) + 8
  with tempfile.TemporaryDirectory() as directory:
    hf_model = save_random_opt(directory, f.size, max_positions)
    greedy_generator, variables = load_ours(directory, f.prompt_tokens + f.new_tokens)
  vocab_size = SIZES[f.size]["vocab_size"]
  greedy = [greedy_row(greedy_generator, variables, hf_model, vocab_size, int(batch), f) for batch in f.batches]
  for row in greedy:
    print(f"greedy {f.size}, batch {row['batch']}: ours {row['ours_tokens_per_s']:.0f} tokens/s, HF "
          f"{row['hf_tokens_per_s']:.0f} tokens/s ({row['hf_torch_threads']} torch threads) -> "
          f"{row['ratio_ours_over_theirs']:.2f}x", flush=True)
  stage_generator = generate_lib.Generator(greedy_generator.model, f.prefix_tokens + f.step_tokens)
  stages = [stage_row(stage_generator, variables, vocab_size, int(n), f) for n in f.num_candidates]
  return dict(size=f.size, config=SIZES[f.size], repetitions=f.repetitions, greedy=greedy, stage=stages)


def summary(result: dict) -> str:
  greedy = ", ".join(f"batch {r['batch']} {r['ours_tokens_per_s']:.0f} vs {r['hf_tokens_per_s']:.0f} tokens/s "
                     f"({r['ratio_ours_over_theirs']:.2f}x)" for r in result["greedy"])
  stage = ", ".join(f"N={r['num_candidates']} {r['speedup_vs_one_by_one']:.1f}x vs one by one, "
                    f"{r['speedup_vs_batched']:.1f}x vs batched" for r in result["stage"])
  return (f"decode {result['size']} (median of {result['repetitions']}): greedy ours vs HF generate, same tokens: "
          f"{greedy}; stage candidates from a shared prefix: {stage}")


def main(argv):
  del argv
  result = run(flags.FLAGS)
  common.write_result(flags.FLAGS.out, result, summary(result))


if __name__ == "__main__":
  # Flags are defined here, not at import: the smoke test imports this module beside lrr_jax's own flags.
  flags.DEFINE_enum("size", "tiny", list(SIZES), "Model size (random weights).")
  flags.DEFINE_list("batches", ["1", "8"], "Batch sizes of the greedy comparison.")
  flags.DEFINE_integer("prompt_tokens", 32, "Prompt length of the greedy comparison.")
  flags.DEFINE_integer("new_tokens", 64, "Tokens each row generates in the greedy comparison.")
  flags.DEFINE_list("num_candidates", ["4", "10"], "Candidates per stage in the stage comparison.")
  flags.DEFINE_integer("prefix_tokens", 128, "Prefix (prompt and earlier stages) before the stage.")
  flags.DEFINE_integer("step_tokens", 32, "Tokens each candidate generates in the stage.")
  flags.DEFINE_integer("repetitions", 5, "Timed repetitions of each method (medians are reported).")
  flags.DEFINE_list("threads", ["0"], "torch intra-op thread counts to try (0: torch's default); HF's fastest "
                    "is the reference (see common.alternating_medians_over_threads).")
  flags.DEFINE_string("out", "benchmarks/results/decode.json", "Where the JSON results go.")
  app.run(main)
