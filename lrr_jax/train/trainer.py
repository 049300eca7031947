"""A pure train step: `train_step(state, batch) -> (state, metrics)` with optax AdamW.

Batch (all int32[B, S] unless noted): inputs, targets, positions, segment_ids, frame_index, loss_mask, and
video uint8[B, T, H, W, 3]. The loss is the mean cross-entropy over tokens with loss_mask = 1.

BatchNorm: a model with BatchNorm backbones (`norm="batch"`) normalises with the running statistics in
`TrainState.batch_stats` (the pretrained backbone's), which the optimizer never sees; no step changes them
unless a backbone has `train_batch_norm` (then training normalises with batch statistics and updates them);
its scale and bias train like any parameter.
"""
import dataclasses
import re
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lrr_jax.models import lrr
from lrr_jax.train import partitioning

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 key data (checkpointable)
  batch_stats: Any = flax.struct.field(default_factory=dict)  # BatchNorm running statistics ({} without any)

  @property
  def variables(self) -> dict[str, Any]:
    """What `model.apply` takes."""
    return model_variables(self.params, self.batch_stats)


def model_variables(params: Any, batch_stats: Any) -> dict[str, Any]:
  """{"params": params, "batch_stats": batch_stats}, without an empty `batch_stats` (a GroupNorm model)."""
  return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """config.optimizer: AdamW after global-norm clipping, on a warmup-cosine schedule."""
  lr: float = 1e-3  # the peak learning rate
  warmup_steps: int = 50  # linear warmup from 0 to lr
  total_steps: int = 1400  # the cosine reaches lr * final_fraction here (a config sets it to num_steps)
  final_fraction: float = 0.05  # the last learning rate, as a fraction of lr
  clip_norm: float = 1.0  # gradients clipped to this global norm
  b1: float = 0.9  # Adam's first-moment decay
  b2: float = 0.98  # Adam's second-moment decay
  weight_decay: float = 0.01  # AdamW's decoupled weight decay
  trainable: tuple[str, ...] = ()  # regexes over '/'-joined param paths; () trains all


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
  """Linear warmup to `lr`, then cosine decay to `lr * final_fraction` at `total_steps`."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.lr, warmup_steps=config.warmup_steps,
      decay_steps=max(config.total_steps, config.warmup_steps + 1), end_value=config.lr * config.final_fraction)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW with the schedule (`config` is the `optimizer` section).

  `config.trainable` (regular expressions over '/'-joined parameter paths, e.g. 'cross_attention_|video_encoder/')
  freezes every parameter no pattern matches: its update is zero and it holds no optimizer moments.
  """
  adamw = optax.chain(
      optax.clip_by_global_norm(config.clip_norm),
      optax.adamw(learning_rate_schedule(config), b1=config.b1, b2=config.b2, weight_decay=config.weight_decay))
  patterns = tuple(config.trainable)
  if not patterns:
    return adamw
  return optax.multi_transform({"train": adamw, "freeze": optax.set_to_zero()},
                               lambda params: trainable_labels(params, patterns))


def trainable_labels(params: Any, patterns: tuple[str, ...]) -> Any:
  """'train' or 'freeze' per parameter; an error if a pattern matches nothing (a typo would freeze all)."""
  paths = {path: "/".join(str(getattr(k, "key", k)) for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  for pattern in patterns:
    if not any(re.search(pattern, name) for name in paths.values()):
      raise ValueError(f"config.optimizer.trainable pattern {pattern!r} matches no parameter; names look like "
                       f"{sorted(paths.values())[:3]}.")
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "train" if any(re.search(p, paths[path]) for p in patterns) else "freeze", params)


def init_boxed_state(model: lrr.LRRModel, optimizer: optax.GradientTransformation, batch: Batch,
                     rng: jax.Array) -> TrainState:
  """Fresh state whose params and optimizer moments keep their logical-axis boxes (for shardings)."""
  init_rng, state_rng = jax.random.split(rng)
  variables = model.init(init_rng, batch["inputs"], batch["positions"], batch["segment_ids"],
                         batch["frame_index"], batch["video"])
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                    rng=jax.random.key_data(state_rng), batch_stats=dict(variables.get("batch_stats", {})))


