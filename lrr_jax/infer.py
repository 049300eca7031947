"""Answer a question about a video with a trained run and an inference-time scaling strategy.

  python -m lrr_jax.infer --workdir=workdirs/cater_demo --strategy=stage_beam --num_candidates=4
  python -m lrr_jax.infer --workdir=... --video=clip.mp4 --question="Where is the snitch at the end of the video?"

Without --video it answers generated test example --example. Stages (or sentences) are printed as chosen.
"""
import pathlib

from absl import app
from absl import flags
import jax
import numpy as np

from lrr_jax.data import rationales
from lrr_jax.data.builders import video_files
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.inference import generate as generate_lib
from lrr_jax.inference import runs
from lrr_jax.inference import scorers
from lrr_jax.inference import search

flags.DEFINE_string("workdir", None, "A run's workdir (written by lrr_jax.main).", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_enum("strategy", "stage_beam", search.STRATEGIES, "Inference-time scaling strategy.")
flags.DEFINE_integer("num_candidates", 4, "Candidates sampled per step and kept beam.")
flags.DEFINE_integer("beam", 1, "Candidates kept after each step.")
flags.DEFINE_enum("scorer", "judge", ["judge", "likelihood"], "How candidates are ranked.")
flags.DEFINE_float("temperature", 0.6, "Sampling temperature (the LLaVA-CoT release uses 0.6).")
flags.DEFINE_float("top_p", 0.9, "Nucleus sampling mass (the release uses 0.9).")
flags.DEFINE_integer("top_k", 0, "Top-k sampling (0: off).")
flags.DEFINE_integer("max_new_tokens", 256, "Token budget of the response.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("example", 0, "Generated test example to answer (without --video).")
flags.DEFINE_string("video", None, "A video file to answer about instead (decoded with PyAV).")
flags.DEFINE_string("question", None, "The question about --video.")


def video_prompt(run: runs.Run, path: str, question: str) -> dict:
  """Frames of a user's video file, sampled evenly and resized as the run's world, and the prompt."""
  frames, _ = video_files.decode_video(pathlib.Path(path), run.config.world.resolution)
  frames = np.stack(frames)[video_files.evenly_spaced(len(frames), run.config.world.num_frames)]
  prompt = [run.tokenizer.eos_id] + run.tokenizer.encode(question)
  last = len(frames) - 1
  return dict(prompt=prompt, frames=[last] * len(prompt), question=question, video=frames, label=None)


def main(argv):
  del argv
  f = flags.FLAGS
  run = runs.load_run(f.workdir, f.step)
  if f.video:
    if not f.question:
      raise app.UsageError("--video needs --question.")
    example = video_prompt(run, f.video, f.question)
  else:
    example = runs.read_test_example(run, runs.test_source(run), f.example)
  config = search.SearchConfig(
      strategy=f.strategy, num_candidates=f.num_candidates, beam=f.beam, max_new_tokens=f.max_new_tokens,
      max_step_tokens=f.max_new_tokens, seed=f.seed,
      sampling=generate_lib.Sampling(f.temperature, f.top_k, f.top_p))
  scorer = scorers.Judge() if f.scorer == "judge" else scorers.Likelihood()
  searcher = runs.make_searcher(run, config, scorer)
  print(f"Run {run.workdir} (step {run.step}), {f.strategy} with {f.num_candidates} candidates, beam {f.beam}, "
        f"{f.scorer} scorer.\nQuestion: {example['question']}")

  def show(step: search.Step):
    kept = step.candidates[step.kept[0]]
    scores = "" if step.scores is None else f", score {step.scores[step.kept[0]]:.3f}"
    note = "  -> below the cutoff: back to the previous stage" if step.backtracked else ""
    print(f"[{step.name}] kept {step.kept[0] + 1} of {len(step.candidates)}{scores}: {kept}{note}")

  result = searcher({"params": run.params}, example["video"], example["prompt"], example["frames"],
                    example["question"], on_step=show)
  parsed = rationales.parse_response(result.text)
  print(f"\nAnswer: {parsed.answer}  ({result.generated_tokens} tokens sampled, {result.judge_tokens} read by the "
        f"judge, {result.seconds:.1f} s on {jax.devices()[0].platform})")
  if example["label"] is not None and run.config.data.dataset == "generated_cater":
    print(f"Label: {example['answer']} -> {'correct' if cater_eval.parse_cell(parsed.answer) == example['label'] else 'wrong'}")


if __name__ == "__main__":
  app.run(main)
