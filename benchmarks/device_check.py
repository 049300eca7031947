"""The device check's measurements (`benchmarks/device_check.sh` runs it on a lent accelerator):

  python -m benchmarks.device_check --out=$OUT/device_check.json          # OPT-125M LRR, 224 px, on the device
  python -m benchmarks.device_check --dry_run --out=/tmp/device_check.json  # tiny sizes, on a CPU, seconds

1. The LRR train step (ResNet-101 + ResNet-18 video encoder, OPT-125M with cross-attention; 8 sequences of 512
   tokens with 8 frames of 224 px) in bf16 compute (float32 params and optimizer state): median step time,
   FLOPs per device (`train.throughput.step_flops`: the compiled count, or the analytic model FLOPs), TFLOP/s
   and MFU against the device's bf16 peak (`train.throughput.PEAK_FLOPS`; none on a CPU).
2. The same step in float32: the bf16 / f32 step-time ratio.
3. Each attention path (`models.attention.IMPLEMENTATIONS`: reference, xla, cudnn, ...) on causal self-attention
   of the decoder's shape in bf16: median seconds, speed against the reference, largest difference from it. A
   path the device cannot run is recorded with its error, not fatal.
"""
import argparse
import dataclasses
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from lrr_jax.models import attention
from lrr_jax.models import lrr
from lrr_jax.train import throughput
from lrr_jax.train import trainer

FULL = dict(size="opt-125m", batch=8, tokens=512, frames=8, resolution=224, vocab=50290, steps=5,
            attention=dict(batch=8, length=2048, heads=12, head_dim=64, repetitions=10))
DRY_RUN = dict(size="tiny", batch=2, tokens=32, frames=2, resolution=32, vocab=512, steps=2,
               attention=dict(batch=2, length=128, heads=2, head_dim=16, repetitions=2))


def model_config(size: str, vocab: int, dtype: str) -> lrr.LRRConfig:
  """The preset with `dtype` compute everywhere (decoder, video encoder, both ResNets); params stay float32."""
  config = lrr.lrr_config(size, vocab_size=vocab, dtype=dtype, dropout_rate=0.0)
  video = config.video
  return dataclasses.replace(config, video=dataclasses.replace(
      video, dtype=dtype, static_backbone=dataclasses.replace(video.static_backbone, dtype=dtype),
      motion_backbone=dataclasses.replace(video.motion_backbone, dtype=dtype)))


