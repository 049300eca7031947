"""Config files: the generated ACRE config's per-variant `max_length` holds every example of every split."""
import pytest

from lrr_jax.data import encoding
from lrr_jax.data import rationales
from lrr_jax.data import tokenizer as tokenizer_lib
from lrr_jax.data.worlds import acre

from configs import acre as acre_config

SPLITS = ("iid", "compositional", "systematic")
VARIANTS = ("direct", "no_surrogate", "full")


@pytest.fixture(scope="module")
def problems() -> dict[tuple[str, bool], list[acre.AcreProblem]]:
  return {(split, train): acre.generate(acre.AcreConfig(split=split), 40, seed=7, train=train)
          for split in SPLITS for train in (True, False)}


@pytest.fixture(scope="module")
def tokenizer(problems) -> tokenizer_lib.Tokenizer:
  """A BPE trained on 40 problems merges less than the runs' (4,096): its token counts are an upper bound."""
  train_examples = [acre.rationale_example(p, q, v) for p in problems[("iid", True)] for q in range(4)
                    for v in rationales.VARIANTS]
  return tokenizer_lib.train_bpe([s.text for e in train_examples for s in e.question + e.response], 512)


@pytest.mark.parametrize("variant", VARIANTS)
def test_acre_max_length_holds_every_split(problems, tokenizer, variant):
  examples = [acre.rationale_example(p, q, variant) for ps in problems.values() for p in ps for q in range(4)]
  max_length = acre_config.get_config(f"variant={variant}").data.max_length
  lengths = [int(encoding.encode_example(e, tokenizer, max_length)["segment_ids"].sum()) for e in examples]
  assert max(lengths) <= max_length
  assert max_length < 4 * max(lengths), "max_length pads every sequence far beyond its need"
