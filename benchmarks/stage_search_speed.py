"""Stage-level beam search: our shared-cache, batched search against the LLaVA-CoT release's way of running it.

  python -m benchmarks.stage_search_speed --size=tiny --out=benchmarks/results/stage_search_tiny.json
  python -m benchmarks.stage_search_speed --peer=hf --size=tiny --repetitions=5 \
      --out=benchmarks/results/stage_search_hf_tiny.json
  python -m benchmarks.stage_search_speed --peer=hf --size=opt-125m --num_layers=2 --repetitions=5 \
      --out=benchmarks/results/stage_search_hf_opt-125m.json

The release, per stage: N candidates one after another, each a full `generate` that re-encodes the image and
the whole prefix; then N-1 judge calls, one at a time, each re-encoding the image. Ours: the video and prompt
encoded once, N candidates decoded as one batch from the shared cache, each tournament round's comparisons
one batch. Every candidate samples exactly `--step_tokens` tokens (no stop sequence can fire), so the ratio
measures the strategy, not the luck of the draw. Reported: medians over repetitions, measured side by side in
one run.

`--peer=ours` (default): the LRR model with a video; the release's way re-built on our own compiled generator
(same jitted kernels; its shapes padded and compiled in an untimed first pass).

`--peer=hf`: a text-only OPT (`--size=tiny`, or OPT-125M's widths with `--num_layers` layers), random weights
saved by `transformers.OPTForCausalLM.save_pretrained` and read into ours with `hf_opt.load_hf_opt` (greedy
tokens asserted equal on both sides first). Three methods side by side: ours; the release's way on our
generator (as above); the release's way on its own stack, Hugging Face `generate` in PyTorch with its stopping
criterion (`benchmarks/release_hf.py`). Our side runs the decoder alone: the generator's `encode_video` gives
None, so no video is encoded and none is read (the decoder has no cross-attention layers). Same N, token budgets,
sampling (temperature 0.6, top-p 0.9, no top-k) and judge prompts on all three.
"""
import tempfile

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks import decode
from lrr_jax.convert import hf_opt
from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import scorers
from lrr_jax.inference import search
from lrr_jax.models import lrr

NEVER = [[-5]]  # a stop sequence no token matches: candidates run to the token budget
QUESTION = "Where is the snitch?"
JUDGE_TEXTS = ["frame 0: <detect> snitch 0,1; brown cone 3,1. Since both were read, I choose response 1 2",
               f"{QUESTION} Response so far: Response 1: Response 2: I choose response"]
HF_MAX_POSITIONS = 1024


def build(size: str, tokenizer: tokenizer_lib.Tokenizer):
  """The LRR model with a video (`--peer=ours`): 'tiny' (the CPU demo's) or 'small' (4 x 256, 64x64 frames)."""
  overrides = dict(vocab_size=tokenizer.vocab_size, max_positions=1024)
  if size == "small":
    overrides.update(hidden_size=256, num_layers=4, num_heads=4, ffn_dim=1024)
  config = lrr.lrr_config("tiny", dict(grid_size=256) if size == "small" else None, **overrides)
  frames, resolution = (8, 32) if size == "tiny" else (8, 64)
  model = lrr.LRRModel(config)
  video = np.random.default_rng(0).integers(0, 256, (frames, resolution, resolution, 3), dtype=np.uint8)
  tokens = np.ones((1, 4), np.int32)
  variables = jax.jit(model.init)(jax.random.key(0), tokens, tokens, tokens, tokens, video[None])
  return model, nn.unbox(variables), video


