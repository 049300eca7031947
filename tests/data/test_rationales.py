"""Rationales: the parser round-trips every variant, survives malformed text, and frame indices follow the
rule that generation uses."""
import subprocess
import sys

import numpy as np
import pytest

from lrr_jax.data import encoding
from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.worlds import acre
from lrr_jax.data.worlds import cater
from lrr_jax.inference import generate as generate_lib

VIDEOS = cater.generate(cater.CaterConfig(num_frames=9, contain_prob=0.7), 24, seed=5)
PROBLEMS = acre.generate(acre.AcreConfig(), 6, seed=5)


def examples(variant: str) -> list[tuple[rationales.Example, int]]:
  """(example, its number of frames) for generated CATER videos and ACRE queries."""
  return ([(cater.rationale_example(VIDEOS, n, variant), VIDEOS.frames.shape[1]) for n in range(len(VIDEOS))]
          + [(acre.rationale_example(p, q, variant), acre.NUM_CONTEXT + 1) for p in PROBLEMS for q in range(4)])


@pytest.fixture(scope="module")
def tokenizer():
  texts = [s.text for v in rationales.VARIANTS for e, _ in examples(v) for s in e.question + e.response]
  return tokenizer_lib.train_bpe(texts, 500)


@pytest.mark.parametrize("variant", rationales.VARIANTS)
def test_parser_round_trips_every_rationale(variant):
  for n, (example, _) in enumerate(examples(variant)):
    parsed = rationales.parse_response(example.response_text)
    assert parsed.problems == [], (n, parsed.problems)
    assert parsed.answer == example.answer
    if n < len(VIDEOS):
      assert parsed.answer == cater.answer_text(int(VIDEOS.label[n]))
    if variant in ("full", "no_surrogate"):
      assert list(parsed.stages) == list(rationales.STAGES)
      text = example.response_text
      for name in rationales.STAGES:
        assert parsed.stages[name] == text[text.index(f"<{name}>") + len(name) + 2:text.index(f"</{name}>")].strip()
    else:
      assert parsed.stages == {}


def test_surrogate_tasks_are_in_the_full_rationale_only():
  full = cater.rationale_example(VIDEOS, 0, "full").response_text
  plain = cater.rationale_example(VIDEOS, 0, "no_surrogate").response_text
  assert "<detect>" in full and "<track>" in full and "<detect>" not in plain and "<track>" not in plain
  reid = [cater.rationale_example(VIDEOS, n).response_text for n in range(len(VIDEOS))]
  assert any("<reid>" in text and "covers it" in text for text in reid)


def test_parser_never_raises_and_names_what_is_wrong():
  text = cater.rationale_example(VIDEOS, 1).response_text
  rng = np.random.default_rng(0)
  for _ in range(200):
    cut = text[:rng.integers(len(text))] if rng.random() < 0.5 else text.replace(
        f"</{rng.choice(rationales.STAGES)}>", "", 1)
    parsed = rationales.parse_response(cut)
    assert parsed.problems, cut
  parsed = rationales.parse_response("<CONCLUSION>answer 2,3</CONCLUSION><SUMMARY>late</SUMMARY>")
  assert parsed.answer == "2,3"
  assert any("out of order" in p for p in parsed.problems)
  assert "<CAPTION> is missing" in parsed.problems
  assert rationales.parse_response("<SUMMARY>x</CAPTION>").problems[:2] == [
      "<SUMMARY> is not closed", "</CAPTION> at character 10 closes no open <CAPTION>"]


@pytest.mark.parametrize("variant", rationales.VARIANTS)
def test_generation_frame_rule_reproduces_the_training_frame_indices(tokenizer, variant):
  markers = tokenizer.frame_markers()
  conclusion = tokenizer.token_id("<CONCLUSION>")
  for n, (example, num_frames) in enumerate(examples(variant)):
    arrays = encoding.encode_example(example, tokenizer, 400)
    prompt, _ = encoding.encode_prompt(example, tokenizer)
    length = arrays["segment_ids"].sum()
    frame = arrays["frame_index"][len(prompt) - 1]
    for i in range(len(prompt), length):  # replay generation's rule over the response tokens
      token = arrays["inputs"][i]
      frame = markers.get(token, frame)
      frame = num_frames - 1 if token == conclusion else frame
      assert frame == arrays["frame_index"][i], (variant, n, i, tokenizer.decode([token]))
    assert np.all(np.diff(arrays["frame_index"][:length]) >= 0)  # text about frame t never precedes t-1


def test_loss_is_on_the_response_only(tokenizer):
  example = cater.rationale_example(VIDEOS, 2)
  arrays = encoding.encode_example(example, tokenizer, 300)
  response_ids = [t for s in example.response for t in tokenizer.encode(s.text)]
  targets = arrays["targets"][arrays["loss_mask"] == 1]
  assert targets.tolist() == response_ids + [tokenizer.eos_id]
  assert (arrays["segment_ids"] == (np.arange(300) < arrays["segment_ids"].sum())).all()
  with pytest.raises(ValueError, match="video 7 has .* tokens, more than max_length=20"):
    encoding.encode_example(example, tokenizer, 20, "video 7")


def test_tokenizer_round_trips_and_keeps_tags_whole(tokenizer, tmp_path):
  text = cater.rationale_example(VIDEOS, 3).response_text
  assert tokenizer.decode(tokenizer.encode(text)) == text
  for tag in tokenizer_lib.TAGS + ("frame 3:",):
    assert tokenizer.encode(tag) == [tokenizer.token_id(tag)], tag
  tokenizer.save(tmp_path / "tok" / "tokenizer.json")
  loaded = tokenizer_lib.load(tmp_path / "tok")
  assert loaded.encode(text) == tokenizer.encode(text) and loaded.eos_id == tokenizer.eos_id
  with pytest.raises(FileNotFoundError, match="No tokenizer.json at"):
    tokenizer_lib.load(tmp_path / "missing")
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(ValueError, match="bad.json is not a valid tokenizer.json"):
    tokenizer_lib.load(tmp_path / "bad.json")


def test_left_pad_aligns_prompts_on_the_right():
  batch = generate_lib.left_pad([[5, 6, 7], [8]], [[0, 0, 1], [2]], pad_id=0)
  np.testing.assert_array_equal(batch["tokens"], [[5, 6, 7], [0, 0, 8]])
  np.testing.assert_array_equal(batch["positions"], [[0, 1, 2], [0, 0, 0]])
  np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1], [0, 0, 1]])
  np.testing.assert_array_equal(batch["frame_index"], [[0, 0, 1], [-1, -1, 2]])


def test_the_format_knows_no_dataset():
  """The format, and the encoder over it, load no generated world: each world writes its own text with them."""
  code = ("import sys, lrr_jax.data.rationales, lrr_jax.data.encoding; "
          "print(sorted(m for m in sys.modules if 'worlds' in m))")
  loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
  assert loaded.strip() == "[]"


def test_an_object_is_reidentified_only_after_frames_without_it():
  """Consecutive frames are tracking; a gap then a return is re-identification, with every earlier frame."""
  frames = [["cup", "hand"], ["hand", "hand"], ["cup", "hand"], [], ["cup", "hand"]]
  assert rationales.reappearances(frames) == [[], [], [("cup", [0])], [], [("cup", [0, 2]), ("hand", [0, 1, 2])]]
  assert rationales.reid_text([("cup", [0, 2]), ("hand", [1])]) == "<reid> cup as in frames 0, 2; hand as in frames 1. "
  assert rationales.reid_text([]) == ""
