"""The CPU-friendly layers (conv, max-pool, BatchNorm) against their references."""


import ctypes
import os
import platform
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cropjax import conv as conv_lib
from cropjax import onednn
from cropjax.norm import BatchNorm
from cropjax.pool import max_pool_3x3_s2
from oracle import rel_error, torch


@pytest.mark.parametrize('impl,k,stride,hw', [
    ('xla', 3, 1, (9, 10)), ('im2col', 3, 1, (9, 10)), ('im2col', 3, 2, (9, 10)),
    ('im2col', 7, 2, (16, 13)), ('matmul', 1, 1, (6, 7)), ('matmul', 1, 2, (7, 6)),
    ('onednn', 3, 1, (9, 10)), ('onednn', 3, 2, (9, 10)), ('onednn', 7, 2, (16, 13)),
    ('onednn', 1, 2, (7, 6)), ('onednn/onednn/xla', 3, 2, (8, 8)),
    ('matmul/matmul/onednn', 1, 1, (6, 7)), ('im2col/onednn/matmul', 1, 1, (5, 5)),
])
def test_conv_formulations_match_xla_with_gradients(impl, k, stride, hw):
  if 'onednn' in impl and not onednn.available():
    pytest.skip('oneDNN convolutions not built here')
  rng = np.random.default_rng(k * 10 + stride)
  x = jnp.asarray(rng.standard_normal((3, *hw, 5)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((k, k, 5, 4)), jnp.float32)
  pad = ((k // 2, k // 2),) * 2
  # Compiled, as in a model (op by op, a 7x7 im2col's 49 slices take seconds).
  conv = jax.jit(lambda x, w: conv_lib.conv(x, w, (stride, stride), pad, impl))
  xla = jax.jit(lambda x, w: conv_lib.conv_xla(x, w, (stride, stride), pad))
  f = lambda x, w: jnp.sum(jnp.sin(conv(x, w)))
  ref = lambda x, w: jnp.sum(jnp.sin(xla(x, w)))
  y = conv(x, w)
  assert y.shape == xla(x, w).shape
  assert rel_error(y, xla(x, w)) < 1e-5
  for got, want in zip(jax.jit(jax.grad(f, (0, 1)))(x, w), jax.jit(jax.grad(ref, (0, 1)))(x, w)):
    assert rel_error(got, want) < 1e-5


# The package's wheel and its oneDNN extension exist for Linux x86-64; there, a
# build that silently lost the extension must fail the suite, not slow it down.
ONEDNN_EXPECTED = sys.platform == 'linux' and platform.machine() == 'x86_64'


@pytest.mark.skipif(not ONEDNN_EXPECTED or os.environ.get('CROPJAX_ONEDNN') == '0',
                    reason='no oneDNN extension on this platform, or turned off')
def test_onednn_is_available_where_it_is_built():
  assert onednn.available(), onednn._load()


def test_another_libdnnl_version_switches_onednn_off():
  assert onednn._version_problem((*onednn.BUILT_FOR, 7)) is None
  assert 'built for 3.2.x' in onednn._version_problem((3, 9, 0))
  assert 'does not report' in onednn._version_problem(None)


@pytest.mark.skipif(not ONEDNN_EXPECTED, reason='no oneDNN wheel on this platform')
def test_the_installed_libdnnl_is_the_one_built_for():
  lib = ctypes.CDLL(str(onednn._libdnnl()))
  assert onednn._libdnnl_version(lib)[:2] == onednn.BUILT_FOR


def test_conv_policy():
  on = onednn.available()
  assert conv_lib.choose_impl((2, 2), 512, (3, 3), (1, 1), backend='cpu') == 'im2col'
  assert conv_lib.choose_impl((4, 4), 256, (3, 3), (2, 2), backend='cpu') == 'im2col'
  assert conv_lib.choose_impl((16, 16), 64, (3, 3), (1, 1), backend='cpu') == (
      'onednn' if on else 'xla')
  assert conv_lib.choose_impl((16, 16), 64, (1, 1), (1, 1), backend='cpu') == (
      'onednn' if on else 'matmul')
  assert conv_lib.choose_impl((16, 16), 64, (1, 1), (2, 2), backend='cpu') == (
      'onednn' if on else 'matmul')
  assert conv_lib.choose_impl((4, 4), 256, (1, 1), (2, 2), backend='cpu') == 'matmul'
  # oneDNN only in float32; elsewhere XLA.
  assert conv_lib.choose_impl((16, 16), 64, (3, 3), (1, 1), backend='cpu',
                              dtype=jnp.bfloat16) == 'xla'
  assert conv_lib.choose_impl((2, 2), 512, (3, 3), (1, 1), backend='gpu') == 'xla'


@pytest.mark.skipif(not onednn.available(), reason='oneDNN convolutions not built here')
def test_onednn_asymmetric_padding_under_jit_matches_xla():
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.standard_normal((2, 11, 6, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 2, 3, 5)), jnp.float32)
  pad, strides = ((2, 0), (0, 1)), (2, 1)
  loss = lambda impl: lambda x, w: jnp.sum(jnp.cos(conv_lib.conv(x, w, strides, pad, impl)))
  y = jax.jit(lambda x, w: conv_lib.conv(x, w, strides, pad, 'onednn'))(x, w)
  assert rel_error(y, conv_lib.conv_xla(x, w, strides, pad)) < 1e-5
  got = jax.jit(jax.grad(loss('onednn'), (0, 1)))(x, w)
  want = jax.grad(loss('xla'), (0, 1))(x, w)
  for a, b in zip(got, want):
    assert rel_error(a, b) < 1e-5


def test_conv_plans_are_checked():
  x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
  for bad in ('winograd', 'xla/xla', 'xla/onednn/fft'):
    with pytest.raises(ValueError, match='unknown convolution plan'):
      conv_lib.conv(x, w, (1, 1), ((1, 1), (1, 1)), bad)
  if onednn.available():
    with pytest.raises(ValueError, match='float32 NHWC'):
      onednn.conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), (1, 1), ((1, 1), (1, 1)))
    with pytest.raises(ValueError, match='3 channels'):
      onednn.conv(jnp.ones((1, 4, 4, 3)), w, (1, 1), ((1, 1), (1, 1)))


