"""cropjax.models against torchvision: architecture, parameter counts, BatchNorm."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cropjax import models
from cropjax import weights
from oracle import random_torchvision, rel_error, state_dict_numpy, torch

ARCHS = ['resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152']


def _param_count(model) -> int:
  x = jax.ShapeDtypeStruct((1, 64, 64, model.in_channels), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  return models.count_params(shapes['params'])


@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_count_equals_torchvision(arch):
  ref = sum(p.numel() for p in random_torchvision(arch).parameters())
  assert _param_count(models.get(arch, num_classes=1000)) == ref


def test_published_parameter_counts():
  assert _param_count(models.ResNet18(num_classes=1000)) == 11_689_512
  assert _param_count(models.ResNet50(num_classes=1000)) == 25_557_032


@pytest.mark.parametrize('arch,channels', [('resnet18', 512), ('resnet50', 2048), ('tiny', 64)])
def test_features_only_returns_last_feature_map(arch, channels):
  model = models.get(arch, num_classes=None, in_channels=6)
  x = jax.ShapeDtypeStruct((2, 64, 96, 6), jnp.float32)
  out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], x)
  assert out.shape == (2, 2, 3, channels) == (2, 2, 3, model.num_features)


def test_wrong_input_channels_is_a_clear_error():
  model = models.TinyResNet(in_channels=6)
  with pytest.raises(ValueError, match='6 channels.*got shape \\(1, 32, 32, 3\\)'):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_unknown_architecture():
  with pytest.raises(ValueError, match="unknown architecture 'resnet17'"):
    models.get('resnet17')


def test_normalize_matches_torchvision_transform():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  expected = (img / 255.0 - models.IMAGENET_MEAN) / models.IMAGENET_STD
  np.testing.assert_allclose(models.normalize(img), expected, atol=1e-5)
  pair = models.normalize(np.concatenate([img, img], -1))
  np.testing.assert_allclose(pair[..., 3:], expected, atol=1e-5)
  with pytest.raises(ValueError):
    models.normalize(img[..., :2])


def test_bfloat16_compute_keeps_float32_params_and_stays_close():
  model32 = models.TinyResNet(num_classes=10)
  model16 = models.TinyResNet(num_classes=10, dtype=jnp.bfloat16)
  variables = models.init(model32, jax.random.key(1), 32)
  x = jax.random.normal(jax.random.key(2), (4, 32, 32, 3))
  y32 = jax.jit(model32.apply)(variables, x)
  y16 = jax.jit(model16.apply)(variables, x)
  assert y16.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(
      models.init(model16, jax.random.key(1), 32)))
  assert 0 < rel_error(y16, y32) < 0.05


@pytest.mark.parametrize('arch', ['resnet18', 'resnet50'])
def test_train_mode_matches_torch_batchnorm(arch):
  """Training-mode outputs and running means follow torch (momentum 0.1, eps 1e-5)."""
  tmodel = random_torchvision(arch, seed=3)
  variables = weights.convert(state_dict_numpy(tmodel), arch)
  x = np.random.default_rng(3).standard_normal((4, 64, 64, 3)).astype(np.float32)
  tmodel.train()
  with torch.no_grad():
    ref = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  apply = functools.partial(models.get(arch).apply, train=True, mutable=['batch_stats'])
  out, updated = jax.jit(apply)(variables, x)
  assert rel_error(out, ref) < 1e-4
  new = weights.convert(state_dict_numpy(tmodel), arch)['batch_stats']
  for path in [('stem_bn', 'mean'), ('layer3_0', 'bn2', 'mean'), ('layer4_1', 'bn1', 'mean')]:
    got, want = updated['batch_stats'], new
    for p in path:
      got, want = got[p], want[p]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # torch updates running_var with the unbiased batch variance, flax with the biased
  # one: identical up to n/(n-1), n = pixels x batch (here 4*16*16 for the stem).
  n = 4 * 32 * 32
  old = variables['batch_stats']['stem_bn']['var']
  got = updated['batch_stats']['stem_bn']['var']
  batch_var_biased = (got - 0.9 * old) / 0.1
  want_var_unbiased = (new['stem_bn']['var'] - 0.9 * old) / 0.1
  np.testing.assert_allclose(batch_var_biased * n / (n - 1), want_var_unbiased, rtol=1e-3)
