"""Tokenizers: a local Hugging Face `tokenizer.json` (e.g. OPT's GPT-2 BPE), or a small byte-level BPE trained
on a generated world's text and saved beside its data.

Stage tags (`<SUMMARY>` ... `</CONCLUSION>`) and surrogate-task markers are single special tokens, so that a
stage's closing tag is one token that generation can stop on. Byte-level BPE decodes back to the exact text.
"""
import os
from typing import Iterable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from lrr_jax import files
from lrr_jax.data import rationales

PAD, BOS, EOS = "<pad>", "</s>", "</s>"  # OPT uses </s> (id 2) both to start and to end a text
TAGS = tuple(f"<{n}>" for n in rationales.STAGES) + tuple(f"</{n}>" for n in rationales.STAGES) + (
    "<detect>", "<track>", "<reid>")
MAX_FRAMES = 64
FRAME_MARKERS = tuple(f"frame {t}:" for t in range(MAX_FRAMES))  # text about frame t starts here


class Tokenizer:
  """A thin wrapper over `tokenizers.Tokenizer` with the ids the pipeline and generation need."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, source: str = "<memory>", base_size: int | None = None):
    self.tokenizer = tokenizer
    self.source = source
    # Ids below base_size are the file's own; the stage tags and frame markers a tokenizer lacked (OPT's GPT-2
    # BPE lacks all) are appended after them by `load`, and a pretrained model's embedding grows to hold them.
    self.base_size = tokenizer.get_vocab_size() if base_size is None else base_size
    self.pad_id = self._id(PAD, fallback="<pad>")
    self.eos_id = self._id(EOS, fallback="</s>")

  def _id(self, token: str, fallback: str) -> int:
    token_id = self.tokenizer.token_to_id(token)
    if token_id is None:
      token_id = self.tokenizer.token_to_id(fallback)
    if token_id is None:
      raise ValueError(f"Tokenizer {self.source} has no {token!r} token.")
    return token_id

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size()

  def token_id(self, token: str) -> int | None:
    return self.tokenizer.token_to_id(token)

  def frame_markers(self) -> dict[int, int]:
    """Token id of each `frame t:` marker -> t (empty for tokenizers without them, e.g. OPT's)."""
    ids = {self.token_id(marker): t for t, marker in enumerate(FRAME_MARKERS)}
    return {token_id: t for token_id, t in ids.items() if token_id is not None}

  def encode(self, text: str) -> list[int]:
    return self.tokenizer.encode(utf8_text(text, "text to encode"), add_special_tokens=False).ids

  def decode(self, ids: Iterable[int]) -> str:
    return self.tokenizer.decode(list(ids), skip_special_tokens=False)

  def save(self, path: str | os.PathLike) -> None:
    path = files.as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(self.tokenizer.to_str())


def utf8_text(text: str, source: str) -> str:
  """`text` if it is Unicode that UTF-8 can hold; else a ValueError naming `source` and the byte at fault.
  (Python reads command-line bytes that are not UTF-8 as lone surrogates, which the tokenizer cannot take.)"""
  try:
    text.encode("utf-8")
  except UnicodeEncodeError as e:
    raw = text.encode("utf-8", "surrogateescape")[e.start:e.start + 1]
    raise ValueError(f"{source} is not valid UTF-8: byte {raw.hex() if raw else '?'} at character {e.start} "
                     f"({text[:e.start][-40:]!r} before it).") from None
  return text


def load(path: str | os.PathLike) -> Tokenizer:
  """A `tokenizer.json` (local or gs://), or a directory holding one (as a Hugging Face model directory does)."""
  path = files.as_path(path)
  file = path / "tokenizer.json" if path.is_dir() else path
  if not file.is_file():
    raise FileNotFoundError(f"No tokenizer.json at {path}.")
  text = files.read_json_text(file)  # size, UTF-8 and nesting checked, the file named
  try:
    tokenizer = tokenizers.Tokenizer.from_str(text)
  except Exception as e:  # the tokenizers library raises a bare Exception on malformed files
    raise ValueError(f"{file} is not a valid tokenizer.json: {e}") from e
  base_size = tokenizer.get_vocab_size()
  missing = [t for t in (*TAGS, *FRAME_MARKERS) if tokenizer.token_to_id(t) is None]
  tokenizer.add_special_tokens(missing)  # ids from base_size on, in this fixed order: the same at every load
  return Tokenizer(tokenizer, str(file), base_size)


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
  """A byte-level BPE with the stage tags as special tokens, trained on `texts`."""
  bpe = tokenizers.Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, *TAGS, *FRAME_MARKERS],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  bpe.train_from_iterator(texts, trainer)
  return Tokenizer(bpe)
