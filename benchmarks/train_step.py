"""Train-step throughput of our OPT decoder against Hugging Face's PyTorch `OPTForCausalLM`, and MFU.

  python -m benchmarks.train_step --shapes=tiny,opt-125m --repetitions=5 --threads=1,2 --breakdown \
      --out=benchmarks/results/train_step_tiny_opt-125m.json
  python -m benchmarks.train_step --shapes=deep --repetitions=5 --threads=1,2 --breakdown \
      --out=benchmarks/results/train_step_deep.json

Same configuration (cross-attention off, no dropout), batch and sequence length; forward + backward + AdamW;
medians over repetitions, the two measured alternately in one run. Model FLOPs per step: 6 x (matmul params per
token) x tokens + the attention score and value products (x3 for the backward), against the peak matmul rate
measured on the same machine (a large float32 `jnp.dot`, median of repetitions). `--breakdown` also times the
forward (loss) and forward + backward alone, all six in turn in each repetition (`breakdown` in the JSON), so
the backward's and the optimizer's shares are differences of medians measured under the same load.
Needs the `test` extra (torch).
"""


from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from lrr_jax.models import decoder as decoder_lib

flags.DEFINE_list("shapes", ["tiny", "opt-125m", "deep"], "Decoder shapes: " + ", ".join(
    ["tiny", "opt-125m (12 x 768, vocab 50272)", "deep (24 x 256, vocab 50272)"]))
flags.DEFINE_integer("batch", 0, "Sequences per step (0: the shape's default, see SHAPES).")
flags.DEFINE_integer("length", 0, "Tokens per sequence (0: the shape's default).")
flags.DEFINE_integer("repetitions", 5, "Timed steps of each implementation (medians are reported).")
flags.DEFINE_list("threads", ["0"], "torch intra-op thread counts to try (0: torch's default); Hugging Face is "
                  "timed at each, alternating with ours, and its fastest is the reference. On a loaded machine "
                  "torch's OpenMP threads wait on descheduled peers: 2 threads can be ~80x slower than 1.")
flags.DEFINE_bool("breakdown", False, "Also time the forward and the forward + backward alone, for both.")
flags.DEFINE_string("out", "benchmarks/results/train_step.json", "Where the JSON results go.")

# name -> (base config, overrides, default batch, default length); batch x length keep a step to seconds here.
SHAPES = {"tiny": ("tiny", {}, 4, 128),
          "opt-125m": ("opt-125m", {}, 2, 128),
          "deep": ("opt-125m", dict(hidden_size=256, num_layers=24, num_heads=4, ffn_dim=1024), 2, 128)}


def model_flops(cfg: decoder_lib.DecoderConfig, batch: int, length: int) -> float:
  """Training FLOPs of one step: 3 x forward (matmuls and attention products)."""
  per_layer = 4 * cfg.hidden_size ** 2 + 2 * cfg.hidden_size * cfg.ffn_dim
  matmul_params = cfg.num_layers * per_layer + cfg.vocab_size * cfg.hidden_size
  attention = cfg.num_layers * 2 * length * cfg.hidden_size  # QK^T and AV, per token
  return 3 * 2 * (matmul_params + attention) * batch * length


def peak_matmul_flops(size: int = 2048, repetitions: int = 5) -> float:
  a = jnp.ones((size, size), jnp.float32)
  dot = jax.jit(lambda x, y: x @ y)
  dot(a, a).block_until_ready()
  return 2 * size ** 3 / common.median_seconds(lambda: dot(a, a), repetitions)


