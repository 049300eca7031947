"""Finished runs as `lrr_jax.main` writes them, with made-up per-record scores (json and numpy only: the fake
`lrr_jax.main` of tests/benchmarks/test_seed_tables.py imports it too)."""
import json
import pathlib

import numpy as np

ACCURACY = {"direct": 0.05, "no_surrogate": 0.10, "no_tags": 0.25, "full": 0.40}
RECORDS = 512


def top1(variant: str, seed: int) -> np.ndarray:
  """A run's per-record hits: records below its accuracy (shared difficulty), a seed's shift of 0.01."""
  difficulty = np.random.default_rng(7).random(RECORDS)
  return (difficulty < ACCURACY[variant] + 0.01 * seed).astype(int)


def write_run(workdir: pathlib.Path, variant: str, seed: int, with_examples: bool = True) -> None:
  """A finished run's results.json (and its eval_examples.jsonl) as lrr_jax.main writes them."""
  workdir.mkdir(parents=True, exist_ok=True)
  hits = top1(variant, seed)
  scores = {"top1": hits, "top5": np.maximum(hits, np.arange(RECORDS) % 2), "l1": 3 * (1 - hits),
            "well_formed": np.ones(RECORDS, int)}
  results = {"minutes": 50.0 + seed, "eval": {k: float(v.mean()) for k, v in scores.items()}}
  if with_examples:
    lines = [{"index": i, "scores": {k: int(v[i]) for k, v in scores.items()}, "groups": {}, "response": ""}
             for i in range(RECORDS)]
    (workdir / "eval_examples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    results.update(evaluated_only=False, eval_examples={"file": "eval_examples.jsonl", "count": RECORDS})
  (workdir / "results.json").write_text(json.dumps(results))
