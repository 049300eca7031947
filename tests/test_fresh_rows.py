"""An OPT whose tokenizer has fewer tokens than its embedding rows (OPT-125M: 50,265 of 50,272): the stage tags
`tokenizer.load` appends after the tokenizer's own tokens take fresh rows, not the checkpoint's unused ones."""
import flax.linen as nn
import jax
import numpy as np
import pytest
import tokenizers

from lrr_jax import run_objects
from lrr_jax.convert import hf_opt
from lrr_jax.data import tokenizer as tokenizer_lib
from tests.conftest import save_tiny_hf_opt
from tests.test_run_objects import TINY_GRIDS
from tests.test_run_objects import parse


def gpt2_like_tokenizer(path, vocab_size: int) -> None:
  """A byte-level BPE without stage tags, as OPT's GPT-2 BPE."""
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>"],
                                           show_progress=False,
                                           initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  bpe.train_from_iterator(["the snitch moves to frame 3 under a cone"] * 4, trainer)
  bpe.save(str(path))


@pytest.mark.slow  # builds and initialises a model with an OPT decoder (~30 s here)
def test_tags_after_a_smaller_tokenizer_get_fresh_rows(tmp_path):
  gpt2_like_tokenizer(tmp_path / "tokenizer.json", 300)
  own = tokenizer_lib.load(tmp_path).base_size
  save_tiny_hf_opt(tmp_path, vocab_size=own + 7, max_position_embeddings=1300)  # 7 rows the tokenizer never uses
  tokenizer = tokenizer_lib.load(tmp_path)
  config = parse("released.py:dataset=cater", f"--config.model.init_from={tmp_path}", "--config.model.size=tiny",
                 "--config.model.decoder.scan_layers=False", *TINY_GRIDS)
  model = run_objects.make_model(config, tokenizer)
  tokens, video = np.zeros((1, 2), np.int32), np.zeros((1, 2, 32, 32, 3), np.uint8)
  fresh = nn.unbox(model.init(jax.random.key(0), tokens, tokens, tokens + 1, tokens, video))
  merged = run_objects.insert_pretrained(config, {"params": fresh["params"], "batch_stats": {}})
  embedding = np.asarray(nn.unbox(merged["params"])["decoder"]["embed_tokens"]["embedding"])
  opt = hf_opt.load_hf_opt(tmp_path)[1]["embed_tokens"]["embedding"]
  np.testing.assert_array_equal(embedding[:own], opt[:own])  # the tokenizer's own tokens: the OPT's rows
  tags = slice(own, tokenizer.vocab_size)
  initial = np.asarray(nn.unbox(fresh["params"])["decoder"]["embed_tokens"]["embedding"])
  np.testing.assert_array_equal(embedding[tags], initial[tags])  # the tags': fresh, as the rows past the OPT's
