"""Train-step throughput of our OPT decoder against Hugging Face's PyTorch `OPTForCausalLM`, and MFU.

  python benchmarks/train_step.py --shapes=tiny,opt-125m,deep --out=benchmarks/results/train_step.json

Same configuration (cross-attention off), batch and sequence length; forward + backward + AdamW; medians over
repetitions, the two measured alternately in one run. Model FLOPs per step: 6 x (matmul params per token) x
tokens + the attention score and value products (x3 for the backward), against the peak matmul rate measured
on the same machine (a large float32 `jnp.dot`, median of repetitions). Needs the `test` extra (torch).
"""
import json
import pathlib
import statistics
import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrr_jax.models import decoder as decoder_lib

flags.DEFINE_list("shapes", ["tiny", "opt-125m", "deep"], "Decoder shapes: tiny, opt-125m, deep (24 x 512).")
flags.DEFINE_integer("batch", 4, "Sequences per step.")
flags.DEFINE_integer("length", 128, "Tokens per sequence.")
flags.DEFINE_integer("repetitions", 5, "Timed steps of each implementation (medians are reported).")
flags.DEFINE_integer("threads", 0, "torch intra-op threads (0: torch's default).")
flags.DEFINE_string("out", "benchmarks/results/train_step.json", "Where the JSON results go.")

SHAPES = {"tiny": dict(hidden_size=64, num_layers=2, num_heads=4, ffn_dim=128, vocab_size=512),
          "opt-125m": {},
          "deep": dict(hidden_size=512, num_layers=24, num_heads=8, ffn_dim=2048)}


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
  times = []
  for _ in range(repetitions):
    start = time.perf_counter()
    dot(a, a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * size ** 3 / statistics.median(times)


def ours(cfg: decoder_lib.DecoderConfig, tokens: np.ndarray):
  """A jitted step (donating params and optimizer state) and the state to run it on."""
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

  return jax.jit(step, donate_argnums=(0,)), state


def theirs(cfg: decoder_lib.DecoderConfig, tokens: np.ndarray):
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
  return step


def compare(name: str, f) -> dict:
  cfg = decoder_lib.decoder_config("opt-125m" if name != "tiny" else "tiny",
                                   **{**SHAPES[name], "max_positions": max(f.length + 2, 256)})
  tokens = np.random.default_rng(0).integers(3, cfg.vocab_size, (f.batch, f.length + 1)).astype(np.int32)
  our_step, state = ours(cfg, tokens)
  their_step = theirs(cfg, tokens[:, :-1])
  state, loss = our_step(state)  # compile
  loss.block_until_ready()
  their_step()
  ours_s, theirs_s = [], []
  for _ in range(f.repetitions):
    start = time.perf_counter()
    state, loss = our_step(state)
    loss.block_until_ready()
    ours_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    their_step()
    theirs_s.append(time.perf_counter() - start)
  ours_t, theirs_t = statistics.median(ours_s), statistics.median(theirs_s)
  return dict(shape=name, ours_s=ours_t, hf_torch_s=theirs_t, ratio_ours_over_theirs=theirs_t / ours_t,
              tokens_per_s=f.batch * f.length / ours_t, model_flops=model_flops(cfg, f.batch, f.length))


def main(argv):
  del argv
  f = flags.FLAGS
  if f.threads:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(f.threads)
  peak = peak_matmul_flops()
  rows = []
  for name in f.shapes:
    row = compare(name, f)
    row["mfu"] = row["model_flops"] / row["ours_s"] / peak
    rows.append(row)
    print(f"{name}: ours {row['ours_s'] * 1e3:.1f} ms, HF torch {row['hf_torch_s'] * 1e3:.1f} ms per step -> "
          f"{row['ratio_ours_over_theirs']:.2f}x their speed; {row['tokens_per_s']:.0f} tokens/s, "
          f"MFU {row['mfu']:.1%} of the measured {peak / 1e9:.1f} GFLOP/s matmul peak")
  result = dict(device=str(jax.devices()[0].device_kind), batch=f.batch, length=f.length,
                peak_matmul_flops=peak, rows=rows)
  pathlib.Path(f.out).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(f.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