def test_conv_module_matches_nn_conv_and_refuses_bad_impl():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)
  ours = conv_lib.Conv(4, (3, 3), (2, 2), ((1, 1), (1, 1)), impl='im2col')
  v = ours.init(jax.random.key(0), x)
  ref = nn.Conv(4, (3, 3), (2, 2), ((1, 1), (1, 1)), use_bias=False)
  assert rel_error(ours.apply(v, x), ref.apply(v, x)) < 1e-5
  with pytest.raises(ValueError, match='1x1 kernel'):
    conv_lib.Conv(4, (3, 3), impl='matmul').init(jax.random.key(0), x)


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (2, 7, 9, 4), (1, 33, 32, 2)])
def test_max_pool_matches_torch_including_ties(shape):
  rng = np.random.default_rng(sum(shape))
  x = rng.integers(0, 3, shape).astype(np.float32)  # many ties: torch picks the first
  oh, ow = (shape[1] - 1) // 2 + 1, (shape[2] - 1) // 2 + 1
  dy = rng.standard_normal((shape[0], oh, ow, shape[3])).astype(np.float32)
  y, vjp = jax.vjp(max_pool_3x3_s2, jnp.asarray(x))
  tx = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
  ty = torch.nn.functional.max_pool2d(tx, 3, 2, 1)
  ty.backward(torch.from_numpy(dy.transpose(0, 3, 1, 2)))
  np.testing.assert_array_equal(y, ty.detach().numpy().transpose(0, 2, 3, 1))
  np.testing.assert_allclose(vjp(jnp.asarray(dy))[0], tx.grad.numpy().transpose(0, 2, 3, 1),
                             atol=1e-6)


@pytest.mark.parametrize('train', [True, False])
def test_batch_norm_matches_flax(train):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((4, 5, 6, 7)) * 3 + 10, jnp.float32)  # large mean
  kw = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5)
  ref, ours = nn.BatchNorm(**kw, use_fast_variance=False), BatchNorm(**kw)
  v = ref.init(jax.random.key(0), x)
  v = jax.tree_util.tree_map(lambda t: t + jax.random.uniform(jax.random.key(1), t.shape), v)
  y_ref, s_ref = ref.apply(v, x, mutable=['batch_stats'])
  y, s = ours.apply(v, x, mutable=['batch_stats'])
  assert rel_error(y, y_ref) < 1e-5
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), s, s_ref)

  def grads(m):
    loss = lambda p, x: jnp.sum(jnp.sin(m.apply({'params': p, 'batch_stats': v['batch_stats']},
                                                x, mutable=['batch_stats'])[0]))
    return jax.grad(loss, (0, 1))(v['params'], x)

  for got, want in zip(jax.tree_util.tree_leaves(grads(ours)), jax.tree_util.tree_leaves(grads(ref))):
    assert rel_error(got, want) < 1e-4


def test_batch_norm_bfloat16_keeps_float32_statistics():
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 4, 4, 3)), jnp.bfloat16)
  m = BatchNorm(use_running_average=False, dtype=jnp.bfloat16)
  v = m.init(jax.random.key(0), x)
  y, s = m.apply(v, x, mutable=['batch_stats'])
  assert y.dtype == jnp.bfloat16 and s['batch_stats']['mean'].dtype == jnp.float32
