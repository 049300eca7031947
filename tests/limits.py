"""Measure a refusal: it must come fast and small, as a bounded reader's must (issue 30: under a second and
under 100 MB for a file of a few KB)."""
import re
import time
import tracemalloc
from typing import Callable

import pytest

MAX_SECONDS = 1.0
MAX_BYTES = 100 * 2**20


def assert_refused_quickly(read: Callable[[], object], error: type[Exception], match: str) -> tuple[float, int]:
  """`read()` raises `error` matching `match` within MAX_SECONDS, its Python and NumPy allocations peaking
  under MAX_BYTES (tracemalloc). Returns (seconds, peak bytes)."""
  tracemalloc.start()
  start = time.perf_counter()
  try:
    with pytest.raises(error) as raised:
      read()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert re.search(match, str(raised.value)), f"{raised.value!s:.500} does not match {match!r}"
  assert seconds < MAX_SECONDS, f"refused after {seconds:.2f} s"
  assert peak < MAX_BYTES, f"refused after allocating {peak / 2**20:.0f} MiB"
  return seconds, peak