def synthetic_tokenizer(vocab_size: int, seed: int = 0) -> tokenizer_lib.Tokenizer:
  """A byte-level BPE of exactly `vocab_size` tokens (the model's vocabulary), stage tags as single tokens,
  trained on random lowercase words and the judge's phrases."""
  rng = np.random.default_rng(seed)
  letters = rng.integers(ord("a"), ord("z") + 1, (vocab_size, 8), dtype=np.uint8)
  words = [row[:n].tobytes().decode() for row, n in zip(letters, rng.integers(2, 9, vocab_size))]
  picks = rng.integers(0, vocab_size, (max(64, vocab_size // 16), 200))
  tokenizer = tokenizer_lib.train_bpe([" ".join(words[i] for i in row) for row in picks] + JUDGE_TEXTS * 4,
                                      vocab_size)
  if tokenizer.vocab_size != vocab_size:
    raise ValueError(f"The synthetic tokenizer has {tokenizer.vocab_size} tokens, not the model's {vocab_size}.")
  return tokenizer


def text_only_models(directory: str, size: str, num_layers: int, tokenizer: tokenizer_lib.Tokenizer):
  """A random `OPTForCausalLM` of `size` (decode.SIZES; `num_layers` > 0 overrides its depth) saved with
  `save_pretrained` to `directory`, and the same weights read into our text-only model with `load_hf_opt`.

  Returns (hf_model in eval mode, its Hugging Face config as a dict, our LRRModel, our variables).
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config = dict(decode.SIZES[size], vocab_size=tokenizer.vocab_size)
  if num_layers:
    config["num_hidden_layers"] = num_layers
  torch.manual_seed(0)
  hf_model = transformers.OPTForCausalLM(transformers.OPTConfig(
      **config, max_position_embeddings=HF_MAX_POSITIONS, dropout=0.0, attention_dropout=0.0,
      pad_token_id=tokenizer.pad_id, bos_token_id=tokenizer.eos_id, eos_token_id=tokenizer.eos_id)).eval()
  hf_model.save_pretrained(directory)
  decoder_config, params = hf_opt.load_hf_opt(directory)  # no cross-attention layers
  model = lrr.LRRModel(lrr.LRRConfig(decoder=decoder_config))
  return hf_model, config, model, {"params": {"decoder": jax.tree.map(jnp.asarray, params)}}


def text_only(generator: generate_lib.Generator) -> generate_lib.Generator:
  """`generator` with no video: `encode_video` gives None, so nothing is encoded and every call runs the
  decoder alone (for a model without cross-attention layers)."""
  generator.encode_video = lambda variables, video: None
  return generator


def make_searcher(generator, tokenizer, num_candidates: int, step_tokens: int, top_p: float = 0.9
                  ) -> search.Searcher:
  """Ours: stage-level search with the judge, every candidate running to `step_tokens`: neither a closing tag
  nor </s> stops it (both replaced by ids no token matches; </s>'s by one beyond the vocabulary, which decodes
  to nothing)."""
  config = search.SearchConfig(strategy="stage_beam", num_candidates=num_candidates, max_step_tokens=step_tokens,
                               max_new_tokens=4 * step_tokens, sampling=generate_lib.Sampling(0.6, 0, top_p))
  searcher = search.Searcher(generator, tokenizer, config, scorers.Judge())
  searcher.stage_tags = [(name, opening, -5) for name, opening, _ in searcher.stage_tags]  # never stop early
  searcher.eos = tokenizer.vocab_size
  return searcher


def release_style(generator, tokenizer, variables, video, prompt, num_candidates, step_tokens, rng, top_p=0.9):
  """Per stage: N sequential full generations (video and prefix re-encoded), then N-1 single judge calls."""
  prefix: list[int] = []
  last_frame = video.shape[0] - 1
  for name in rationales.STAGES:
    opening = tokenizer.token_id(f"<{name}>")
    so_far = tokenizer.decode(prefix + [opening])  # the response so far, as our judge is shown it
    candidates, candidate_ids = [], []
    for _ in range(num_candidates):
      rng, key = jax.random.split(rng)
      ids = prompt + prefix + [opening]
      padded = generate_lib.left_pad([ids], [[last_frame] * len(ids)], tokenizer.pad_id, multiple=64)
      visual = generator.encode_video(variables, jnp.asarray(video)[None])
      state = generator.start(variables, padded, visual)
      _, sampled = generator.sample(variables, state, key, jnp.asarray(generate_lib.stop_table(NEVER)), last_frame,
                                    max_new_tokens=step_tokens, sampling=generate_lib.Sampling(0.6, 0, top_p))
      row = np.asarray(sampled.tokens[0, :int(sampled.lengths[0])]).tolist()
      candidates.append(scorers.Candidate(so_far, tokenizer.decode(row), 0.0, False))
      candidate_ids.append([opening] + row)

    def one_at_a_time(context, stage, pairs):
      winners = []
      for pair in pairs:  # the release: one judge call per comparison, the image encoded again each time
        context.visual = generator.encode_video(variables, jnp.asarray(video)[None])
        winners += scorers.model_compare(context, stage, [pair])[0]
      return winners, 0

    context = scorers.Context(generator, tokenizer, variables, None, QUESTION, last_frame)
    ranking = scorers.Judge(one_at_a_time).rank(context, name, candidates, np.random.default_rng(0))
    prefix += candidate_ids[ranking.order[0]]
  return prefix


def ours(searcher, variables, video, prompt):
  return searcher(variables, video, prompt, [video.shape[0] - 1] * len(prompt), QUESTION)


def random_prompt(tokenizer: tokenizer_lib.Tokenizer, length: int) -> list[int]:
  """</s> and `length - 1` random ordinary tokens (no special token: those come first in our tokenizers)."""
  first = len(tokenizer_lib.TAGS) + len(tokenizer_lib.FRAME_MARKERS) + 2
  return [tokenizer.eos_id] + np.random.default_rng(1).integers(first, tokenizer.vocab_size, length - 1).tolist()


def run_with_video(size: str, num_candidates: int, step_tokens: int, prompt_tokens: int,
                   repetitions: int) -> dict:
  """`--peer=ours`: ours against the release's way on our generator, the LRR model with a video."""
  tokenizer = tokenizer_lib.train_bpe(JUDGE_TEXTS[:1] * 4, 300)
  model, variables, video = build(size, tokenizer)
  prompt = random_prompt(tokenizer, prompt_tokens)
  cache = prompt_tokens + 4 * (step_tokens + 1) + 64
  searcher = make_searcher(generate_lib.Generator(model, cache), tokenizer, num_candidates, step_tokens)
  baseline_generator = generate_lib.Generator(model, cache + 64)
  run_ours = lambda: ours(searcher, variables, video, prompt).generated_tokens
  run_release = lambda: len(release_style(baseline_generator, tokenizer, variables, video, prompt,
                                          num_candidates, step_tokens, jax.random.key(0)))
  run_ours(), run_release()  # compile every shape once
  ours_seconds, release_seconds = common.alternating_medians(run_ours, run_release, repetitions)
  return dict(peer="ours", size=size, num_candidates=num_candidates, step_tokens=step_tokens,
              prompt_tokens=prompt_tokens, repetitions=repetitions, ours_seconds=ours_seconds,
              release_style_seconds=release_seconds, speedup=release_seconds / ours_seconds)


def run_hf_peer(size: str, num_layers: int, num_candidates: int, step_tokens: int, prompt_tokens: int,
                repetitions: int, torch_threads: int = 1, top_p: float = 0.9) -> dict:
  """`--peer=hf`: ours, the release's way on our generator and the release's way in Hugging Face, side by side
  on the same text-only OPT weights (see the module's docstring). torch_threads 0: torch's default."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import release_hf  # pylint: disable=g-import-not-at-top
  if torch_threads:
    torch.set_num_threads(torch_threads)
  tokenizer = synthetic_tokenizer(decode.SIZES[size]["vocab_size"])
  with tempfile.TemporaryDirectory() as directory:
    hf_model, hf_config, model, variables = text_only_models(directory, size, num_layers, tokenizer)
  prompt = random_prompt(tokenizer, prompt_tokens)
  cache = prompt_tokens + 4 * (step_tokens + 1) + 64
  generator = text_only(generate_lib.Generator(model, cache))
  decode.check_same_greedy_tokens(generator, variables, hf_model, np.asarray([prompt], np.int32), 8)
  searcher = make_searcher(generator, tokenizer, num_candidates, step_tokens, top_p)
  baseline_generator = text_only(generate_lib.Generator(model, cache + 64))
  video = np.zeros((1, 1, 1, 3), np.uint8)  # never encoded (text only): it sets the last frame, 0
  context = scorers.Context(generator, tokenizer, variables, None, QUESTION, 0)
  peer = release_hf.ReleaseStageSearch(hf_model, tokenizer, context, num_candidates, step_tokens, (0.6, top_p))
  runs = {
      "ours": lambda: ours(searcher, variables, video, prompt).generated_tokens,
      "release_on_ours": lambda: len(release_style(baseline_generator, tokenizer, variables, video, prompt,
                                                   num_candidates, step_tokens, jax.random.key(0), top_p)),
      "release_hf": lambda: len(peer.search(prompt, np.random.default_rng(0))),
  }
  work = {name: run() for name, run in runs.items()}  # compile every shape once; check the work is the same
  expected = len(rationales.STAGES) * num_candidates * step_tokens
  if work["ours"] != expected or peer.generated_tokens != expected or work["release_on_ours"] != work["release_hf"]:
    raise AssertionError(f"Unequal work: ours sampled {work['ours']} tokens, the HF peer {peer.generated_tokens}, "
                         f"expected {expected}; kept responses of {work['release_on_ours']} / "
                         f"{work['release_hf']} tokens.")
  seconds = common.interleaved_medians(runs, repetitions)
  return dict(peer="hf", size=size, hf_config=hf_config, num_candidates=num_candidates, step_tokens=step_tokens,
              prompt_tokens=prompt_tokens, repetitions=repetitions, top_p=top_p, torch_threads=torch.get_num_threads(),
              same_greedy_tokens=True, sampled_tokens_per_search=expected,
              ours_seconds=seconds["ours"], release_on_ours_seconds=seconds["release_on_ours"],
              release_hf_seconds=seconds["release_hf"],
              speedup_vs_release_hf=seconds["release_hf"] / seconds["ours"],
              speedup_vs_release_on_ours=seconds["release_on_ours"] / seconds["ours"])


def summary(result: dict) -> str:
  head = (f"stage-level search, {result['size']} model, N={result['num_candidates']}, {result['step_tokens']} "
          f"tokens per candidate and stage (median of {result['repetitions']}): ours {result['ours_seconds']:.2f} s")
  if result["peer"] == "ours":
    return (f"{head}, release-style on our generator {result['release_style_seconds']:.2f} s -> "
            f"{result['speedup']:.1f}x faster")
  layers = result["hf_config"]["num_hidden_layers"]
  return (f"{head} ({layers} layers, text only), the release's way in HF transformers "
          f"{result['release_hf_seconds']:.2f} s ({result['torch_threads']} torch threads) -> "
          f"{result['speedup_vs_release_hf']:.1f}x faster; on our generator {result['release_on_ours_seconds']:.2f} s "
          f"-> {result['speedup_vs_release_on_ours']:.1f}x faster")


def main(argv):
  del argv
  f = flags.FLAGS
  sizes = {"ours": ("tiny", "small"), "hf": tuple(decode.SIZES)}[f.peer]
  if f.size not in sizes:
    raise app.UsageError(f"--size={f.size} with --peer={f.peer}: expected one of {sizes}.")
  if f.peer == "hf":
    result = run_hf_peer(f.size, f.num_layers, f.num_candidates, f.step_tokens, f.prompt_tokens, f.repetitions,
                         f.torch_threads, f.top_p)
  else:
    result = run_with_video(f.size, f.num_candidates, f.step_tokens, f.prompt_tokens, f.repetitions)
  common.write_result(f.out, result, summary(result))


if __name__ == "__main__":
  # Flags are defined here, not at import: the smoke test imports this module beside lrr_jax's own flags.
  flags.DEFINE_enum("peer", "ours", ["ours", "hf"], "The release's way on our generator only ('ours'), or also "
                    "in Hugging Face transformers on a text-only OPT ('hf').")
  flags.DEFINE_enum("size", "tiny", ["tiny", "small", "opt-125m"], "--peer=ours: 'tiny' (the CPU demo's) or "
                    "'small' (4 layers of 256, 64x64 frames); --peer=hf: 'tiny' (2 x 64) or 'opt-125m' (its widths).")
  flags.DEFINE_integer("num_layers", 0, "--peer=hf: decoder layers (0: the size's own, opt-125m: 12).")
  flags.DEFINE_integer("num_candidates", 10, "Candidates per stage (the release: 10).")
  flags.DEFINE_integer("step_tokens", 24, "Tokens each candidate samples per stage.")
  flags.DEFINE_integer("prompt_tokens", 48, "Prompt length.")
  flags.DEFINE_integer("repetitions", 3, "Timed repetitions of each method.")
  flags.DEFINE_integer("torch_threads", 1, "--peer=hf: torch intra-op threads (0: torch's default; on a loaded "
                       "machine 1 is torch's fastest, see benchmarks/README.md).")
  flags.DEFINE_float("top_p", 0.9, "--peer=hf: nucleus sampling on all three sides (the release: 0.9; 1.0: "
                     "temperature alone, which skips sorting the vocabulary at every token).")
  flags.DEFINE_string("out", "benchmarks/results/stage_search.json", "Where the JSON results go.")
  app.run(main)
