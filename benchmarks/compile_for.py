"""Compile the real LRR train step ahead of time for a TPU topology (or simulated CPU devices) and report what
the compiler says: per-device argument / temporary / peak bytes, FLOPs, estimated step time and MFU.

  python -m benchmarks.compile_for --topology=v5e:4x4 --recipe=released --lm=opt-1.3b
  python -m benchmarks.compile_for --topology=cpu:8 --chip=h100 --lm=opt-1.3b   # 8 x H100, simulated

Needs libtpu for TPU topologies: run it from an environment with `pip install "jax[tpu]==0.10.2"` (kept out of
the core and test environments: with libtpu present JAX probes for a TPU at start-up). Defaults are the paper
shape: 16 frames of 224 px, 2,048 tokens, 8 sequences per device, FSDP over every device (the OPT-1.3B recipe).
The last line is `peak_gib_per_device=<x> est_mfu=<y> roofline_mfu=<z> grad_accum_steps=<k> compile_s=<s>`
(`est_mfu=none` where the compiler gives no time estimate; `roofline_mfu`: MFU from a roofline of its FLOPs
and bytes accessed against the chip's peak compute and bandwidth). Where the recipe says `grad_accum_steps=0`
(auto), each k that `lrr_jax.train.micro_batching` tries is compiled in turn against the chip's HBM (or
`--override device_memory_gib=<x>`) and printed with its peak; the figures are the chosen k's and `compile_s`
is all of them together. Model FLOPs are 3x the forward pass's (the standard fwd + bwd count), from XLA's
cost analysis of the forward program: ResNet, video encoder, cross-attention and decoder included.
"""
import argparse
import json
import sys
import time
from typing import Any

# Chips: HBM bytes and bandwidth per JAX device; bf16 peak FLOP/s from the train loop's own table
# (`throughput.PEAK_FLOPS`, keyed by device kind), so MFU here and in a run's metrics use the same peaks.
CHIPS = {
    "v4": dict(kind="tpu v4", hbm=32 * 2**30, bandwidth=1.2e12),
    "v5e": dict(kind="tpu v5e", hbm=16 * 2**30, bandwidth=819e9),
    "v5p": dict(kind="tpu v5p", hbm=95 * 2**30, bandwidth=2.765e12),
    "v6e": dict(kind="tpu v6e", hbm=32 * 2**30, bandwidth=1.64e12),
    "h100": dict(kind="h100", hbm=80 * 10**9, bandwidth=3.35e12),
    "h200": dict(kind="h200", hbm=141 * 10**9, bandwidth=4.8e12),
}


def chip_figures(generation: str) -> dict[str, float]:
  """Peak FLOP/s, HBM bytes and bandwidth per device of a chip generation named in `CHIPS`."""
  from lrr_jax.train import throughput  # pylint: disable=g-import-not-at-top  (after the devices are set)
  chip = CHIPS[generation]
  return dict(flops=throughput.peak_flops_per_device(chip["kind"]), hbm=chip["hbm"], bandwidth=chip["bandwidth"])


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--topology", default="v5e:4x4", help="<gen>:<shape> (v5e:4x4, v5p:2x2x4, v4:2x2x4) or "
                      "cpu:<N> (N simulated CPU devices)")
  parser.add_argument("--chip", default=None, help="the chip for peaks (default: the topology's generation)")
  parser.add_argument("--recipe", default="released", choices=["released", "cater"])
  parser.add_argument("--dataset", default="cater")
  parser.add_argument("--lm", default="opt-1.3b", choices=["opt-125m", "opt-1.3b", "tiny"])
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--resolution", type=int, default=224)
  parser.add_argument("--tokens", type=int, default=2048)
  parser.add_argument("--per_device_batch", type=int, default=8)
  parser.add_argument("--vocab_size", type=int, default=50290, help="OPT's 50,272 + stage tags and markers")
  parser.add_argument("--override", action="append", default=[], help="config key=value (repeatable), e.g. "
                      "model.scan_layers=true, mesh.fsdp=4")
  parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
  return parser.parse_args(argv)


def set_devices(topology: str) -> list[Any]:
  """The devices to compile for: a TPU topology's descriptions, or N CPU devices (set before JAX starts)."""
  import jax  # pylint: disable=g-import-not-at-top
  kind, _, shape = topology.partition(":")
  if kind == "cpu":
    jax.config.update("jax_num_cpu_devices", int(shape))
    return jax.devices("cpu")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  devices = list(topologies.get_topology_desc(topology_name=topology, platform="tpu").devices)
  # v4's description has a device per TensorCore; JAX runs a v4 chip's two cores as one device (megacore), and
  # meshes take one device per chip: the chip's first core stands for it (its HBM: the chip's 32 GiB).
  return [d for d in devices if getattr(d, "core_on_chip", 0) == 0]


