"""torchvision's stem max-pool (3x3, stride 2, padding 1) without XLA's reduce-window.

On CPU, XLA's reduce-window and the select-and-scatter of its gradient took
over 10 % of a ResNet-18 train step (scripts/bench.py). Here the forward pass
is a maximum over nine strided slices and the gradient goes, as in torch, to
the first maximum of each window in row-major order, placed back with plain
pads in a space-to-depth view: elementwise work that XLA fuses.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _geometry(h: int, w: int) -> tuple[int, int]:
  return (h - 1) // 2 + 1, (w - 1) // 2 + 1


def _padded(x: jax.Array, oh: int, ow: int) -> jax.Array:
  """-inf padding: 1 before, and after up to 2 * (out + 1) rows and columns."""
  h, w = x.shape[1:3]
  return jnp.pad(x, ((0, 0), (1, 2 * (oh + 1) - h - 1), (1, 2 * (ow + 1) - w - 1), (0, 0)),
                 constant_values=-jnp.inf)


def _window(xp: jax.Array, i: int, j: int, oh: int, ow: int) -> jax.Array:
  return xp[:, i:i + 2 * (oh - 1) + 1:2, j:j + 2 * (ow - 1) + 1:2, :]


@jax.custom_vjp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """torch.nn.MaxPool2d(3, stride=2, padding=1) on NHWC input."""
  oh, ow = _geometry(*x.shape[1:3])
  xp = _padded(x, oh, ow)
  return functools.reduce(jnp.maximum, [_window(xp, i, j, oh, ow)
                                        for i in range(3) for j in range(3)])


def _fwd(x):
  y = max_pool_3x3_s2(x)
  return y, (x, y)


def _bwd(residuals, dy):
  x, y = residuals
  b, h, w, c = x.shape
  oh, ow = _geometry(h, w)
  xp = _padded(x, oh, ow)
  taken = jnp.zeros(y.shape, bool)
  # parts[si][sj]: gradient for padded rows 2a + si and columns 2b + sj, on the
  # (oh + 1) x (ow + 1) grid of 2x2 blocks.
  parts = [[jnp.zeros((b, oh + 1, ow + 1, c), dy.dtype) for _ in range(2)] for _ in range(2)]
  for i in range(3):
    for j in range(3):
      hit = (_window(xp, i, j, oh, ow) == y) & ~taken
      taken = taken | hit
      g = jnp.where(hit, dy, 0)
      bi, bj = i // 2, j // 2
      parts[i % 2][j % 2] += jnp.pad(g, ((0, 0), (bi, 1 - bi), (bj, 1 - bj), (0, 0)))
  rows = [jnp.stack(parts[si], axis=3) for si in range(2)]  # (b, oh+1, ow+1, 2, c)
  grid = jnp.stack(rows, axis=2)                              # (b, oh+1, 2, ow+1, 2, c)
  dxp = grid.reshape(b, 2 * (oh + 1), 2 * (ow + 1), c)
  return (dxp[:, 1:h + 1, 1:w + 1, :],)


max_pool_3x3_s2.defvjp(_fwd, _bwd)
