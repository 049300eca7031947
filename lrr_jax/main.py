"""Train and evaluate LRR on a generated world: `python -m lrr_jax.main --config=configs/cater.py`.

With no flags: the tiny CPU demo on generated CATER (generate data, train a tokenizer, train, evaluate by
greedy generation, print a results table). Results go to `<workdir>/results.json`.
"""
import json
import pathlib
import time

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import tqdm

from lrr_jax.data import encoding
from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.worlds import cater
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.inference import generate as generate_lib
from lrr_jax.models import lrr
from lrr_jax.train import trainer

config_flags.DEFINE_config_file("config", "configs/cater.py", "Experiment config file.")
flags.DEFINE_string("workdir", "workdirs/cater_demo", "Where the tokenizer and results are written.")


def build_data(config: ml_collections.ConfigDict, workdir: pathlib.Path):
  """Generated train/eval videos, their examples, and a tokenizer trained on the train text."""
  world = cater.CaterConfig(**config.world)
  train = cater.generate(world, config.data.num_train, seed=config.seed)
  evaluation = cater.generate(world, config.data.num_eval, seed=config.seed + 10_000)
  train_examples = [rationales.cater_example(train, n, config.data.variant) for n in range(len(train))]
  eval_examples = [rationales.cater_example(evaluation, n, config.data.variant) for n in range(len(evaluation))]
  texts = [s.text for e in train_examples for s in e.question + e.response]
  tokenizer = tokenizer_lib.train_bpe(texts, config.data.vocab_size)
  tokenizer.save(workdir / "tokenizer.json")
  encoded = [encoding.encode_example(e, tokenizer, config.data.max_length, f"train video {n}")
             for n, e in enumerate(train_examples)]
  arrays = {k: np.stack([e[k] for e in encoded]) for k in encoded[0]}
  arrays["video"] = train.frames
  return arrays, evaluation, eval_examples, tokenizer


def batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int):
  """Endless shuffled batches; epoch e uses permutation seed (seed, e)."""
  num = len(arrays["video"])
  for epoch in range(1 << 30):
    order = np.random.default_rng([seed, epoch]).permutation(num)
    for start in range(0, num - batch_size + 1, batch_size):
      yield {k: v[order[start:start + batch_size]] for k, v in arrays.items()}


def train(config, model, arrays):
  optimizer = trainer.make_optimizer(config.optimizer)
  data = batches(arrays, config.batch_size, config.seed)
  first = next(data)
  state = jax.jit(trainer.init_train_state, static_argnums=(0, 1))(model, optimizer, first,
                                                                   jax.random.key(config.seed))
  step_fn = jax.jit(trainer.make_train_step(model, optimizer, trainer.learning_rate_schedule(config.optimizer)),
                    donate_argnums=0)
  progress = tqdm.trange(config.num_steps, desc="train", unit="step")
  batch = first
  for step in progress:
    state, metrics = step_fn(state, batch)
    batch = next(data)
    if (step + 1) % config.log_every == 0 or step + 1 == config.num_steps:
      progress.set_postfix(loss=f"{float(metrics['loss']):.3f}", acc=f"{float(metrics['token_accuracy']):.3f}")
  return state, {k: float(v) for k, v in metrics.items()}


def evaluate(config, model, params, evaluation, examples, tokenizer):
  generate = generate_lib.make_greedy_generate(
      model, config.eval.max_new_tokens, stop_ids=[tokenizer.eos_id], frame_markers=tokenizer.frame_markers(),
      conclusion_id=tokenizer.token_id("<CONCLUSION>"), vocab_size=model.config.decoder.vocab_size)
  responses = []
  for start in tqdm.trange(0, len(examples), config.eval.batch_size, desc="evaluate", unit="batch"):
    rows = examples[start:start + config.eval.batch_size]
    prompts = [encoding.encode_prompt(e, tokenizer) for e in rows]
    prompt = generate_lib.left_pad([p for p, _ in prompts], [f for _, f in prompts], tokenizer.pad_id)
    tokens, lengths = generate({"params": params}, prompt, evaluation.frames[start:start + len(rows)])
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    responses += [tokenizer.decode(t[:n - 1] if t[n - 1] == tokenizer.eos_id else t[:n])
                  for t, n in zip(tokens, lengths)]
  return cater_eval.cater_scores(responses, evaluation.label), responses


def main(argv):
  del argv
  config = flags.FLAGS.config
  workdir = pathlib.Path(flags.FLAGS.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  arrays, evaluation, eval_examples, tokenizer = build_data(config, workdir)
  model_config = lrr.lrr_config(config.model.size, vocab_size=config.data.vocab_size,
                                dropout_rate=config.model.dropout_rate, gate_init=config.model.gate_init,
                                max_positions=max(256, config.data.max_length + config.eval.max_new_tokens))
  model = lrr.LRRModel(model_config)
  state, train_metrics = train(config, model, arrays)
  scores, responses = evaluate(config, model, state.params, evaluation, eval_examples, tokenizer)
  results = {"train": train_metrics, "eval": scores, "minutes": (time.time() - start) / 60,
             "config": config.to_dict(), "example_response": responses[0]}
  (workdir / "results.json").write_text(json.dumps(results, indent=2))
  print(f"\nGenerated CATER ({config.data.variant}, {'moving' if config.world.moving_camera else 'static'} "
        f"camera), {config.num_steps} steps, {results['minutes']:.1f} min")
  print(f"| metric | value |\n| --- | --- |")
  for key, value in scores.items():
    print(f"| {key} | {value:.3f} |")
  print(f"\nFirst eval response: {responses[0]}")


if __name__ == "__main__":
  app.run(main)
