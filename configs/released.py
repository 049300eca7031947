"""Recipes for the released datasets with a pretrained OPT. The LRR paper's where its text speaks (OPT-125M or
OPT-1.3B, a ResNet-101 CNN, top-down cross-attention into the LM, surrogate tasks prompted at 0.3, trained end to
end); ours elsewhere, each said where it is set (README, "The recipe against the papers", has the whole list).

  python -m lrr_jax.prepare --dataset=cater --config=default --manual_dir=~/CATER --vocab_size=0 \
      --data_dir=~/lrr_data   # once, or let the run write it
  python -m lrr_jax.main --config=configs/released.py:dataset=cater,lm=opt-125m --workdir=~/runs/cater125m \
      --config.data.manual_dir=~/CATER --config.data.data_dir=~/lrr_data --config.model.init_from=~/opt-125m \
      --config.model.video.static_init_from=~/resnet101-cd907fc2.pth \
      --config.model.video.motion_init_from=~/resnet18-f37072fd.pth
Args: dataset (cater | acre | something_else | star), lm (opt-125m | opt-1.3b), variant
(full | no_tags | no_surrogate | direct), split (ACRE: iid | compositional | systematic), mixture (joint
training: datasets joined by '+', each with an optional ':weight', e.g. `mixture=cater+something_else:2`;
replaces `dataset`; each dataset's files go in `data.sources.<dataset>.manual_dir`; evaluated per dataset).
`model.init_from` is a local Hugging Face OPT directory (config.json, weights, tokenizer.json); its
tokenizer is the run's. `model.video.static_init_from` / `motion_init_from`: the ImageNet ResNet-101 / ResNet-18
of each stream (ours), a torchvision file (above) or a Hugging Face ResNet directory (e.g. `microsoft/resnet-101`'s
config.json and model.safetensors or pytorch_model.bin); without them the run is refused before any work, unless
`model.video.from_scratch=True` (ours: random weights, BatchNorm statistics trained). The paper gives no
optimiser settings: these (AdamW, lr 1e-4, warmup, cosine, global batch 64) are ours. On a pod, raise
`mesh.fsdp` for OPT-1.3B (params and Adam state sharded).
Frames: written once at 224 px as JPEG (quality 90; `data.frame_format=png` for lossless), decoded in 4 Grain
workers with a mild brightness / contrast jitter (no flips, crops or colour shifts: `video_transforms`). The
grid: conv4_x of ResNet-101 (`grid_stage=4`, stride 16) gives 14x14 cells per frame at 224 px (conv5_x would
give 7x7); the motion stream's ResNet-18 sees 112 px frame differences (`motion_downsample=2`), its conv4_x
grid (7x7) resized to the static one.
"""
from configs import cater
from configs import common

# Frames as each release's builder writes them; the split evaluated; classes for top-5.
DATASETS = {
    "cater": dict(num_frames=16, eval_split="val", builder_config="default", num_classes=0),
    "acre": dict(num_frames=7, eval_split="val", builder_config="compositional", num_classes=0),
    "something_else": dict(num_frames=8, eval_split="validation", builder_config="default", num_classes=174),
    "star": dict(num_frames=16, eval_split="val", builder_config="default", num_classes=0),
}
RESOLUTION = 224  # frames written and read at 224 x 224 (ours: the papers' texts here give no frame size)
GRID_STAGE = 4  # conv4_x: a 14x14 grid at 224 px (ours: LRR says grid-level features, not which stage)
RELEASE_NEW_TOKENS = 2048  # the LLaVA-CoT release's generation budget
OPT_POSITIONS = 2048  # OPT-125M's and OPT-1.3B's max_position_embeddings
# Memory settings per LM size (ours; the papers state none of them). OPT-125M: matmul outputs kept, the rest
# recomputed; OPT-1.3B: every layer recomputed (it does not fit v5e-16 at 8 rows per device otherwise).
REMAT = {"opt-125m": "minimal", "opt-1.3b": "full"}
GRAD_ACCUM_STEPS = {"opt-125m": 0, "opt-1.3b": 0}  # 0: the fewest micro-batches that fit (lrr_jax micro_batching)


