"""Stage-level beam search: our shared-cache, batched search against the LLaVA-CoT release's way of running it.

  python -m benchmarks.stage_search_speed --size=tiny --num_candidates=10 --out=benchmarks/results/stage_search.json

The release, per stage: N candidates one after another, each a full `generate` that re-encodes the image and
the whole prefix; then N-1 judge calls, one at a time, each re-encoding the image. Ours: the video and prompt
encoded once, N candidates decoded as one batch from the shared cache, each tournament round's comparisons
one batch. Both run the same model with the same jitted kernels (the baseline's shapes are padded and
compiled in an untimed first pass), and the same work: every candidate samples exactly `--step_tokens`
tokens (no stop sequence can fire), so the ratio measures the strategy, not the luck of the draw.
Reported: medians over repetitions, measured side by side in one run.
"""


from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import scorers
from lrr_jax.inference import search
from lrr_jax.models import lrr

flags.DEFINE_enum("size", "tiny", ["tiny", "small"], "Model: 'tiny' (the CPU demo's) or 'small' (OPT-shaped, 4 "
                  "layers of 256, 64x64 frames).")
flags.DEFINE_integer("num_candidates", 10, "Candidates per stage (the release: 10).")
flags.DEFINE_integer("step_tokens", 24, "Tokens each candidate samples per stage.")
flags.DEFINE_integer("prompt_tokens", 48, "Prompt length.")
flags.DEFINE_integer("repetitions", 3, "Timed repetitions of each method.")
flags.DEFINE_string("out", "benchmarks/results/stage_search.json", "Where the JSON results go.")

NEVER = [[-5]]  # a stop sequence no token matches: candidates run to the token budget


def build(size: str, tokenizer: tokenizer_lib.Tokenizer):
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


def release_style(generator, tokenizer, variables, video, prompt, num_candidates, step_tokens, rng):
  """Per stage: N sequential full generations (video and prefix re-encoded), then N-1 single judge calls."""
  prefix: list[int] = []
  last_frame = video.shape[0] - 1
  for name in rationales.STAGES:
    opening = tokenizer.token_id(f"<{name}>")
    candidates, candidate_ids = [], []
    for _ in range(num_candidates):
      rng, key = jax.random.split(rng)
      ids = prompt + prefix + [opening]
      padded = generate_lib.left_pad([ids], [[last_frame] * len(ids)], tokenizer.pad_id, multiple=64)
      visual = generator.encode_video(variables, jnp.asarray(video)[None])
      state = generator.start(variables, padded, visual)
      _, sampled = generator.sample(variables, state, key, jnp.asarray(generate_lib.stop_table(NEVER)), last_frame,
                                    max_new_tokens=step_tokens, sampling=generate_lib.Sampling(0.6, 0, 0.9))
      row = np.asarray(sampled.tokens[0, :int(sampled.lengths[0])]).tolist()
      candidates.append(scorers.Candidate(tokenizer.decode(prompt + prefix), tokenizer.decode(row), 0.0, False))
      candidate_ids.append([opening] + row)

    def one_at_a_time(context, stage, pairs):
      winners = []
      for pair in pairs:  # the release: one judge call per comparison, the image encoded again each time
        context.visual = generator.encode_video(variables, jnp.asarray(video)[None])
        winners += scorers.model_compare(context, stage, [pair])[0]
      return winners, 0

    context = scorers.Context(generator, tokenizer, variables, None, "Where is the snitch?", last_frame)
    ranking = scorers.Judge(one_at_a_time).rank(context, name, candidates, np.random.default_rng(0))
    prefix += candidate_ids[ranking.order[0]]
  return prefix


def ours(searcher, variables, video, prompt):
  result = searcher(variables, video, prompt, [video.shape[0] - 1] * len(prompt), "Where is the snitch?")
  return result


def main(argv):
  del argv
  f = flags.FLAGS
  texts = ["frame 0: <detect> snitch 0,1; brown cone 3,1. Since both were read, I choose response 1 2"] * 4
  tokenizer = tokenizer_lib.train_bpe(texts, 300)
  model, variables, video = build(f.size, tokenizer)
  prompt = [tokenizer.eos_id] + list(np.random.default_rng(1).integers(70, tokenizer.vocab_size, f.prompt_tokens - 1))
  cache = f.prompt_tokens + 4 * (f.step_tokens + 1) + 64
  generator = generate_lib.Generator(model, cache)
  config = search.SearchConfig(strategy="stage_beam", num_candidates=f.num_candidates, max_step_tokens=f.step_tokens,
                               max_new_tokens=4 * f.step_tokens)
  searcher = search.Searcher(generator, tokenizer, config, scorers.Judge())
  searcher.stage_tags = [(name, opening, -5) for name, opening, _ in searcher.stage_tags]  # never stop early
  baseline_generator = generate_lib.Generator(model, cache + 64)
  run_ours = lambda: ours(searcher, variables, video, prompt).generated_tokens
  run_release = lambda: len(release_style(baseline_generator, tokenizer, variables, video, prompt,
                                          f.num_candidates, f.step_tokens, jax.random.key(0)))
  run_ours(), run_release()  # compile every shape once
  ours_seconds, release_seconds = common.alternating_medians(run_ours, run_release, f.repetitions)
  result = dict(size=f.size, num_candidates=f.num_candidates, step_tokens=f.step_tokens, prompt_tokens=f.prompt_tokens,
                ours_seconds=ours_seconds, release_style_seconds=release_seconds,
                device=str(jax.devices()[0].device_kind))
  result["speedup"] = result["release_style_seconds"] / result["ours_seconds"]
  common.write_result(
      f.out, result,
      f"stage-level search, {f.size} model, N={f.num_candidates}, {f.step_tokens} tokens per candidate and stage: "
      f"ours {result['ours_seconds']:.2f} s, release-style {result['release_style_seconds']:.2f} s -> "
      f"{result['speedup']:.1f}x faster (median of {f.repetitions}, {result['device']})")


if __name__ == "__main__":
  app.run(main)
