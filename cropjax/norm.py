"""BatchNorm with `nn.BatchNorm`'s variables and numerics, and per-channel sums as dots.

XLA:CPU reduces an NHWC tensor over N, H and W at about 1 GB/s (a column
reduction); the same sums written as a ones-vector matrix product run 3 to 5
times faster (scripts/bench.py). Training-mode statistics and the gradient's
two sums use that form, through a custom VJP. Variables are those of
`flax.linen.BatchNorm` ('scale', 'bias' params; 'mean', 'var' batch_stats), so
checkpoints and the torchvision converter are unaffected. The variance is
computed in two passes, E[(x - E[x])^2], which keeps torch's accuracy where
E[x^2] - E[x]^2 cancels.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def channel_sum(x: jax.Array) -> jax.Array:
  """Sum over every axis but the last, as one (1 x N) @ (N x C) product, in float32."""
  flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
  return (jnp.ones((1, flat.shape[0]), jnp.float32) @ flat)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float):
  """Normalises with batch statistics: (y, mean, var), statistics in float32."""
  return _forward(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
  n = x.size // x.shape[-1]
  mean = channel_sum(x) / n
  var = channel_sum(jnp.square(x.astype(jnp.float32) - mean)) / n  # two passes, as torch
  inv = jax.lax.rsqrt(var + epsilon)
  y = ((x.astype(jnp.float32) - mean) * (inv * scale) + bias).astype(x.dtype)
  return (y, mean, var), (x, scale, mean, inv)


def _backward(epsilon, residuals, cotangents):
  x, scale, mean, inv = residuals
  dy, dmean, dvar = cotangents
  n = x.size // x.shape[-1]
  xf = x.astype(jnp.float32)
  xhat = (xf - mean) * inv
  dyf = dy.astype(jnp.float32)
  dbias = channel_sum(dyf)
  dscale = channel_sum(dyf * xhat)
  dx = (scale * inv) * (dyf - (dbias + xhat * dscale) / n)
  # The statistics' own cotangents (zero when only y feeds the loss).
  dx = dx + dmean / n + dvar * 2.0 * (xf - mean) / n
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


batch_norm_train.defvjp(_forward, _backward)


class BatchNorm(nn.Module):
  """Drop-in for `nn.BatchNorm` over the last axis (NHWC)."""
  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
    use_running_average = nn.merge_param(
        'use_running_average', self.use_running_average, use_running_average)
    features = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros(features, jnp.float32))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones(features, jnp.float32))
    scale = self.param('scale', nn.initializers.ones, (features,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (features,), self.param_dtype)
    dtype = self.dtype or x.dtype
    if use_running_average:
      inv = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
      y = (x.astype(jnp.float32) - ra_mean.value) * inv + bias
      return y.astype(dtype)
    y, mean, var = batch_norm_train(x, scale.astype(jnp.float32), bias.astype(jnp.float32),
                                    self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(dtype)