def parse_mixture(spec: str, split: str) -> tuple[tuple[str, str, float], ...]:
  """'cater+something_else:2' -> data.mixture's (dataset, builder config, weight) entries (ACRE's config:
  `split`)."""
  entries = []
  for part in spec.split("+"):
    name, _, weight = part.partition(":")
    if name not in DATASETS:
      raise ValueError(f"Unknown dataset {name!r} in mixture={spec!r}; expected datasets of {sorted(DATASETS)} "
                       "joined by '+', each with an optional ':weight'.")
    entries.append((name, split if name == "acre" else DATASETS[name]["builder_config"], float(weight or 1)))
  return tuple(entries)


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, dataset="cater", lm="opt-125m", variant="full", split="compositional", mixture="")
  mixture = parse_mixture(args["mixture"], args["split"]) if args["mixture"] else ()
  if mixture:
    args["dataset"] = mixture[0][0]
  if args["dataset"] not in DATASETS or args["lm"] not in ("opt-125m", "opt-1.3b"):
    raise ValueError(f"Unknown dataset or lm in {arg!r}; datasets {sorted(DATASETS)}, lm opt-125m | opt-1.3b.")
  dataset = dict(DATASETS[args["dataset"]])
  if args["dataset"] == "acre":
    dataset["builder_config"] = args["split"]
  if mixture:  # every dataset's frames fitted to the longest clip; top-5 over Something-Else's classes
    dataset["num_frames"] = max(DATASETS[name]["num_frames"] for name, _, _ in mixture)
    dataset["num_classes"] = max(DATASETS[name]["num_classes"] for name, _, _ in mixture)
  config = cater.get_config(f"variant={args['variant']}")
  del config["world"]
  config.data.update(dataset=args["dataset"], builder_config=dataset["builder_config"], manual_dir="",
                     num_frames=dataset["num_frames"], resolution=RESOLUTION, frame_format="jpeg", jpeg_quality=90,
                     eval_split=dataset["eval_split"], max_length=1024, worker_count=4, brightness_jitter=0.2,
                     contrast_jitter=0.2, surrogate_prompt_prob=0.3)
  if mixture:
    config.data.mixture = mixture
    config.data.sources = {name: dict(manual_dir="", eval_split=DATASETS[name]["eval_split"])
                           for name, _, _ in mixture}
  # The pretrained LM starts as itself: gates at 0 (tanh(0) = 0), the video enters as they open.
  grid = RESOLUTION // 16
  config.model = common.model_section(
      args["lm"], decoder_values=dict(dropout_rate=0.1, gate_init=0.0),
      video_values=dict(grid_size=grid * grid, static_backbone=dict(grid_stage=GRID_STAGE),
                        motion_backbone=dict(grid_stage=GRID_STAGE)))
  config.model.update(dtype="bfloat16",  # compute in bfloat16; params, Adam moments and the loss in float32 (ours)
                      scan_layers=True,  # each stack of like layers as one scanned layer: compiled once (ours)
                      remat_policy=REMAT[args["lm"]],  # activations recomputed in the backward pass (ours)
                      loss_chunk_size=256)  # logits 256 positions at a time, never [B, S, 50k] at once (ours)
  config.batch_size = 64
  # The fewest micro-batches whose compiled step fits the device's memory, chosen at compile time (0: auto;
  # ours): 2 for OPT-1.3B at 8 rows per device on v5e-16, 1 where the step fits whole.
  config.grad_accum_steps = GRAD_ACCUM_STEPS[args["lm"]]
  config.num_steps = 20_000
  config.optimizer.update(lr=1e-4, warmup_steps=1000, weight_decay=0.05)
  # OPT-1.3B: params and Adam state sharded over every device (FSDP); OPT-125M: data parallel.
  config.mesh = common.mesh_section(data=-1) if args["lm"] == "opt-125m" else common.mesh_section(data=1, fsdp=-1)
  config.checkpoint = dict(every=1000, keep=3)
  config.log_every = 100
  config.eval = dict(batch_size=32, max_new_tokens=256, every=2000, num_examples=256,
                     num_classes=dataset["num_classes"])
  # Inference-time scaling as the LLaVA-CoT release samples: 10 candidates per step, temperature 0.6, top-p 0.9.
  # Its 2,048 new tokens cannot follow any prompt within OPT's 2,048 positions (the search refuses a first step
  # that does not fit): ours is what fits after any prompt shorter than data.max_length, 2,048 - 1,024.
  search_tokens = min(RELEASE_NEW_TOKENS, OPT_POSITIONS - config.data.max_length)
  config.search = common.search_section(num_candidates=10, temperature=0.6, top_p=0.9, max_new_tokens=search_tokens,
                                        max_step_tokens=search_tokens)
  return config


ENCODER_WINDOWS = (4, 8)  # look-back windows tau swept (CATER and STAR clips: 16 frames)


def sweep(add, arg=None):
  """The rationale ablation on one released dataset or mixture (arg: as get_config's): direct answer, no
  surrogate tasks, no stage tags, full; then the video encoder's on the full rationale: the static stream
  alone, and tau in ENCODER_WINDOWS."""
  for variant in ("direct", "no_surrogate", "no_tags", "full"):
    add(config_arg=",".join(filter(None, [arg, f"variant={variant}"])))
  for overrides in common.encoder_ablations(ENCODER_WINDOWS):
    add(config_arg=",".join(filter(None, [arg, "variant=full"])), **overrides)
