"""Keeps XLA:CPU's large temporary buffers mapped between executions.

XLA:CPU allocates each execution's temporaries (for a ResNet train step, every
activation kept for the backward pass) as one block with `posix_memalign` and
frees it when the execution ends. glibc serves and returns blocks that large
with mmap/munmap, so every step faults its whole working set in again, one
4 KiB page at a time: 1.3 GB and about a third of the step for ResNet-50 at
224 px, batch 16, on a 2-core machine (docs/benchmarks.md).

`install()` points the `posix_memalign` and `free` entries of jaxlib's
libjax_common.so at a small cache (cropjax/csrc/host_buffers.cc): blocks of at
least 16 MiB that XLA frees are kept, still allocated, and handed back for the
next request they fit (no more than a quarter larger), the oldest going back to
glibc first once eight blocks or `limit` bytes (a quarter of physical memory by
default) are held. Everything else goes to glibc unchanged, and every cached
block is a live glibc allocation, so nothing depends on which path frees it.
This is what PyTorch's and TensorFlow's device allocators do on accelerators;
on CPU, XLA has no such pool.

cropjax installs it when `cropjax.models` is imported, on Linux with glibc
where the extension was built and on a jaxlib release it was tested with
(`TESTED_JAXLIB`; elsewhere it stays off with one log line, and
`CROPJAX_HOST_BUFFERS=force` installs it anyway); `CROPJAX_HOST_BUFFERS=0`
leaves glibc alone. It never changes results: a cached block is handed out
only where XLA asked for at least as many bytes at the same alignment.
`release()` returns the cached blocks, `stats()` says what is held.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import os
from importlib import metadata
from pathlib import Path

# The object whose allocations are cached: XLA:CPU's runtime in jaxlib.
JAXLIB_OBJECT = '/libjax_common.so'
MIN_BYTES = 16 << 20  # kMinBytes in host_buffers.cc
# jaxlib releases whose libjax_common.so this was tested with (tests/test_host_buffers.py and
# scripts/bench.py): where XLA:CPU's runtime lives and how it allocates can change with any release.
TESTED_JAXLIB = ('0.10.2',)


@dataclasses.dataclass(frozen=True)
class Stats:
  blocks: int  # blocks held now
  bytes: int  # their usable bytes
  hits: int  # requests served from the cache so far
  misses: int  # requests of at least MIN_BYTES that went to glibc


@functools.cache
def _library() -> ctypes.CDLL | None:
  ours = sorted(Path(__file__).parent.glob('_host_buffers*.so'))
  if not ours:
    return None
  lib = ctypes.CDLL(str(ours[0]))
  lib.CropjaxHostBuffersInstall.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
  lib.CropjaxHostBuffersInstall.restype = ctypes.c_int
  lib.CropjaxHostBuffersStats.argtypes = [ctypes.POINTER(ctypes.c_size_t)]
  lib.CropjaxHostBuffersRelease.restype = None
  return lib


def default_limit() -> int:
  """A quarter of physical memory, in bytes."""
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 4


def _why_off(setting: str, jaxlib_version: str | None) -> str | None:
  """Why the cache must stay off for this setting and jaxlib, or None."""
  if setting == '0':
    return 'CROPJAX_HOST_BUFFERS=0'
  if setting != 'force' and jaxlib_version not in TESTED_JAXLIB:
    return (f'jaxlib {jaxlib_version} is not one it was tested with {TESTED_JAXLIB}; '
            'CROPJAX_HOST_BUFFERS=force installs it anyway')
  return None


def _jaxlib_version() -> str | None:
  try:
    return metadata.version('jaxlib')
  except metadata.PackageNotFoundError:
    return None


@functools.cache
def install(limit: int | None = None) -> str | None:
  """Installs the cache once per process; None when installed, else why not."""
  why = _why_off(os.environ.get('CROPJAX_HOST_BUFFERS', '1'), _jaxlib_version())
  if why is None:
    import jax  # noqa: F401  (jaxlib's extension loads libjax_common.so)

    lib = _library()
    if lib is None:
      why = 'cropjax was installed without its host-buffer extension (see setup.py)'
    else:
      patched = lib.CropjaxHostBuffersInstall(JAXLIB_OBJECT.encode(),
                                              default_limit() if limit is None else limit)
      why = None if patched == 2 else (
          f'{patched} of the 2 entries of {JAXLIB_OBJECT} could be patched')
  if why is not None:
    logging.info('cropjax: XLA host buffers not cached (%s)', why)
  return why


def stats() -> Stats:
  """What the cache holds and how often it has served (zeros when not installed)."""
  lib = _library()
  out = (ctypes.c_size_t * 4)()
  if lib is not None:
    lib.CropjaxHostBuffersStats(out)
  return Stats(*out)


def release() -> None:
  """Returns every cached block to glibc (the cache stays installed)."""
  lib = _library()
  if lib is not None:
    lib.CropjaxHostBuffersRelease()