def run_config(args: argparse.Namespace, num_devices: int):
  """The recipe's config at the requested shape (what `lrr_jax.main` would train)."""
  from configs import cater, released  # pylint: disable=g-import-not-at-top
  if args.recipe == "released":
    config = released.get_config(f"dataset={args.dataset},lm={'opt-125m' if args.lm == 'tiny' else args.lm}")
    config.data.update(num_frames=args.frames, resolution=args.resolution)
  else:
    config = cater.get_config()
    config.world.update(num_frames=args.frames, resolution=args.resolution)
  config.model.size = args.lm
  config.data.update(max_length=args.tokens, vocab_size=args.vocab_size)
  config.eval.max_new_tokens = 0  # positions: exactly the tokens trained on
  config.batch_size = args.per_device_batch * num_devices
  for item in args.override:
    key, _, value = item.partition("=")
    section = config
    *parents, leaf = key.split(".")
    for name in parents:
      section = section[name]
    section[leaf] = type(section[leaf])(json.loads(value)) if section[leaf] is not None else json.loads(value)
  return config


def abstract_batch(config, batch_size: int, frames: int, resolution: int, sharding) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  text = jax.ShapeDtypeStruct((batch_size, config.data.max_length), np.int32, sharding=sharding)
  names = ("inputs", "targets", "positions", "segment_ids", "frame_index", "loss_mask")
  return {**{name: text for name in names},
          "video": jax.ShapeDtypeStruct((batch_size, frames, resolution, resolution, 3), np.uint8, sharding=sharding)}


