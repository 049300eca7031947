"""The LLaVA-CoT release's stage-level search, run its own way: Hugging Face `generate` in PyTorch.

As the release's `generate_inner_stage_beam` runs it (see /work/shared/papers/README.md), per stage:
- N candidates one after another, each a `model.generate` call that re-encodes the whole prefix (prompt and the
  stages kept so far), with the release's stopping criterion `StopOnStrings`: at every new token it decodes the
  *whole* sequence and looks for the stage's closing tag;
- then a knockout of random pairs (pop two at random, judge, put the winner back: N-1 comparisons), each a
  `generate` call of its own on the judge prompt, which holds the response so far and both candidates.

Differences from the release, so that both sides do the same work as ours (`benchmarks/stage_search_speed.py`):
the stage's opening tag is given rather than sampled; every candidate samples exactly `step_tokens` tokens
(`min_new_tokens` = `max_new_tokens`, which masks `</s>`, and the closing tags masked with `suppress_tokens`,
so that the criterion runs at every token but never fires); the judge prompt is ours (`scorers.fit_judge_prompts`,
ending in "I choose response") and the judge samples one token, read as the release reads its answer (" 1":
the first, anything else: the second) -- the release lets its judge write a whole sentence, which costs more.
Text-only: the release also re-encodes the image at every call; there is no image here.
"""
import numpy as np
import torch
import transformers

from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.inference import scorers


class StopOnStrings(transformers.StoppingCriteria):
  """The release's criterion: the whole sequence decoded at every token, stop once a stop string is in it.

  Decoded with the special tokens kept: here the stage tags are special tokens (in the release they are plain
  text, and it decodes with `skip_special_tokens=True`, which would drop them here).
  """

  def __init__(self, stop_strings: list[str], tokenizer: transformers.PreTrainedTokenizerFast):
    self.stop_strings, self.tokenizer = stop_strings, tokenizer

  def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
    text = self.tokenizer.decode(input_ids[0], skip_special_tokens=False)
    done = any(stop in text for stop in self.stop_strings)
    return torch.full((input_ids.shape[0],), done, dtype=torch.bool)


def hf_tokenizer(tokenizer: tokenizer_lib.Tokenizer) -> transformers.PreTrainedTokenizerFast:
  """Our tokenizer as the `transformers` tokenizer the release decodes with (the same vocabulary)."""
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.tokenizer)


class ReleaseStageSearch:
  """`search(prompt, rng)` runs the release's stage-level search on `hf_model`; returns the kept token ids.

  Args:
    hf_model: an `OPTForCausalLM` in eval mode.
    tokenizer: ours (stage tags as single tokens), wrapped for `transformers` to decode with.
    context: what our judge prompts are built from (`scorers.fit_judge_prompts`: the question, the model's
      positions), so that both sides judge the same tokens.
    sampling: (temperature, top_p) of every `generate` call (the release: 0.6, 0.9).
  """

  def __init__(self, hf_model, tokenizer: tokenizer_lib.Tokenizer, context: scorers.Context,
               num_candidates: int, step_tokens: int, sampling: tuple[float, float] = (0.6, 0.9)):
    self.model, self.tokenizer, self.context = hf_model, tokenizer, context
    self.num_candidates, self.step_tokens = num_candidates, step_tokens
    self.decoder = hf_tokenizer(tokenizer)
    closing = [tokenizer.token_id(f"</{name}>") for name in rationales.STAGES]
    settings = dict(do_sample=True, temperature=sampling[0], top_p=sampling[1], top_k=0, use_cache=True,
                  eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
    self.candidate_config = transformers.GenerationConfig(
        **settings, max_new_tokens=step_tokens, min_new_tokens=step_tokens, suppress_tokens=closing)
    self.judge_config = transformers.GenerationConfig(**settings, max_new_tokens=1)
    self.generated_tokens = 0  # sampled by candidates, all searches

  def generate(self, ids: list[int], config: transformers.GenerationConfig,
               stopping_criteria: transformers.StoppingCriteriaList | None = None) -> list[int]:
    """One `generate` call from scratch on `ids` (the whole prefix encoded again); the new ids."""
    input_ids = torch.as_tensor([ids], dtype=torch.long)
    with torch.no_grad():
      out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                generation_config=config, stopping_criteria=stopping_criteria)
    return out[0, len(ids):].tolist()

  def judge(self, stage: str, first: scorers.Candidate, second: scorers.Candidate) -> int:
    """0 if the model's answer to the judge prompt is " 1", else 1 (the release's reading)."""
    shared, rows, choices = scorers.fit_judge_prompts(self.context, stage, [(first, second)])
    answer = self.generate(shared + rows[0], self.judge_config)
    return 0 if answer[:1] == [choices[0][0]] else 1

  def search(self, prompt: list[int], rng: np.random.Generator) -> list[int]:
    response: list[int] = []
    for name in rationales.STAGES:
      opening = self.tokenizer.token_id(f"<{name}>")
      stop = transformers.StoppingCriteriaList([StopOnStrings([f"</{name}>"], self.decoder)])
      so_far = self.tokenizer.decode(response + [opening])  # the response so far, as our judge is shown it
      candidates = []
      for _ in range(self.num_candidates):
        new = self.generate(prompt + response + [opening], self.candidate_config, stop)
        self.generated_tokens += len(new)
        text = self.decoder.decode(new, skip_special_tokens=False)
        candidates.append((new, scorers.Candidate(so_far, text, 0.0, False)))
      while len(candidates) > 1:  # the release's knockout: N-1 judge calls, one at a time
        first = candidates.pop(rng.integers(len(candidates)))
        second = candidates.pop(rng.integers(len(candidates)))
        candidates.append((first, second)[self.judge(name, first[1], second[1])])
      response += [opening] + candidates[0][0]
    return response
