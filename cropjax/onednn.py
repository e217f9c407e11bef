"""oneDNN's CPU convolutions inside jitted JAX code, through XLA's FFI.

XLA:CPU's own convolutions reach 50-70 % of a matrix product's speed and make
XLA transpose activations for their kernel gradients; oneDNN (the library
PyTorch's CPU convolutions run on) works on NHWC directly. cropjax builds three
small handlers (cropjax/csrc/onednn_conv.cc: forward, input gradient, kernel
gradient) against the oneDNN wheel `onednn-cpu-gomp` at install time;
`cropjax.conv` uses them where they measured faster (docs/benchmarks.md).

Where the library was not built or cannot load (another OS or architecture, no
compiler at install time, a libdnnl of another version than the headers it was
built against), `available()` is False, one log line says why, and cropjax uses
XLA's own convolutions; importing cropjax never fails because of it.
`CROPJAX_ONEDNN=0` turns oneDNN off.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
from importlib import metadata
from pathlib import Path

import jax
import numpy as np

_TARGETS = {
    'cropjax_onednn_conv_fwd': 'CropjaxOnednnConvForward',
    'cropjax_onednn_conv_bwd_data': 'CropjaxOnednnConvBackwardData',
    'cropjax_onednn_conv_bwd_weights': 'CropjaxOnednnConvBackwardWeights',
}


# The oneDNN release cropjax/csrc/onednn_conv.cc is compiled against: the headers of
# onednn-devel-cpu-gomp==2023.2.0 (pyproject.toml), whose libdnnl (onednn-cpu-gomp==2023.2.0,
# setup.cfg) must be the same major.minor at run time.
BUILT_FOR = (3, 2)


class _Version(ctypes.Structure):
  _fields_ = [('major', ctypes.c_int), ('minor', ctypes.c_int), ('patch', ctypes.c_int),
              ('hash', ctypes.c_char_p), ('cpu_runtime', ctypes.c_uint),
              ('gpu_runtime', ctypes.c_uint)]


def _version_problem(found: tuple[int, int, int] | None) -> str | None:
  """Why a libdnnl of this version cannot serve the handlers, or None."""
  if found is None:
    return 'libdnnl does not report its version'
  if tuple(found[:2]) != BUILT_FOR:
    return (f'libdnnl is oneDNN {".".join(map(str, found))}, the handlers were built for '
            f'{".".join(map(str, BUILT_FOR))}.x')
  return None


def _libdnnl_version(lib: ctypes.CDLL) -> tuple[int, int, int] | None:
  try:
    fn = lib.dnnl_version
  except AttributeError:
    return None
  fn.restype = ctypes.POINTER(_Version)
  v = fn().contents
  return v.major, v.minor, v.patch


def _libdnnl() -> Path | None:
  try:
    files = metadata.distribution('onednn-cpu-gomp').files or []
  except metadata.PackageNotFoundError:
    return None
  for f in files:
    if f.name == 'libdnnl.so.3':
      return Path(f.locate())
  return None


@functools.cache
def _load() -> str | None:
  """Loads and registers the handlers once; None on success, else why not."""
  if os.environ.get('CROPJAX_ONEDNN', '1') == '0':
    return 'CROPJAX_ONEDNN=0'
  ours = sorted(Path(__file__).parent.glob('_onednn_conv*.so'))
  if not ours:
    return 'cropjax was installed without its oneDNN extension (see setup.py)'
  libdnnl = _libdnnl()
  if libdnnl is None or not libdnnl.exists():
    return 'the onednn-cpu-gomp package (libdnnl.so.3) is not installed'
  try:
    dnnl = ctypes.CDLL(str(libdnnl), mode=ctypes.RTLD_GLOBAL)  # our library's dnnl_* symbols
    problem = _version_problem(_libdnnl_version(dnnl))
    if problem is not None:
      return problem
    lib = ctypes.CDLL(str(ours[0]))
    for target, symbol in _TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                  platform='cpu')
  except Exception as e:  # noqa: BLE001 -- whatever fails here, XLA's convolutions still work
    return f'{ours[0].name} could not be loaded: {type(e).__name__}: {e}'
  return None


_disabled = [0]


@contextlib.contextmanager
def disabled():
  """Within this block, functions traced plan XLA's convolutions instead of oneDNN's."""
  _disabled[0] += 1
  try:
    yield
  finally:
    _disabled[0] -= 1


def available() -> bool:
  """True when oneDNN convolutions can run here (the library loaded, on the CPU)."""
  if _disabled[0]:
    return False
  why = _load()
  if why is not None:
    _log_once(why)
  return why is None


@functools.cache
def _log_once(why: str) -> None:
  logging.info('cropjax: oneDNN convolutions off (%s); using XLA convolutions', why)


def _attributes(strides, padding) -> dict[str, np.int64]:
  (pt, pb), (pl, pr) = padding
  return dict(sh=np.int64(strides[0]), sw=np.int64(strides[1]), pt=np.int64(pt),
              pb=np.int64(pb), pl=np.int64(pl), pr=np.int64(pr))


def _check(x: jax.Array, kernel_shape, what: str) -> None:
  why = _load()
  if why is not None:
    raise RuntimeError(f'oneDNN convolutions are not available: {why}')
  if x.dtype != np.float32 or x.ndim != 4 or len(kernel_shape) != 4:
    raise ValueError(f'{what}: oneDNN convolutions take float32 NHWC x HWIO arrays, got '
                     f'{x.dtype} {x.shape} and kernel {tuple(kernel_shape)}')


def output_shape(x_shape, kernel_shape, strides, padding) -> tuple[int, int, int, int]:
  (pt, pb), (pl, pr) = padding
  n, h, w, _ = x_shape
  kh, kw, _, o = kernel_shape
  return (n, (h + pt + pb - kh) // strides[0] + 1, (w + pl + pr - kw) // strides[1] + 1, o)


def conv(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
  """NHWC x HWIO convolution with explicit padding."""
  _check(x, kernel.shape, 'conv')
  if x.shape[-1] != kernel.shape[2]:
    raise ValueError(f'conv: input has {x.shape[-1]} channels, kernel expects {kernel.shape[2]}')
  out = jax.ShapeDtypeStruct(output_shape(x.shape, kernel.shape, strides, padding), x.dtype)
  return jax.ffi.ffi_call('cropjax_onednn_conv_fwd', out)(x, kernel,
                                                          **_attributes(strides, padding))


def conv_input_grad(dy: jax.Array, kernel: jax.Array, x_shape, strides, padding) -> jax.Array:
  """d(loss)/dx of `conv` given d(loss)/dy."""
  _check(dy, kernel.shape, 'conv_input_grad')
  out = jax.ShapeDtypeStruct(tuple(x_shape), dy.dtype)
  return jax.ffi.ffi_call('cropjax_onednn_conv_bwd_data', out)(dy, kernel,
                                                               **_attributes(strides, padding))


def conv_kernel_grad(x: jax.Array, dy: jax.Array, kernel_shape, strides, padding) -> jax.Array:
  """d(loss)/d(kernel) of `conv` given d(loss)/dy."""
  _check(x, kernel_shape, 'conv_kernel_grad')
  out = jax.ShapeDtypeStruct(tuple(kernel_shape), x.dtype)
  return jax.ffi.ffi_call('cropjax_onednn_conv_bwd_weights', out)(
      x, dy, **_attributes(strides, padding))