def compile_step(config, devices: list[Any], accumulation: int) -> dict[str, Any]:
  """Lower and compile the sharded train step for `devices` with `accumulation` micro-batches; the compiler's
  figures per device."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from lrr_jax import run_config, run_objects  # pylint: disable=g-import-not-at-top
  from lrr_jax.models import lrr  # pylint: disable=g-import-not-at-top
  from lrr_jax.train import micro_batching, partitioning, trainer  # pylint: disable=g-import-not-at-top

  config = run_config.RunConfig.from_config_dict(config)
  model = lrr.LRRModel(run_objects.model_config(config))
  mesh = partitioning.make_mesh(config.mesh.shape(), devices)
  rules = partitioning.rules_from_config(config.mesh.rules)
  frames, resolution = config.video_shape()
  batch = abstract_batch(config, config.batch_size, frames, resolution, partitioning.batch_sharding(mesh))
  optimizer = trainer.make_optimizer(config.optimizer)
  boxed = jax.eval_shape(lambda b, r: trainer.init_boxed_state(model, optimizer, b, r), batch, jax.random.key(0))
  shardings = partitioning.logical_shardings(boxed, mesh, rules)
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), shardings)
  step = trainer.make_train_step(model, optimizer, trainer.learning_rate_schedule(config.optimizer),
                                 accumulation, shardings.params)
  start = time.time()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    lowered = jax.jit(step, in_shardings=(shardings, {k: partitioning.batch_sharding(mesh) for k in batch}),
                      out_shardings=(shardings, partitioning.replicated(mesh)), donate_argnums=(0,)
                      ).lower(state, batch)
  # Model FLOPs: one device's rows through the forward pass, lowered unsharded for the host (HLO cost analysis).
  rows = config.batch_size // len(devices)
  local_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct((rows, *x.shape[1:]), x.dtype), batch)
  params, batch_stats = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                     (state.params, state.batch_stats))
  forward = jax.jit(lambda p, s, b: trainer.loss_and_metrics(p, model, b, None, s)[0], backend="cpu"
                    ).lower(params, batch_stats, local_batch)
  compiled = lowered.compile()
  seconds = time.time() - start
  memory, cost = compiled.memory_analysis(), compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  forward_cost = forward.cost_analysis()
  forward_cost = forward_cost[0] if isinstance(forward_cost, list) else forward_cost
  return dict(
      devices=len(devices), mesh=dict(mesh.shape), compile_s=seconds, grad_accum_steps=accumulation,
      argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
      temp_bytes=memory.temp_size_in_bytes, alias_bytes=memory.alias_size_in_bytes,
      peak_bytes=micro_batching.peak_bytes(compiled),
      flops=float(cost.get("flops", 0.0)), bytes_accessed=float(cost.get("bytes accessed", 0.0)),
      optimal_seconds=float(cost.get("optimal_seconds", -1.0)),
      model_flops=3.0 * float(forward_cost.get("flops", 0.0)))


def utilisation(figures: dict[str, Any], chip: dict[str, float], micro_batches: int = 1) -> dict[str, Any]:
  """MFU from the compiler's time estimate, and from a roofline of its FLOPs and bytes (per device). XLA's cost
  analysis counts a loop's body once: with k micro-batches (a loop) the roofline takes k x its FLOPs and bytes
  (the optimizer update, outside the loop, is then counted k times: a small overestimate of the step)."""
  roofline_s = micro_batches * max(figures["flops"] / chip["flops"], figures["bytes_accessed"] / chip["bandwidth"])
  est = figures["model_flops"] / (figures["optimal_seconds"] * chip["flops"]) if figures["optimal_seconds"] > 0 \
      else None
  return dict(est_mfu=est, roofline_s=roofline_s,
              roofline_mfu=figures["model_flops"] / (roofline_s * chip["flops"]) if roofline_s > 0 else None)


def compile_fitting(config, devices: list[Any], limit_bytes: int) -> tuple[dict[str, Any], Any]:
  """The step's figures at `config.grad_accum_steps`; with 0 (auto), each k `micro_batching` tries compiled in
  turn against `limit_bytes` per device: the chosen k's figures and the choice (None when not auto)."""
  from lrr_jax import run_config as run_config_lib  # pylint: disable=g-import-not-at-top
  from lrr_jax.train import micro_batching, partitioning  # pylint: disable=g-import-not-at-top
  if config.grad_accum_steps != micro_batching.AUTO:
    return compile_step(config, devices, config.grad_accum_steps), None
  tried = {}

  def measure(k: int) -> int:
    tried[k] = compile_step(config, devices, k)
    print(f"grad_accum_steps={k}: peak {tried[k]['peak_bytes'] / 2**30:.2f} GiB per device "
          f"(limit {limit_bytes / 2**30:.2f} GiB), compile {tried[k]['compile_s']:.0f} s", flush=True)
    return tried[k]["peak_bytes"]

  sizes = partitioning.mesh_sizes(run_config_lib.RunConfig.from_config_dict(config).mesh.shape(), len(devices))
  choice = micro_batching.choose(measure, config.batch_size // (sizes["data"] * sizes["fsdp"]), limit_bytes)
  figures = dict(tried[choice.steps], compile_s=sum(f["compile_s"] for f in tried.values()),
                 auto=dict(choice.record(), compile_s={str(k): f["compile_s"] for k, f in tried.items()}))
  return figures, choice


def main(argv=None) -> None:
  args = parse_args(argv)
  devices = set_devices(args.topology)
  generation = args.chip or args.topology.partition(":")[0]
  if generation not in CHIPS:
    raise SystemExit(f"No peak figures for {generation!r}; pass --chip= one of {sorted(CHIPS)}.")
  config = run_config(args, len(devices))
  chip = chip_figures(generation)
  limit = int(config.device_memory_gib * 2**30) if config.device_memory_gib > 0 else int(chip["hbm"])
  figures, choice = compile_fitting(config, devices, limit)
  figures.update(utilisation(figures, chip, figures["grad_accum_steps"]), topology=args.topology, chip=generation,
                 shape=dict(frames=args.frames, resolution=args.resolution, tokens=args.tokens,
                            per_device_batch=args.per_device_batch, lm=args.lm),
                 overrides=args.override)
  gib = lambda b: b / 2**30
  print(f"{args.topology} ({generation}), {len(devices)} devices, mesh {figures['mesh']}; {args.lm}, "
        f"{args.frames} frames of {args.resolution} px, {args.tokens} tokens, {args.per_device_batch} per device")
  print(f"compile: {figures['compile_s']:.0f} s" + (" (all k tried)" if choice else ""))
  if choice:
    print(choice.describe())
  print(f"per device: arguments {gib(figures['argument_bytes']):.2f} GiB, temporaries "
        f"{gib(figures['temp_bytes']):.2f} GiB, peak {gib(figures['peak_bytes']):.2f} GiB "
        f"(HBM {gib(chip['hbm']):.1f} GiB)")
  print(f"per device: compiler FLOPs {figures['flops']:.3g}, model FLOPs {figures['model_flops']:.3g}, bytes "
        f"accessed {figures['bytes_accessed']:.3g}, optimal_seconds {figures['optimal_seconds']:.3g}")
  if figures["est_mfu"] is None:
    print(f"roofline: {figures['roofline_s']:.3g} s per step -> roofline_mfu={figures['roofline_mfu']:.3f} "
          "(a roofline of the compiler's FLOPs and bytes, not a measurement)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(figures, f, indent=2)
  est = "none" if figures["est_mfu"] is None else f"{figures['est_mfu']:.3f}"
  roofline = "none" if figures["roofline_mfu"] is None else f"{figures['roofline_mfu']:.3f}"
  print(f"peak_gib_per_device={gib(figures['peak_bytes']):.2f} est_mfu={est} roofline_mfu={roofline} "
        f"grad_accum_steps={figures['grad_accum_steps']}{' (auto)' if choice else ''} "
        f"compile_s={figures['compile_s']:.0f}")


if __name__ == "__main__":
  main(sys.argv[1:])
