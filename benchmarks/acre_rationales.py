"""Where a generated-ACRE run's rationale goes wrong: its captions (the objects and light of each context
panel) and its reasoning (each object's blicket status) against the ground-truth rationale, step by step.

  python -m benchmarks.acre_rationales --workdir='workdirs/reproduce/acre/split=iid,variant=full' --num_examples=64
"""
import argparse
import json
import re

import numpy as np

from lrr_jax.data import rationales
from lrr_jax.data import records
from lrr_jax import run_inference
from lrr_jax import run_objects
from lrr_jax import run_records

PANEL = re.compile(r"frame (\d): <detect> ([^;]*); light (on|off)")
STATUS = re.compile(r"([a-z]+ [a-z]+ [a-z]+): ([^.]+(?:: [^.]+)?)\.")


def panels(text: str) -> dict[str, tuple[str, str]]:
  """frame index -> (objects, light) of each line of the caption stage."""
  caption = rationales.parse_response(text).stages.get("CAPTION", "")
  return {m[0]: (m[1], m[2]) for m in PANEL.findall(caption)}


def statuses(text: str) -> set[tuple[str, str]]:
  """The reasoning stage's (object, status) claims."""
  return set(STATUS.findall(rationales.parse_response(text).stages.get("REASONING", "")))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--num_examples", type=int, default=64)
  args = parser.parse_args()
  run = run_records.load_run(args.workdir)
  source = run_inference.test_source(run)
  evaluator = run_objects.make_evaluator(run.config, run.model, source, run.tokenizer)
  scores, responses = evaluator(run.variables, args.num_examples)
  truths = [records.read_example(source[i], "full", f"test record {i}").response_text
            for i in range(len(responses))]
  panel_right, light_right, claims_true, truth_found = [], [], [], []
  for response, truth in zip(responses, truths):
    said, real = panels(response), panels(truth)
    panel_right += [said.get(k, ("", ""))[0] == objects for k, (objects, _) in real.items()]
    light_right += [said.get(k, ("", ""))[1] == light for k, (_, light) in real.items()]
    said_status, real_status = statuses(response), statuses(truth)
    claims_true += [claim in real_status for claim in said_status]
    truth_found += [claim in said_status for claim in real_status]
  result = {"workdir": args.workdir, "step": run.step, "num_examples": len(responses), "scores": scores,
            "caption_objects_right": float(np.mean(panel_right)), "caption_light_right": float(np.mean(light_right)),
            "reasoning_claims_true": float(np.mean(claims_true)),
            "reasoning_truths_stated": float(np.mean(truth_found))}
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
