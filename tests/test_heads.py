"""Pair heads: boxes valid by construction, GIoU, and which examples each loss sees."""

import jax
import jax.numpy as jnp
import numpy as np

from cropjax import heads
from cropjax import models


def test_bounded_box_never_leaves_the_frame_or_inverts():
  logits = jax.random.normal(jax.random.key(0), (4096, 6)) * 30  # extreme logits too
  box = heads.bounded_box(logits)
  x0, y0, x1, y1 = np.moveaxis(np.asarray(box), -1, 0)
  assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 1).all() and (y1 <= 1).all()
  assert (x0 <= x1).all() and (y0 <= y1).all()
  moderate = np.asarray(heads.bounded_box(jax.random.normal(jax.random.key(1), (512, 6))))
  assert (moderate[:, 0] < moderate[:, 2]).all() and (moderate[:, 1] < moderate[:, 3]).all()


def test_bounded_box_can_express_any_box():
  target = jnp.array([0.1, 0.25, 0.7, 0.5])
  # margins and sizes as softmax parts: log of (x0, x1 - x0, 1 - x1) per axis
  parts = jnp.array([[0.1, 0.6, 0.3], [0.25, 0.25, 0.5]])
  np.testing.assert_allclose(heads.bounded_box(jnp.log(parts).reshape(6)), target, atol=1e-6)


def test_giou_against_hand_values():
  a = jnp.array([0.0, 0.0, 0.5, 0.5])
  b = jnp.array([0.25, 0.25, 0.75, 0.75])
  # intersection 1/16, union 7/16, hull 9/16: IoU 1/7, GIoU 1/7 - 2/9
  np.testing.assert_allclose(heads.giou(a, b), 1 / 7 - 2 / 9, rtol=1e-6)
  np.testing.assert_allclose(heads.giou(a, a), 1.0, rtol=1e-6)
  far = jnp.array([0.9, 0.9, 1.0, 1.0])
  assert heads.giou(a, far) < 0


def test_swap_and_box_losses_only_see_positives():
  out = {'is_pair': jnp.zeros((2, 2)), 'is_swapped': jnp.array([[5.0, -5.0], [5.0, -5.0]]),
         'box': jnp.array([[0.1, 0.1, 0.9, 0.9], [0.1, 0.1, 0.9, 0.9]])}
  batch = {'is_pair': jnp.array([1, 0]), 'is_swapped': jnp.array([0, 1]),
           'box': jnp.array([[0.1, 0.1, 0.9, 0.9], [0.0, 0.0, 0.2, 0.2]])}
  _, terms = heads.pair_loss(out, batch)
  # The negative's wrong swap label and far box would make these large.
  assert float(terms['is_swapped']) < 1e-3
  assert float(terms['l1']) < 1e-6 and float(terms['giou']) < 1e-6
  np.testing.assert_allclose(terms['is_pair'], np.log(2), rtol=1e-6)


def test_pair_model_outputs():
  model = heads.PairModel(models.TinyResNet(num_classes=None, in_channels=6))
  x = jnp.zeros((3, 32, 32, 6))
  v = model.init(jax.random.key(0), x)
  out = model.apply(v, x)
  assert out['is_pair'].shape == (3, 2) and out['is_swapped'].shape == (3, 2)
  assert out['box'].shape == (3, 4)


def test_crop_model_outputs_stay_in_range_even_with_huge_weights():
  model = heads.CropModel(models.TinyResNet(num_classes=None), max_angle=10.0)
  x = jax.random.uniform(jax.random.key(0), (16, 32, 32, 3)) * 50
  variables = model.init(jax.random.key(1), x)
  params = dict(variables['params'])
  for head in ('crop', 'angle'):  # saturate the heads
    params[head] = jax.tree_util.tree_map(lambda v: v * 1e4, params[head])
  variables = {**variables, 'params': params}
  out = model.apply(variables, x)
  crop, angle = np.asarray(out['crop']), np.asarray(out['angle'])
  assert crop.shape == (16, 4) and angle.shape == (16,)
  assert (crop >= 0).all() and (crop <= 1).all()
  assert (crop[:, 0] <= crop[:, 2]).all() and (crop[:, 1] <= crop[:, 3]).all()
  assert (np.abs(angle) <= 10.0).all() and np.abs(angle).max() > 9.0  # saturates at the bound


def test_crop_loss_terms():
  out = {'crop': jnp.array([[0.0, 0.0, 0.5, 0.5]]), 'angle': jnp.array([9.0])}
  batch = {'crop': jnp.array([[0.25, 0.25, 0.75, 0.75]]), 'angle': jnp.array([-9.0])}
  total, terms = heads.crop_loss(out, batch, {'l1': 1.0, 'giou': 0.0, 'angle': 2.0}, max_angle=45)
  np.testing.assert_allclose(terms['l1'], 0.25, rtol=1e-6)
  np.testing.assert_allclose(terms['giou'], 1 - (1 / 7 - 2 / 9), rtol=1e-6)
  np.testing.assert_allclose(terms['angle'], 18 / 45, rtol=1e-6)
  np.testing.assert_allclose(total, 0.25 + 2 * 18 / 45, rtol=1e-6)
