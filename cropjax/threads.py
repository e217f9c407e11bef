"""Host work spread over the cores this process may use, on threads.

OpenCV, Pillow and NumPy release the GIL in their kernels, so per-image work
(template matching, warps, resizes, decoding) runs side by side on threads;
the results are the same as one after another, in the same order.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
from typing import Callable, Iterable, TypeVar

T = TypeVar('T')
R = TypeVar('R')

_PREFIX = 'cropjax-host'


def workers() -> int:
  """The cores this process may run on (its CPU affinity where the OS says)."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def _pool() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(workers(), thread_name_prefix=_PREFIX)


def map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:  # noqa: A001 -- like builtins.map
  """[fn(x) for x in items], on the pool's threads where that can help: with one core, one item,
  or when called from one of the pool's own threads (no nesting), in this thread."""
  items = list(items)
  if (len(items) < 2 or workers() < 2
      or threading.current_thread().name.startswith(_PREFIX)):
    return [fn(x) for x in items]
  return list(_pool().map(fn, items))