def example_batch(batch: int, tokens: int, frames: int, resolution: int, vocab: int) -> dict[str, jax.Array]:
  """A packed-looking batch of random tokens, every token seeing the frames up to its quarter of the text."""
  rng = np.random.default_rng(0)
  text = rng.integers(4, vocab, (batch, tokens + 1)).astype(np.int32)
  frame_index = np.minimum(np.arange(tokens) * frames // tokens, frames - 1)
  positions = np.tile(np.arange(tokens, dtype=np.int32), (batch, 1))
  return dict(inputs=text[:, :-1], targets=text[:, 1:], positions=positions,
              segment_ids=np.ones((batch, tokens), np.int32), loss_mask=np.ones((batch, tokens), np.int32),
              frame_index=np.tile(frame_index.astype(np.int32), (batch, 1)),
              video=rng.integers(0, 256, (batch, frames, resolution, resolution, 3)).astype(np.uint8))


def train_step_figures(shape: dict[str, Any], dtype: str) -> dict[str, Any]:
  """Compile and time the train step at `shape` (FULL or DRY_RUN) with `dtype` compute on one device."""
  config = model_config(shape["size"], shape["vocab"], dtype)
  model = lrr.LRRModel(config)
  optimizer_config = trainer.OptimizerConfig(lr=1e-4, warmup_steps=10, total_steps=1000, final_fraction=0.1,
                                             clip_norm=1.0, b1=0.9, b2=0.98, weight_decay=0.01)
  optimizer = trainer.make_optimizer(optimizer_config)
  batch = {k: jnp.asarray(v) for k, v in example_batch(shape["batch"], shape["tokens"], shape["frames"],
                                                       shape["resolution"], shape["vocab"]).items()}
  state = jax.jit(lambda rng: trainer.init_train_state(model, optimizer, batch, rng))(jax.random.key(0))
  step = jax.jit(trainer.make_train_step(model, optimizer, trainer.learning_rate_schedule(optimizer_config)),
                 donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  model_flops = throughput.analytic_train_flops(config, shape["batch"], shape["tokens"], shape["frames"],
                                                shape["resolution"], shape["resolution"])
  flops, source = throughput.step_flops(compiled, model_flops)
  state, metrics = compiled(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(shape["steps"]):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  seconds = float(np.median(times))
  peak = throughput.peak_flops_per_device(jax.devices()[0].device_kind)
  figures = throughput.step_metrics(seconds, shape["batch"], shape["batch"] * shape["tokens"], flops, peak)
  return dict(figures, dtype=dtype, compile_s=compile_s, flops_per_device=flops, flops_source=source,
              model_flops=model_flops, loss=float(metrics["loss"]), peak_flops_per_device=peak)


def attention_figures(batch: int, length: int, heads: int, head_dim: int, repetitions: int,
                      dtype: str = "bfloat16") -> dict[str, Any]:
  """Each implementation's median seconds on causal self-attention, its speed-up over the reference and its
  largest difference from the reference's output (or the error that stopped it)."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(batch, length, heads, head_dim)) * head_dim ** -0.25, dtype)
             for _ in range(3))
  segments = jnp.ones((batch, length), jnp.int32)
  visibility = attention.Visibility(segments, segments, causal=True)
  results, outputs = {}, {}
  for name in [n for n in attention.IMPLEMENTATIONS if n != "auto"]:
    fn = jax.jit(lambda q, k, v, vis, name=name: attention.attend(q, k, v, vis, name))
    try:
      outputs[name] = np.asarray(jax.block_until_ready(fn(q, k, v, visibility)), np.float32)
      results[name] = dict(seconds=common.median_seconds(lambda fn=fn: fn(q, k, v, visibility), repetitions))
    except Exception as e:  # pylint: disable=broad-except  # a path this device cannot run (cudnn on a CPU)
      results[name] = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
  reference = results.get("reference", {}).get("seconds")
  for name, row in results.items():
    if "seconds" in row and reference:
      row.update(speedup_over_reference=reference / row["seconds"],
                 max_abs_diff=float(np.max(np.abs(outputs[name] - outputs["reference"]))))
  return dict(shape=dict(batch=batch, length=length, heads=heads, head_dim=head_dim, dtype=dtype),
              implementations=results)


def main(argv=None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dry_run", action="store_true", help="tiny sizes (a CPU, seconds)")
  parser.add_argument("--out", default="benchmarks/results/device_check.json")
  parser.add_argument("--parts", default="attention,bf16,f32", help="which of attention, bf16, f32 to run")
  args = parser.parse_args(argv)
  shape = DRY_RUN if args.dry_run else FULL
  parts = args.parts.split(",")
  result: dict[str, Any] = dict(dry_run=args.dry_run, shape={k: v for k, v in shape.items() if k != "attention"})
  if "attention" in parts:
    result["attention"] = attention_figures(**shape["attention"])
  for dtype, part in (("bfloat16", "bf16"), ("float32", "f32")):
    if part in parts:
      result[f"train_step_{part}"] = train_step_figures(shape, dtype)
  if "train_step_bf16" in result and "train_step_f32" in result:
    result["bf16_over_f32_step_time"] = (result["train_step_bf16"]["step_time_s"]
                                         / result["train_step_f32"]["step_time_s"])
  bf16 = result.get("train_step_bf16", {})
  kind = jax.devices()[0].device_kind
  common.write_result(args.out, result, f"device_check: {kind} step {bf16.get('step_time_s')} s, "
                      f"{bf16.get('tflops_per_device')} TFLOP/s per device, MFU {bf16.get('mfu')}, "
                      f"bf16/f32 {result.get('bf16_over_f32_step_time')}")
  return result


if __name__ == "__main__":
  main()
