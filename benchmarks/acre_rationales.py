"""Where a generated-ACRE run's rationale goes wrong: its captions (the objects and light of each context
panel) and its reasoning (each object's blicket status) against the ground-truth rationale, step by step.

  python benchmarks/acre_rationales.py --workdir='workdirs/reproduce/acre/split=iid,variant=full' --num_examples=64
"""
import argparse
import json
import re

import numpy as np

from lrr_jax.data import records
from lrr_jax.evaluation import evaluator as evaluator_lib
from lrr_jax.inference import runs

PANEL = re.compile(r"frame (\d): <detect> ([^;]*); light (on|off)")
STATUS = re.compile(r"([a-z]+ [a-z]+ [a-z]+): ([^.]+(?:: [^.]+)?)\.")


def panels(text: str) -> dict[str, tuple[str, str]]:
  """frame index -> (objects, light) of each caption line."""
  return {m[0]: (m[1], m[2]) for m in PANEL.findall(text)}


def statuses(text: str) -> set[tuple[str, str]]:
  """The reasoning stage's (object, status) claims."""
  reasoning = text.split("<REASONING>")[-1].split("</REASONING>")[0]
  return set(STATUS.findall(reasoning))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--num_examples", type=int, default=64)
  args = parser.parse_args()
  run = runs.load_run(args.workdir)
  source, config = runs.test_source(run), run.config
  evaluator = evaluator_lib.Evaluator(run.model, run.tokenizer, source, config.data.dataset, config.data.variant,
                                      config.data.max_length, config.eval.max_new_tokens, config.eval.batch_size,
                                      frames=runs.video_shape(config))
  scores, responses = evaluator(run.params, args.num_examples)
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
