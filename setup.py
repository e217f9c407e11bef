"""Builds cropjax's two C++ extensions for XLA:CPU (cropjax/csrc); the rest is setup.cfg.

Both are optional. Where oneDNN's headers (onednn-devel-cpu-gomp), jaxlib's XLA
FFI headers or a C++ compiler are missing, the install goes on without the
oneDNN convolutions and cropjax uses XLA's own (see cropjax/onednn.py); off
Linux, or without a compiler, XLA's host buffers are not cached
(cropjax/host_buffers.py).
"""

import platform
import sys
from importlib import metadata
from pathlib import Path

from setuptools import Extension, setup


def _include_dir(distribution: str, header: str) -> str | None:
  """The include directory D of an installed distribution's file D/header."""
  try:
    files = metadata.distribution(distribution).files or []
  except metadata.PackageNotFoundError:
    return None
  for f in files:
    if str(f).replace('\\', '/').endswith(header):
      return str(Path(f.locate()).parents[header.count('/')])
  return None


def _extensions() -> list[Extension]:
  return _onednn_extension() + _host_buffers_extension()


def _host_buffers_extension() -> list[Extension]:
  """cropjax/csrc/host_buffers.cc: needs Linux (glibc's dl_iterate_phdr, ELF) only."""
  if not sys.platform.startswith('linux') or platform.machine() not in ('x86_64', 'aarch64'):
    return []
  return [Extension('cropjax._host_buffers', ['cropjax/csrc/host_buffers.cc'], language='c++',
                    optional=True, extra_compile_args=['-std=c++17', '-O2', '-fvisibility=hidden'])]


def _onednn_extension() -> list[Extension]:
  onednn = _include_dir('onednn-devel-cpu-gomp', 'oneapi/dnnl/dnnl.hpp')
  xla_ffi = _include_dir('jaxlib', 'xla/ffi/api/ffi.h')
  if not onednn or not xla_ffi:
    print(f'cropjax: oneDNN convolutions not built (oneDNN headers: {onednn}, XLA FFI headers: '
          f'{xla_ffi}); XLA convolutions will be used')
    return []
  return [Extension(
      'cropjax._onednn_conv', ['cropjax/csrc/onednn_conv.cc'],
      include_dirs=[onednn, xla_ffi], language='c++', optional=True,
      # libdnnl is loaded by cropjax/onednn.py (from the onednn-cpu-gomp wheel) before
      # this library, so its symbols are left for the dynamic linker.
      extra_compile_args=['-std=c++17', '-O2', '-fvisibility=hidden'])]


setup(ext_modules=_extensions())
