"""Generated CATER: where is the snitch at the end? The default is the tiny CPU demo.

  python -m lrr_jax.main --config=configs/cater.py:variant=direct,camera=moving --config.num_steps=100
Args (comma-separated key=value): variant (full | no_tags | no_surrogate | direct), camera (static | moving).
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, variant="full", camera="static")
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Resuming a workdir's checkpoint with a config that changes the arithmetic (lrr_jax/config_checks.py's
  # FREE_ON_RESUME lists what may change) is refused unless this is True.
  config.resume_with_changes = False
  # enabled: join the processes of a multi-host run (lrr_jax/train/distributed.py); ""/0/-1: JAX detects them
  # from the cluster (Cloud TPU, SLURM). local_device_count > 0: CPU devices per process.
  config.distributed = dict(enabled=False, coordinator_address="", num_processes=0, process_id=-1,
                            local_device_count=0)
  # The generated world, written once by its TFDS builder under data.data_dir (default: <workdir>/data).
  # 48 px with the floor filling the frame: 8 px per cell, so the snitch (a few pixels wide) is seen; at the
  # earlier 32 px with a border it was a 1-3 px streak and the model could not say where it was.
  config.world = dict(num_frames=8, resolution=48, floor_margin=0.0, num_objects=4, num_cones=1,
                      frames_per_action=2, contain_prob=0.4, moving_camera=args["camera"] == "moving")
  # tokenizer: a local tokenizer.json (or HF model directory) instead of a BPE trained on the data (vocab_size).
  # mixture: joint training, ((dataset, builder config, weight), ...) in place of dataset / builder_config,
  # batches drawn by weight, evaluated per dataset (e.g. "(('generated_cater','tiny',1.0),('generated_acre',
  # 'iid',1.0))"); `sources.<dataset>.manual_dir` / `.eval_split` where a dataset needs its own.
  # Reading: worker_count Grain worker processes (0: none; each prepares worker_buffer batches ahead), each
  # with read_threads threads reading prefetch_buffer batches ahead.
  # surrogate_prompt_prob: chance per training example that a surrogate request (detect / reid / track at frame t,
  # lrr_jax/data/surrogate.py) is inserted into its rationale and answered (LRR: 0.3); 0 in the demo, whose
  # figures were measured without it. With it, raise max_length to 240: prompted examples run to 222 tokens
  # (188 on average, against 163 unprompted), and those that do not fit are trained unprompted.
  # world_seed: the seed the generated world is written with (-1: config.seed), so that runs with other seeds
  # (initialisation, data order) can share one world and its held-out set.
  config.data = dict(dataset="generated_cater", builder_config="tiny", data_dir="", num_train=4096, num_eval=128,
                     variant=args["variant"], max_length=192, vocab_size=512, tokenizer="", eval_split="test",
                     brightness_jitter=0.0, worker_count=0, worker_buffer=1, read_threads=2, prefetch_buffer=4,
                     mixture=(), surrogate_prompt_prob=0.0, world_seed=-1)
  # From scratch: no dropout, open cross-attention gates (tanh(1) = 0.76), sharper queries, CoordConv channels.
  # Every DecoderConfig / VideoEncoderConfig / ResNetConfig field is a key here (None: the `size` preset's).
  # init_from: a local Hugging Face OPT directory whose weights (and architecture) the decoder starts from.
  config.model = common.model_section(
      "tiny", decoder_values=dict(dropout_rate=0.0, gate_init=1.0, cross_attention_heads=4,
                                  cross_attention_query_scale=5.0,
                                  # each `frame t:` fact reads frame t alone (ours): the model must look
                                  # at that frame, not copy the cell it saw before
                                  cross_attention_frames=1),
      video_values=dict(coordinate_channels=True,
                        # three stages (stride 8): a 6x6 grid at 48 px, one grid feature per floor cell
                        static_backbone=dict(stage_sizes=(1, 1, 1))))
  config.batch_size = 16  # global: each of P processes batches batch_size / P rows
  config.grad_accum_steps = 1  # the batch in this many micro-batches (same update, less memory); 0: the fewest that fit
  config.device_memory_gib = 0.0  # what grad_accum_steps=0 fits in per device (0: the device's own limit)
  config.num_steps = 1800
  config.optimizer = dict(lr=1e-3, warmup_steps=50, total_steps=config.get_ref("num_steps"),
                          final_fraction=0.05, clip_norm=1.0, b1=0.9, b2=0.98, weight_decay=0.01,
                          trainable=())  # regexes over param paths; () trains all
  config.log_every = 50
  # Throughput: MFU against this bf16 peak FLOP/s per device (0: from the device kind, `train.throughput`;
  # on a device it does not know, a CPU, MFU is not reported). A jax.profiler trace of num_steps updates from
  # start_step under <workdir>/profile (0: none). A persistent XLA compilation cache ('': off): a rerun of the
  # same program on the same devices loads its compiled step instead of compiling it again.
  config.peak_flops_per_device = 0.0
  config.profile = dict(start_step=10, num_steps=0)
  config.compilation_cache_dir = ""
  config.mesh = common.mesh_section(data=-1, fsdp=1, tensor=1)  # -1: all remaining devices
  config.checkpoint = dict(every=400, keep=2)  # async orbax saves (with the data iterator) under <workdir>/ckpt
  # Greedy generation on the test split at the end, and every `every` steps on `num_examples` of it (0: all).
  config.eval = dict(batch_size=64, max_new_tokens=190, every=600, num_examples=64, num_classes=0)
  # Inference-time scaling (`lrr_jax.infer`, `lrr_jax.scaling`; their flags override it).
  config.search = common.search_section(max_new_tokens=192, max_step_tokens=192)
  return config


ENCODER_WINDOWS = (2, 4)  # look-back windows tau swept (the demo's videos have 8 frames)


def sweep(add, arg=None):
  """The LRR rationale ablation on both cameras: direct answer vs no surrogate tasks vs no stage tags vs full;
  then the video encoder's on the full rationale, static camera: one stream, and tau in ENCODER_WINDOWS."""
  del arg
  for camera in ("static", "moving"):
    for variant in ("direct", "no_surrogate", "no_tags", "full"):
      add(config_arg=f"variant={variant},camera={camera}")
  for overrides in common.encoder_ablations(ENCODER_WINDOWS):
    add(config_arg="variant=full,camera=static", **overrides)
