"""Recipes for the released datasets with a pretrained OPT, as the LRR paper trains them: OPT-125M or
OPT-1.3B, a ResNet-101 static stream, gated cross-attention after every other decoder layer, end to end.

  python -m lrr_jax.data.prepare --dataset=cater --config=default --manual_dir=~/CATER --vocab_size=0 \
      --data_dir=~/lrr_data   # once, or let the run write it
  python -m lrr_jax.main --config=configs/released.py:dataset=cater,lm=opt-125m --workdir=~/runs/cater125m \
      --config.data.manual_dir=~/CATER --config.data.data_dir=~/lrr_data --config.model.init_from=~/opt-125m
Args: dataset (cater | acre | something_else | star), lm (opt-125m | opt-1.3b), variant
(full | no_tags | no_surrogate | direct), split (ACRE: iid | compositional | systematic).
`model.init_from` is a local Hugging Face OPT directory (config.json, weights, tokenizer.json); its
tokenizer is the run's. The paper gives no optimiser settings: these (AdamW, lr 1e-4, warmup, cosine,
global batch 64) are ours. On a pod, raise `mesh.fsdp` for OPT-1.3B (params and Adam state sharded).
"""
from configs import cater
from configs import common

# Frames and resolution as each release's builder writes them; the split evaluated; classes for top-5.
DATASETS = {
    "cater": dict(num_frames=16, resolution=64, eval_split="val", builder_config="default", num_classes=0),
    "acre": dict(num_frames=7, resolution=64, eval_split="val", builder_config="compositional", num_classes=0),
    "something_else": dict(num_frames=8, resolution=64, eval_split="validation", builder_config="default",
                           num_classes=174),
    "star": dict(num_frames=16, resolution=64, eval_split="val", builder_config="default", num_classes=0),
}


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, dataset="cater", lm="opt-125m", variant="full", split="compositional")
  if args["dataset"] not in DATASETS or args["lm"] not in ("opt-125m", "opt-1.3b"):
    raise ValueError(f"Unknown dataset or lm in {arg!r}; datasets {sorted(DATASETS)}, lm opt-125m | opt-1.3b.")
  dataset = dict(DATASETS[args["dataset"]])
  if args["dataset"] == "acre":
    dataset["builder_config"] = args["split"]
  config = cater.get_config(f"variant={args['variant']}")
  del config["world"]
  config.data.update(dataset=args["dataset"], builder_config=dataset["builder_config"], manual_dir="",
                     num_frames=dataset["num_frames"], resolution=dataset["resolution"],
                     eval_split=dataset["eval_split"], max_length=1024, worker_count=4, surrogate_prompt_prob=0.3)
  # The pretrained LM starts as itself: gates at 0 (tanh(0) = 0), the video enters as they open.
  config.model = common.model_section(args["lm"], decoder_values=dict(dropout_rate=0.1, gate_init=0.0))
  config.batch_size = 64
  config.num_steps = 20_000
  config.optimizer.update(lr=1e-4, warmup_steps=1000, weight_decay=0.05)
  # OPT-1.3B: params and Adam state sharded over every device (FSDP); OPT-125M: data parallel.
  config.mesh = common.mesh_section(data=-1) if args["lm"] == "opt-125m" else common.mesh_section(data=1, fsdp=-1)
  config.checkpoint = dict(every=1000, keep=3)
  config.log_every = 100
  config.eval = dict(batch_size=32, max_new_tokens=256, every=2000, num_examples=256,
                     num_classes=dataset["num_classes"])
  return config


def sweep(add, arg=None):
  """The rationale ablation on one released dataset (arg: as get_config's)."""
  for variant in ("direct", "no_surrogate", "full"):
    add(config_arg=",".join(filter(None, [arg, f"variant={variant}"])))
