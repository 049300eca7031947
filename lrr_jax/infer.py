"""Answer a question about a video with a trained run and an inference-time scaling strategy.

  python -m lrr_jax.infer --workdir=workdirs/cater_demo --strategy=stage_beam --num_candidates=4
  python -m lrr_jax.infer --workdir=... --video=clip.mp4 --question="Where is the snitch at the end of the video?"

  python -m lrr_jax.infer --workdir=... --example=3 --surrogate="track snitch at frame 5"

Without --video it answers held-out example --example. The search is the run's `config.search` (see
configs/common.py); each flag given overrides its setting. Stages (or sentences) are printed as chosen.
--surrogate asks a surrogate task (detect / reid / track at frame t) after the question instead, as training
prompts them (`config.data.surrogate_prompt_prob`), and prints the answer (and the record's own, if any).
"""
from absl import app
from absl import flags
import jax

from lrr_jax import run_inference
from lrr_jax import run_objects
from lrr_jax import run_records
from lrr_jax.data import rationales
from lrr_jax.data import surrogate
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.evaluation import cater as cater_eval
from lrr_jax.inference import scorers
from lrr_jax.inference import search

flags.DEFINE_string("workdir", None, "A run's workdir (written by lrr_jax.main).", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_bool("accept_changed_inputs", False, "Use the run even if an input its run.json fingerprinted "
                  "(tokenizer, pretrained weights, dataset files) has changed since.")
flags.DEFINE_integer("example", 0, "Held-out example to answer (without --video).")
flags.DEFINE_string("video", None, "A video file to answer about instead (decoded with PyAV).")
flags.DEFINE_string("question", None, "The question about --video.")
flags.DEFINE_string("surrogate", None, "A surrogate request to answer instead of the question: '<task> ... "
                    "<frame>', task detect | reid | track, e.g. 'track snitch at frame 5'.")
# Overrides of the run's config.search (unset: the config's).
flags.DEFINE_enum("strategy", None, search.STRATEGIES, "Inference-time scaling strategy.")
flags.DEFINE_integer("num_candidates", None, "Candidates sampled per step.")
flags.DEFINE_integer("beam", None, "Candidates kept after each step.")
flags.DEFINE_enum("scorer", None, sorted(run_objects.SCORERS), "How candidates are ranked.")
flags.DEFINE_float("temperature", None, "Sampling temperature (the LLaVA-CoT release uses 0.6).")
flags.DEFINE_float("top_p", None, "Nucleus sampling mass (the release uses 0.9).")
flags.DEFINE_integer("top_k", None, "Top-k sampling (0: off).")
flags.DEFINE_integer("max_new_tokens", None, "Token budget of the response (and of each stage).")
flags.DEFINE_integer("seed", None, "Sampling seed.")

flags.register_validator("temperature", lambda v: v is None or 0 <= v < float("inf"),
                         "--temperature must be a finite number >= 0 (0: greedy).")
flags.register_validator("top_p", lambda v: v is None or 0 < v <= 1, "--top_p must be in (0, 1] (1: off).")
for _name, _minimum in (("top_k", 0), ("num_candidates", 1), ("beam", 1), ("max_new_tokens", 1)):
  flags.register_validator(_name, lambda v, m=_minimum: v is None or v >= m, f"--{_name} must be >= {_minimum}.")

SEARCH_FLAGS = ("strategy", "num_candidates", "beam", "scorer", "temperature", "top_p", "top_k", "seed")


def main(argv):
  del argv
  f = flags.FLAGS
  if f.surrogate:
    try:
      surrogate.parse_request(f.surrogate)
    except ValueError as e:
      raise app.UsageError(f"--surrogate: {e}") from e
  if f.question is not None:
    try:
      tokenizer_lib.utf8_text(f.question, "--question")
    except ValueError as e:
      raise app.UsageError(str(e)) from e
  run = run_records.load_run(f.workdir, f.step, accept_changed_inputs=f.accept_changed_inputs)
  if f.video:
    if not f.question:
      raise app.UsageError("--video needs --question.")
    example = run_inference.video_prompt(run, f.video, f.question)
  else:
    example = run_inference.read_test_example(run, run_inference.test_source(run), f.example)
  if f.surrogate:
    ask_surrogate(run, example, f.surrogate, 64 if f.max_new_tokens is None else f.max_new_tokens)
    return
  config, scorer = run_objects.search_config(
      run.config, max_new_tokens=f.max_new_tokens, max_step_tokens=f.max_new_tokens,
      **{name: f[name].value for name in SEARCH_FLAGS})
  if isinstance(scorer, scorers.Oracle) and example["reference"] is None:
    raise app.UsageError("The oracle scorer checks candidates against the example's true rationale: a held-out "
                         "example (--example) has one, --video has none; choose another --scorer.")
  searcher = run_inference.make_searcher(run, config, scorer)
  print(f"Run {run.workdir} (step {run.step}), {config.strategy} with {config.num_candidates} candidates, "
        f"beam {config.beam}, {type(scorer).__name__} scorer.\nQuestion: {example['question']}")

  def show(step: search.Step):
    kept = step.candidates[step.kept[0]]
    scores = "" if step.scores is None else f", score {step.scores[step.kept[0]]:.3f}"
    note = "  -> below the cutoff: back to the previous stage" if step.backtracked else ""
    print(f"[{step.name}] kept {step.kept[0] + 1} of {len(step.candidates)}{scores}: {kept}{note}")

  result = searcher(run.variables, example["video"], example["prompt"], example["frames"],
                    example["question"], on_step=show, reference=example["reference"])
  parsed = rationales.parse_response(result.text)
  for note in result.notes:  # budgets cut to fit the model's positions, judge texts shortened, early ends
    print(f"note: {note}")
  print(f"\nAnswer: {parsed.answer}{'  (partial: the search ended early, see the notes)' if result.partial else ''}"
        f"  ({result.generated_tokens} tokens sampled, {result.judge_tokens} read by the judge, "
        f"{result.seconds:.1f} s on {jax.devices()[0].platform})")
  if example["label"] is not None and run.config.data.dataset in ("generated_cater", "cater"):
    print(f"Label: {example['answer']} -> {'correct' if cater_eval.parse_cell(parsed.answer) == example['label'] else 'wrong'}")
  elif example["label"] is not None:
    print(f"Label: {example['answer']}")


def ask_surrogate(run: run_records.Run, example: dict, request: str, max_new_tokens: int) -> None:
  """Print the run's answer to a surrogate request, and the record's fact for it when there is one."""
  task, frame = surrogate.parse_request(request)
  result = run_inference.ask_surrogate(run, example, request, max_new_tokens)
  print(f"Run {run.workdir} (step {run.step}).\nQuestion: {example['question']}\nRequest: {result.request}\n"
        f"Surrogate answer: {result.answer.strip()}{'' if result.stopped else '  (cut at the token budget)'}")
  known = [fact for fact in example.get("facts", []) if (fact.task, fact.frame) == (task, frame)]
  if known:
    print(f"Record: {known[0].answer.strip()} -> "
          f"{'same' if known[0].answer.strip() == result.answer.strip() else 'different'}")


if __name__ == "__main__":
  app.run(main)
