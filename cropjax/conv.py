"""A drop-in `nn.Conv` replacement that routes around XLA:CPU's slow convolutions.

XLA's CPU convolutions collapse on small feature maps (a 3x3 convolution over
a 2x2x512 map runs at about 2 GFLOP/s), reach 50-70 % of a matrix product's
speed elsewhere, and make XLA transpose activations for their kernel gradients
(see docs/benchmarks.md). `Conv` keeps `nn.Conv`'s parameter ('kernel', HWIO)
and numerics, and on CPU picks a formulation per layer and per direction
(forward, input gradient, kernel gradient) from its static shapes:

* 'onednn': oneDNN's convolution through XLA's FFI (`cropjax.onednn`);
* 'matmul': 1x1 convolutions, as a strided slice and one matrix product;
* 'im2col': padding, k*k shifted slices concatenated, one matrix product;
* 'xla':    `lax.conv_general_dilated`, XLA's own convolution.

A plan names one formulation for all three directions ('xla') or one each,
'forward/input-gradient/kernel-gradient' ('onednn/onednn/xla'). On GPU and
TPU, and when `impl='xla'`, it is XLA's convolution.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cropjax import onednn

# torchvision initialises convolutions with kaiming_normal_(mode='fan_out', nonlinearity='relu').
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _onednn_ok(dtype) -> bool:
  """oneDNN runs float32 on one CPU device (its custom calls have no sharding rule)."""
  return jnp.dtype(dtype) == jnp.float32 and jax.device_count() == 1 and onednn.available()


def choose_impl(input_hw: tuple[int, int], in_features: int, kernel_size: Sequence[int],
                strides: Sequence[int], backend: str | None = None,
                dtype: Any = jnp.float32) -> str:
  """The plan for a convolution of these static shapes: see the module docstring."""
  backend = backend or jax.default_backend()
  if backend != 'cpu':
    return 'xla'
  # Measured on the CPU (docs/benchmarks.md: scripts/bench.py --sections convs,
  # whole steps in alternating A/B runs). XLA's convolution and its gradients
  # collapse to 3-12 GFLOP/s when the output is 2x2; as matrix products
  # (im2col, or the 1x1 product) those run at about 180, and beat oneDNN there
  # in whole steps.
  out_pixels = -(-input_hw[0] // strides[0]) * -(-input_hw[1] // strides[1])
  one_by_one = tuple(kernel_size) == (1, 1)
  if out_pixels <= 4:
    return 'matmul' if one_by_one else 'im2col'
  # Elsewhere oneDNN, in all three directions: it works on NHWC, where XLA's
  # kernel gradients make it transpose activations and kernels around them
  # (34 transposes a step in ResNet-18).
  if _onednn_ok(dtype):
    return 'onednn'
  return 'matmul' if one_by_one else 'xla'


def _pad(x: jax.Array, padding) -> jax.Array:
  (pt, pb), (pl, pr) = padding
  if pt or pb or pl or pr:
    x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  return x


def conv_matmul(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
  """1x1 convolution as a (strided) slice and one matrix product."""
  x = _pad(x, padding)
  if strides != (1, 1):
    x = x[:, ::strides[0], ::strides[1], :]
  return jnp.einsum('bhwc,cd->bhwd', x, kernel[0, 0])


def conv_im2col(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
  """k x k convolution as k*k shifted slices, concatenated, and one matrix product."""
  kh, kw, cin, cout = kernel.shape
  x = _pad(x, padding)
  b, h, w, _ = x.shape
  oh, ow = (h - kh) // strides[0] + 1, (w - kw) // strides[1] + 1
  cols = [x[:, i:i + strides[0] * (oh - 1) + 1:strides[0],
            j:j + strides[1] * (ow - 1) + 1:strides[1], :]
          for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(cols, axis=-1)  # (b, oh, ow, kh*kw*cin), HWI order
  return jnp.einsum('bhwk,kd->bhwd', patches, kernel.reshape(kh * kw * cin, cout))


def conv_xla(x: jax.Array, kernel: jax.Array, strides, padding) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


_IMPLS = {'xla': conv_xla, 'im2col': conv_im2col, 'matmul': conv_matmul, 'onednn': onednn.conv}


def split_plan(impl: str) -> tuple[str, str, str]:
  """('forward', 'input gradient', 'kernel gradient') formulations of a plan."""
  parts = tuple(impl.split('/'))
  if len(parts) == 1:
    parts = parts * 3
  if len(parts) != 3 or any(p not in _IMPLS for p in parts):
    raise ValueError(f'unknown convolution plan {impl!r}: use one of {sorted(_IMPLS)} or '
                     f"three joined by '/' (forward/input-gradient/kernel-gradient)")
  return parts


def _kernel_grad(impl: str, x, kernel, dy, strides, padding):
  """d(loss)/d(kernel) as one 2-D matrix product (XLA's own for 'xla', oneDNN's for 'onednn')."""
  kh, kw, cin, cout = kernel.shape
  if impl == 'onednn':
    return onednn.conv_kernel_grad(x, dy, kernel.shape, strides, padding)
  if impl == 'matmul':
    x = _pad(x, padding)[:, ::strides[0], ::strides[1], :]
    return (x.reshape(-1, cin).T @ dy.reshape(-1, cout)).reshape(kernel.shape)
  if impl == 'im2col':
    x = _pad(x, padding)
    oh, ow = dy.shape[1:3]
    cols = [x[:, i:i + strides[0] * (oh - 1) + 1:strides[0],
              j:j + strides[1] * (ow - 1) + 1:strides[1], :]
            for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(cols, axis=-1).reshape(-1, kh * kw * cin)
    return (patches.T @ dy.reshape(-1, cout)).reshape(kernel.shape)
  return jax.vjp(lambda k: conv_xla(x, k, strides, padding), kernel)[1](dy)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv(x: jax.Array, kernel: jax.Array, strides, padding, impl: str) -> jax.Array:
  """NHWC x HWIO convolution with the plan `impl`; see `Conv`."""
  return _IMPLS[split_plan(impl)[0]](x, kernel, strides, padding)


def _conv_fwd(x, kernel, strides, padding, impl):
  return _IMPLS[split_plan(impl)[0]](x, kernel, strides, padding), (x, kernel)


def _conv_bwd(strides, padding, impl, residuals, dy):
  x, kernel = residuals
  _, dx_impl, dk_impl = split_plan(impl)
  if dx_impl == 'onednn':
    dx = onednn.conv_input_grad(dy, kernel, x.shape, strides, padding)
  else:
    # XLA's transposed convolution, or the transpose of the slices (pads and
    # adds) for im2col and matmul, as autodiff derives it.
    _, input_vjp = jax.vjp(lambda x: _IMPLS[dx_impl](x, kernel, strides, padding), x)
    dx = input_vjp(dy)[0]
  dk = _kernel_grad(dk_impl, x, kernel, dy, strides, padding).astype(kernel.dtype)
  return dx, dk


conv.defvjp(_conv_fwd, _conv_bwd)


class Conv(nn.Module):
  """NHWC convolution with explicit padding; parameters as `nn.Conv` ('kernel', HWIO)."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0))
  use_bias: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Any = KAIMING_FAN_OUT
  impl: str = 'auto'  # 'auto' or a plan: 'xla', 'im2col', 'matmul', 'onednn', 'onednn/onednn/xla', ...

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel_size, strides = tuple(self.kernel_size), tuple(self.strides)
    padding = tuple(tuple(p) for p in self.padding)
    kernel = self.param('kernel', self.kernel_init,
                        (*kernel_size, x.shape[-1], self.features), self.param_dtype)
    impl = self.impl
    if impl == 'auto':
      impl = choose_impl(x.shape[1:3], x.shape[-1], kernel_size, strides, dtype=self.dtype)
    if 'matmul' in split_plan(impl) and kernel_size != (1, 1):
      raise ValueError(f"impl='matmul' needs a 1x1 kernel, got {kernel_size}")
    x, kernel = jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype)
    y = conv(x, kernel, strides, padding, impl)
    if self.use_bias:
      y = y + jnp.asarray(self.param('bias', nn.initializers.zeros, (self.features,),
                                     self.param_dtype), self.dtype)
    return y
