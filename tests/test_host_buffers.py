"""The cache of XLA:CPU's large host buffers (cropjax/host_buffers.py)."""

import ctypes
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cropjax.models  # noqa: F401  (installs the cache)
from cropjax import host_buffers

MIB = 1 << 20
EXPECTED = sys.platform == 'linux' and platform.machine() in ('x86_64', 'aarch64')
pytestmark = pytest.mark.skipif(
    not EXPECTED or os.environ.get('CROPJAX_HOST_BUFFERS') == '0',
    reason='no host-buffer extension on this platform, or turned off')


@pytest.fixture
def lib():
  """The extension with an empty cache; the default limit is restored afterwards."""
  lib = host_buffers._library()
  lib.CropjaxHostBuffersAllocate.restype = ctypes.c_void_p
  lib.CropjaxHostBuffersAllocate.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
  lib.CropjaxHostBuffersFree.argtypes = [ctypes.c_void_p]
  host_buffers.release()
  yield lib
  host_buffers.release()
  lib.CropjaxHostBuffersInstall(host_buffers.JAXLIB_OBJECT.encode(), host_buffers.default_limit())


def test_installed_where_built():
  # A build that silently lost the extension must fail here, not slow every step down.
  if host_buffers._jaxlib_version() in host_buffers.TESTED_JAXLIB:
    assert host_buffers.install() is None
  else:  # an untested jaxlib: off, and saying why
    assert 'not one it was tested with' in host_buffers.install()


def test_off_on_an_untested_jaxlib_unless_forced():
  tested = host_buffers.TESTED_JAXLIB[0]
  assert host_buffers._why_off('1', tested) is None
  assert 'jaxlib 0.99.0 is not one it was tested with' in host_buffers._why_off('1', '0.99.0')
  assert 'jaxlib None' in host_buffers._why_off('1', None)
  assert host_buffers._why_off('force', '0.99.0') is None
  assert host_buffers._why_off('0', tested) == 'CROPJAX_HOST_BUFFERS=0'


def test_freed_blocks_are_reused_when_they_fit(lib):
  alloc, free = lib.CropjaxHostBuffersAllocate, lib.CropjaxHostBuffersFree
  p = alloc(32 * MIB, 64)
  ctypes.memset(p, 7, 32 * MIB)
  free(p)
  assert host_buffers.stats().blocks == 1 and host_buffers.stats().bytes >= 32 * MIB
  q = alloc(20 * MIB, 64)  # would waste more than a quarter of p
  assert q != p
  r = alloc(30 * MIB, 64)
  assert r == p and host_buffers.stats().blocks == 0
  assert ctypes.string_at(r, 4) == b'\7' * 4  # the same live block, not a fresh one
  s = alloc(30 * MIB, 64)  # nothing cached now: a fresh block
  assert s not in (p, q)
  for b in (q, r, s):
    free(b)
  assert host_buffers.stats().blocks == 3
  big = alloc(31 * MIB, 2 * MIB)  # alignment is honoured
  assert big % (2 * MIB) == 0
  free(big)


def test_small_blocks_go_straight_to_glibc(lib):
  p = lib.CropjaxHostBuffersAllocate(host_buffers.MIN_BYTES // 2, 64)
  lib.CropjaxHostBuffersFree(p)
  assert host_buffers.stats().blocks == 0


def test_limits_evict_the_oldest_first(lib):
  alloc, free = lib.CropjaxHostBuffersAllocate, lib.CropjaxHostBuffersFree
  lib.CropjaxHostBuffersInstall(host_buffers.JAXLIB_OBJECT.encode(), 70 * MIB)
  a, b, c = alloc(32 * MIB, 64), alloc(32 * MIB, 64), alloc(80 * MIB, 64)
  free(a)
  free(b)
  assert host_buffers.stats().blocks == 2
  free(c)  # over the limit on its own: back to glibc, the cache untouched
  assert host_buffers.stats().blocks == 2
  d = alloc(32 * MIB, 64)
  assert d in (a, b)
  lib.CropjaxHostBuffersInstall(host_buffers.JAXLIB_OBJECT.encode(), 1 << 40)
  blocks = [alloc(16 * MIB, 64) for _ in range(10)]
  for p in [d, *blocks]:
    free(p)
  assert host_buffers.stats().blocks == 8  # at most eight blocks: the newest
  kept = [alloc(16 * MIB, 64) for _ in range(8)]
  assert sorted(kept) == sorted(blocks[2:])
  for p in kept:
    free(p)


def _settled(deadline_s: float = 60.0) -> host_buffers.Stats:
  """The cache's stats once XLA has freed the last execution's temporaries.

  An execution's outputs are ready before its temporaries are freed, so a
  caller that runs again at once may allocate before the free (a miss, and a
  second block): that overlap is scheduling, not a property of the cache.
  """
  end = time.monotonic() + deadline_s
  while host_buffers.stats().blocks == 0 and time.monotonic() < end:
    time.sleep(0.01)
  return host_buffers.stats()


@pytest.mark.skipif(host_buffers.install() is not None, reason='the cache is not installed')
def test_xla_reuses_its_temporaries_with_exact_results(lib):
  f = jax.jit(lambda x: (x * 2 + 1).T @ (x * 2 + 1))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4096, 1280), np.float32))
  temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
  assert temp >= host_buffers.MIN_BYTES, temp  # the case this test is about
  first = np.asarray(f(x))
  for _ in range(3):
    before = _settled()
    assert before.blocks >= 1  # the temporaries XLA freed are held, not unmapped
    again = np.asarray(f(x))
    # Once its block is back, the next execution's temporaries come from the cache.
    assert host_buffers.stats().hits > before.hits
    np.testing.assert_array_equal(again, first)
  xd = np.asarray(x, np.float64) * 2 + 1
  np.testing.assert_allclose(first, xd.T @ xd, rtol=1e-4)


def test_environment_turns_it_off():
  code = ('import cropjax.models; from cropjax import host_buffers as h; '
          'print(h.install()); print(h.stats().blocks)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       env={**os.environ, 'CROPJAX_HOST_BUFFERS': '0'}).stdout.split('\n')
  assert out[:2] == ['CROPJAX_HOST_BUFFERS=0', '0']
