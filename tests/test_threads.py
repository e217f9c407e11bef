"""cropjax.threads: host work on the process's cores, in order, without nesting."""

import threading

from cropjax import threads


def test_map_keeps_order_and_runs_nested_calls_in_the_calling_thread(monkeypatch):
  monkeypatch.setattr(threads, 'workers', lambda: 2)
  threads._pool.cache_clear()  # a pool of two threads: a nested map on it would wait forever
  try:
    def outer(k):
      inner = threads.map(lambda j: (j, threading.current_thread().name), range(3))
      return k, threading.current_thread().name, inner

    got = threads.map(outer, range(6))
  finally:
    threads._pool.cache_clear()
  assert [k for k, _, _ in got] == list(range(6))
  for _, name, inner in got:
    assert name.startswith('cropjax-host')                      # on the pool
    assert inner == [(j, name) for j in range(3)]               # nested: inline, in order


def test_map_on_one_core_runs_in_this_thread(monkeypatch):
  monkeypatch.setattr(threads, 'workers', lambda: 1)
  here = threading.current_thread().name
  assert threads.map(lambda k: (k * k, threading.current_thread().name), range(4)) == [
      (k * k, here) for k in range(4)]
