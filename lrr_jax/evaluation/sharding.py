"""Evaluation over several processes: each takes every P-th record, and the results are gathered in order.
Params sharded across hosts are first gathered whole (`distributed.whole_arrays`).

Every process calls these the same number of times (they are collectives when there is more than one).
"""
import jax
from jax.experimental import multihost_utils
import numpy as np


def my_records(count: int) -> list[int]:
  """The record indices this process evaluates: i, i + P, i + 2P, ... of range(count)."""
  return list(range(jax.process_index(), count, jax.process_count()))


def gather_rows(rows: np.ndarray, count: int) -> np.ndarray:
  """This process's rows [n, ...] for `my_records(count)` -> all `count` rows in record order, everywhere.
  Rows of different processes may differ in their last dimension (zero-padded to the widest)."""
  processes = jax.process_count()
  if processes == 1:
    return rows
  width = int(np.max(multihost_utils.process_allgather(np.int32(rows.shape[-1]))))
  padded = np.zeros((-(-count // processes), *rows.shape[1:-1], width), rows.dtype)
  padded[:rows.shape[0], ..., :rows.shape[-1]] = rows
  gathered = np.asarray(multihost_utils.process_allgather(padded))  # [P, rows per process, ...]
  return np.stack([gathered[i % processes, i // processes] for i in range(count)])


def gather_texts(texts: list[str], count: int) -> list[str]:
  """`gather_rows` for texts (as zero-padded UTF-8 bytes)."""
  if jax.process_count() == 1:
    return list(texts)
  encoded = [t.encode("utf-8") for t in texts]
  array = np.zeros((len(encoded), max((len(e) for e in encoded), default=1)), np.uint8)
  for row, data in zip(array, encoded):
    row[:len(data)] = np.frombuffer(data, np.uint8)
  return [bytes(row).rstrip(b"\0").decode("utf-8") for row in gather_rows(array, count)]