def ours(cfg: decoder_lib.DecoderConfig, tokens: np.ndarray):
  """A jitted step (donating params and optimizer state), its state, and jitted forward / forward+backward."""
  model = decoder_lib.Decoder(cfg)
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  segments = np.ones_like(tokens)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens, positions, segments))["params"]
  optimizer = optax.adamw(1e-4)
  state = (params, optimizer.init(params))

  def loss_fn(params):
    logits, _ = model.apply({"params": params}, tokens[:, :-1], positions[:, :-1], segments[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  def step(state):
    params, opt_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  parts = {"forward": jax.jit(loss_fn), "forward_backward": jax.jit(jax.value_and_grad(loss_fn))}
  return jax.jit(step, donate_argnums=(0,)), state, parts


def theirs(cfg: decoder_lib.DecoderConfig, tokens: np.ndarray):
  """Hugging Face's step (zero_grad, forward, backward, AdamW) and its forward / forward+backward alone."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  hf = transformers.OPTForCausalLM(transformers.OPTConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, ffn_dim=cfg.ffn_dim, max_position_embeddings=cfg.max_positions,
      word_embed_proj_dim=cfg.hidden_size, dropout=0.0, attention_dropout=0.0)).train()
  optimizer = torch.optim.AdamW(hf.parameters(), lr=1e-4)
  ids = torch.as_tensor(tokens, dtype=torch.long)

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = hf(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    return loss.item()

  def forward():
    with torch.no_grad():
      return hf(input_ids=ids, labels=ids).loss.item()

  def forward_backward():
    optimizer.zero_grad(set_to_none=True)
    loss = hf(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item()
  return step, {"forward": forward, "forward_backward": forward_backward}


def compare(name: str, f) -> dict:
  base, overrides, batch, length = SHAPES[name]
  batch, length = f.batch or batch, f.length or length
  cfg = decoder_lib.decoder_config(base, **{**overrides, "max_positions": max(length + 2, 256)})
  tokens = np.random.default_rng(0).integers(3, cfg.vocab_size, (batch, length + 1)).astype(np.int32)
  our_step, state, our_parts = ours(cfg, tokens)
  their_step, their_parts = theirs(cfg, tokens[:, :-1])

  def run_ours():
    nonlocal state
    state, loss = our_step(state)
    return loss
  run_ours(), their_step()  # compile, and the first (allocating) torch step
  timing = common.alternating_medians_over_threads(run_ours, their_step, common.parse_threads(f.threads),
                                                   f.repetitions)
  ours_s, theirs_s = timing["ours_s"], timing["theirs_s"]
  row = dict(shape=name, batch=batch, length=length, num_layers=cfg.num_layers, hidden_size=cfg.hidden_size,
             vocab_size=cfg.vocab_size, ours_s=ours_s, hf_torch_s=theirs_s, hf_torch_threads=timing["torch_threads"],
             by_torch_threads=timing["by_threads"], ratio_ours_over_theirs=theirs_s / ours_s,
             tokens_per_s=batch * length / ours_s, hf_torch_tokens_per_s=batch * length / theirs_s,
             model_flops=model_flops(cfg, batch, length))
  if f.breakdown:  # all six in turn in each repetition, torch at its fastest thread count
    params = jax.tree.map(jnp.copy, state[0])  # the step donates (deletes) the state it is given
    runs = {"ours_s": run_ours, "hf_torch_s": their_step}
    for part, fn in our_parts.items():
      fn(params)  # compile
      runs[f"ours_{part}_s"], runs[f"hf_torch_{part}_s"] = (lambda fn=fn: fn(params)), their_parts[part]
    row["breakdown"] = common.interleaved_medians(runs, f.repetitions)
  return row


def breakdown_text(row: dict) -> str:
  if "breakdown" not in row:
    return ""
  times = row["breakdown"]
  text = lambda who: (f"{who} forward {times[f'{who}_forward_s'] * 1e3:.0f} ms, backward "
                      f"{(times[f'{who}_forward_backward_s'] - times[f'{who}_forward_s']) * 1e3:.0f} ms, rest "
                      f"(optimizer) {(times[f'{who}_s'] - times[f'{who}_forward_backward_s']) * 1e3:.0f} ms")
  return f" [{text('ours')}; {text('hf_torch')}]"


def main(argv):
  del argv
  f = flags.FLAGS
  peak = peak_matmul_flops()
  rows = []
  for name in f.shapes:
    row = compare(name, f)
    row["mfu"] = row["model_flops"] / row["ours_s"] / peak
    row["hf_torch_mfu"] = row["model_flops"] / row["hf_torch_s"] / peak
    rows.append(row)
    print(f"{name} ({row['batch']} x {row['length']}): ours {row['ours_s'] * 1e3:.1f} ms, HF torch "
          f"{row['hf_torch_s'] * 1e3:.1f} ms ({row['hf_torch_threads']} threads) per step -> "
          f"{row['ratio_ours_over_theirs']:.2f}x their speed; "
          f"{row['tokens_per_s']:.0f} tokens/s, MFU {row['mfu']:.1%} (theirs {row['hf_torch_mfu']:.1%}) of "
          f"the measured {peak / 1e9:.1f} GFLOP/s matmul peak" + breakdown_text(row), flush=True)
  result = dict(device=str(jax.devices()[0].device_kind), repetitions=f.repetitions, peak_matmul_flops=peak,
                rows=rows)
  common.write_result(f.out, result, "train step vs HF torch: " + "; ".join(
      f"{row['shape']} {row['ratio_ours_over_theirs']:.2f}x their speed, MFU {row['mfu']:.0%}" for row in rows)
                      + f" (median of {f.repetitions}; {f.out})")


if __name__ == "__main__":
  app.run(main)