def init_train_state(model: lrr.LRRModel, optimizer: optax.GradientTransformation, batch: Batch,
                     rng: jax.Array) -> TrainState:
  """Fresh params and optimizer state for `model`, from an example batch's shapes (plain arrays)."""
  return nn.unbox(init_boxed_state(model, optimizer, batch, rng))


def trains_batch_norm(config: lrr.LRRConfig) -> bool:
  """Whether a training step updates BatchNorm statistics (a backbone with `train_batch_norm`)."""
  video = config.video
  backbones = [video.static_backbone] + ([video.motion_backbone] if video.two_stream else [])
  return any(b.norm == "batch" and b.train_batch_norm for b in backbones)


def loss_and_metrics(params: Any, model: lrr.LRRModel, batch: Batch, dropout_rng: jax.Array | None,
                     batch_stats: Any = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Masked token cross-entropy and accuracy; `batch_stats`: the BatchNorm statistics, if any."""
  loss, (metrics, _) = loss_metrics_and_statistics(params, model, batch, dropout_rng, batch_stats)
  return loss, metrics


def loss_metrics_and_statistics(params: Any, model: lrr.LRRModel, batch: Batch, dropout_rng: jax.Array | None,
                                batch_stats: Any = None) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
  """(loss, (metrics, BatchNorm statistics after this batch)): the statistics are `batch_stats` unchanged
  unless the step trains (a dropout rng) a backbone with `train_batch_norm` (its running averages updated).

  With `model.config.loss_chunk_size` > 0 the logits are formed a chunk of positions at a time
  (`chunked_token_sums`); the loss is the same, in float32 whatever the compute dtype.
  """
  variables = model_variables(params, batch_stats)
  update = dropout_rng is not None and bool(batch_stats) and trains_batch_norm(model.config)
  hidden = model.apply(variables, batch["inputs"], batch["positions"], batch["segment_ids"], batch["frame_index"],
                       batch["video"], deterministic=dropout_rng is None, method=lrr.LRRModel.features,
                       rngs=None if dropout_rng is None else {"dropout": dropout_rng},
                       mutable=["batch_stats"] if update else False)
  if update:
    hidden, batch_stats = hidden[0], dict(hidden[1]["batch_stats"])
  mask = batch["loss_mask"].astype(jnp.float32)
  logits_of = lambda h: model.apply(variables, h, method=lrr.LRRModel.output_logits)
  token_loss, correct = chunked_token_sums(logits_of, hidden, batch["targets"], mask,
                                           model.config.loss_chunk_size)
  num_tokens = jnp.maximum(mask.sum(), 1.0)
  loss = token_loss / num_tokens
  return loss, ({"loss": loss, "token_accuracy": correct / num_tokens, "num_tokens": mask.sum()}, batch_stats)


def chunked_token_sums(logits_of: Callable[[jax.Array], jax.Array], hidden: jax.Array, targets: jax.Array,
                       mask: jax.Array, chunk_size: int = 0) -> tuple[jax.Array, jax.Array]:
  """(sum of masked NLL, number of masked correct argmax predictions), float32 scalars.

  hidden: [B, S, E]; targets int[B, S]; mask float32[B, S]; logits_of: [B, C, E] -> float32 [B, C, V].
  chunk_size > 0: a rematerialised `lax.scan` over chunks of C positions (the sequence padded to a multiple
  with masked positions), so only [B, C, V] logits live at a time, in the backward pass too.
  """
  def sums(h, t, m):
    logits = logits_of(h).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, t)
    correct = (jnp.argmax(logits, -1) == t).astype(jnp.float32)
    return (nll * m).sum(), (correct * m).sum()

  length = hidden.shape[1]
  if not chunk_size or chunk_size >= length:
    return sums(hidden, targets, mask)
  pad = -length % chunk_size
  chunks = lambda x: jnp.moveaxis(jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2)).reshape(
      x.shape[0], -1, chunk_size, *x.shape[2:]), 1, 0)
  body = jax.checkpoint(lambda carry, xs: (jax.tree.map(jnp.add, carry, sums(*xs)), None))
  zero = jnp.zeros((), jnp.float32)
  (token_loss, correct), _ = jax.lax.scan(body, (zero, zero), (chunks(hidden), chunks(targets), chunks(mask)))
  return token_loss, correct


def make_train_step(model: lrr.LRRModel, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    accumulation_steps: int = 1, param_shardings: Any = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """The pure step; per-step randomness is `fold_in(state.rng, step)`, so a resumed run draws the same.

  With `accumulation_steps` k > 1 the batch is split into k micro-batches whose gradients are summed, each
  weighted by its share of the loss tokens: the update equals the one of the whole batch at 1/k the memory.
  Micro-batch i holds rows i, i + k, ...: every device keeps 1/k of its own rows in each (a contiguous split
  would put each micro-batch on 1/k of the devices). param_shardings (the params' shardings, under a mesh):
  the summed gradients are held laid out as the params (else XLA may keep a replicated float32 copy).
  """
  constrain = lambda tree: tree if param_shardings is None else jax.lax.with_sharding_constraint(
      tree, param_shardings)

  def micro_gradients(params, batch_stats, batch: Batch, dropout_rng):
    """((loss, (metrics, BatchNorm statistics)), gradients); with micro-batches the statistics run through
    them in turn, as over consecutive batches."""
    grad_fn = jax.value_and_grad(loss_metrics_and_statistics, has_aux=True)
    if accumulation_steps == 1:
      return grad_fn(params, model, batch, dropout_rng, batch_stats)
    micro = jax.tree.map(lambda x: x.reshape(-1, accumulation_steps, *x.shape[1:]).swapaxes(0, 1), batch)
    total_tokens = jnp.maximum(batch["loss_mask"].sum().astype(jnp.float32), 1.0)

    def add(carry, inputs):
      index, micro_batch = inputs
      (_, (metrics, stats)), grads = grad_fn(params, model, micro_batch, jax.random.fold_in(dropout_rng, index),
                                             carry[2])
      weight = metrics["num_tokens"] / total_tokens
      grads = constrain(jax.tree.map(lambda total, g: total + weight * g, carry[0], grads))
      sums = {k: carry[1][k] + (v if k == "num_tokens" else weight * v) for k, v in metrics.items()}
      return (grads, sums, stats), None

    zeros = constrain(jax.tree.map(jnp.zeros_like, params))
    sums = {"loss": 0.0, "token_accuracy": 0.0, "num_tokens": 0.0}
    (grads, metrics, batch_stats), _ = jax.lax.scan(add, (zeros, sums, batch_stats),
                                                    (jnp.arange(accumulation_steps), micro))
    return (metrics["loss"], (metrics, batch_stats)), grads

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    (_, (metrics, batch_stats)), grads = micro_gradients(state.params, state.batch_stats, batch, dropout_rng)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, batch_stats=batch_stats), metrics

  return train_step


def make_sharded_training(model: lrr.LRRModel, optimizer: optax.GradientTransformation,
                          schedule: optax.Schedule, example_batch: Batch, mesh: jax.sharding.Mesh,
                          rules, accumulation_steps: int = 1) -> tuple[Callable, Callable, Any]:
  """(init(rng) -> state, step(state, batch) -> (state, metrics), state shardings), compiled once each.

  The state is laid out by the logical-axis `rules` on `mesh`; batches are split over data x fsdp; the step
  donates the old state.
  """
  abstract = jax.eval_shape(lambda batch, rng: init_boxed_state(model, optimizer, batch, rng), example_batch,
                            jax.random.key(0))
  state_shardings = partitioning.logical_shardings(abstract, mesh, rules)
  batch_shardings = {k: partitioning.batch_sharding(mesh) for k in example_batch}
  # Init runs outside the mesh context: DenseGeneral initialises kernels flat, which per-parameter sharding
  # constraints would reject; out_shardings lays the state out instead.
  init = jax.jit(lambda rng: init_train_state(model, optimizer, example_batch, rng),
                 in_shardings=partitioning.replicated(mesh), out_shardings=state_shardings)
  step = partitioning.jit_sharded(make_train_step(model, optimizer, schedule, accumulation_steps,
                                                  state_shardings.params), mesh, rules,
                                  in_shardings=(state_shardings, batch_shardings),
                                  out_shardings=(state_shardings, partitioning.replicated(mesh)),
                                  donate_argnums=(0,))
  return init, step, state_shardings
