"""Generated ACRE: is the blicket machine on? 6 context panels and a query panel as 7 frames.

  python -m lrr_jax.main --config=configs/acre.py:split=compositional --workdir=workdirs/acre_comp
Args: split (iid | compositional | systematic), variant (full | no_tags | no_surrogate | direct).
Evaluation: accuracy overall and per query type (direct, indirect, screened-off, backward-blocking).
"""
from configs import cater
from configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, split="iid", variant="full")
  config = cater.get_config(f"variant={args['variant']}")
  config.world = dict(num_frames=7, resolution=32)  # the pipeline's view: 6 context panels + the query
  config.data.dataset = "generated_acre"
  config.data.builder_config = args["split"]
  config.data.num_train = 4096
  config.data.num_eval = 128
  # Token counts on the generated splits (BPE of 512; longest of 4096): direct 15, no_surrogate 75, full 277
  # (blicket statuses per panel and the query panel's <reid>: longer than CATER's), plus a frame marker per
  # panel; padding costs compute.
  config.data.max_length = {"direct": 48, "no_surrogate": 112}.get(args["variant"], 320)
  config.eval.max_new_tokens = config.data.max_length - 20
  config.num_steps = 800  # 3 epochs of 4096: 3 splits x 3 variants fit in about an hour on a 2-core CPU
  return config


def sweep(add, arg=None):
  """The LRR rationale ablation on every split: direct vs no surrogate tasks vs the full rationale."""
  del arg
  for split in ("iid", "compositional", "systematic"):
    for variant in ("direct", "no_surrogate", "full"):
      add(config_arg=f"split={split},variant={variant}")
