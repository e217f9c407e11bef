"""Pair heads: boxes valid by construction, GIoU, which examples each loss sees, and the matching
model's search, symmetry and reusable features."""

import functools

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
  v = models.init_variables(model, jax.random.key(0), x)
  out = jax.jit(model.apply)(v, x)
  assert out['is_pair'].shape == (3, 2) and out['is_swapped'].shape == (3, 2)
  assert out['box'].shape == (3, 4)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_a_planted_template_peaks_at_its_place_and_scale():
  rng = np.random.default_rng(0)
  original = _unit(rng.normal(size=(1, 8, 8, 16)))
  # The crop: rows 2-5 and columns 1-6 of the original (a window 0.5 high, 0.75 wide),
  # enlarged to 8 x 8 as the network sees a crop.
  rows = 2 + np.floor((np.arange(8) + 0.5) * 4 / 8).astype(int)
  cols = 1 + np.floor((np.arange(8) + 0.5) * 6 / 8).astype(int)
  crop = original[:, rows][:, :, cols]
  scores, boxes = heads.match_volume(jnp.asarray(original, jnp.float32),
                                     jnp.asarray(crop, jnp.float32), (0.25, 0.5, 0.75, 1.0))
  scores = np.asarray(scores[0])
  i, j = np.unravel_index(np.argmax(scores), scores.shape)
  np.testing.assert_allclose(boxes[i, j], [1 / 8, 2 / 8, 7 / 8, 6 / 8], atol=1e-6)
  assert scores[i, j] > 0.9
  second = np.sort(scores.ravel())[-2]
  assert scores[i, j] - second > 0.05
  # Every candidate lies in the frame, none inverted.
  assert (boxes >= 0).all() and (boxes <= 1 + 1e-6).all()
  assert (boxes[..., 2] > boxes[..., 0]).all() and (boxes[..., 3] > boxes[..., 1]).all()


def test_a_planted_template_peaks_at_its_place_in_letterboxed_images():
  # Both images kept at their aspect ratio at the top left of their squares: the original
  # 16 cells wide and 8 high (extent (1, 0.5)), the crop its columns 4-11, rows 2-5, 8 x 4
  # cells (extent (1, 0.5)); the rest of each square is padding that must not count.
  rng = np.random.default_rng(1)
  original = _unit(rng.normal(size=(1, 16, 16, 16)))
  crop = _unit(rng.normal(size=(1, 16, 16, 16)))  # padding: noise unrelated to the original
  rows = 2 + np.floor((np.arange(8) + 0.5) * 4 / 8).astype(int)
  cols = 4 + np.floor((np.arange(16) + 0.5) * 8 / 16).astype(int)
  crop[:, :8] = original[:, rows][:, :, cols]
  half = jnp.asarray([[1.0, 0.5]])
  scores, boxes = heads.match_volume(jnp.asarray(original, jnp.float32),
                                     jnp.asarray(crop, jnp.float32), (0.25, 0.5, 0.75, 1.0),
                                     extent_original=half, extent_crop=half)
  scores = np.asarray(scores[0])
  i, j = np.unravel_index(np.argmax(scores), scores.shape)
  # Fractions of the original itself: x 4/16-12/16, y 2/8-6/8.
  np.testing.assert_allclose(boxes[i, j], [0.25, 0.25, 0.75, 0.75], atol=1e-6)
  assert scores[i, j] > 0.9
  # Read as filling their squares, the same features find no such match.
  plain, _ = heads.match_volume(jnp.asarray(original, jnp.float32),
                                jnp.asarray(crop, jnp.float32), (0.25, 0.5, 0.75, 1.0))
  assert float(plain.max()) < scores[i, j] - 0.2


def test_pool_weights_cover_only_the_image():
  w = np.asarray(heads.pool_weights(np.array([[0.0, 1.0], [0.5, 1.0]], np.float32),
                                    jnp.asarray([1.0, 0.5]), 8, 2))
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
  assert (w[1, :, 4:] == 0).all()  # extent 0.5: nothing from the padding's cells 4-7
  # The second half of an image covering half the square: its two parts are cells 2 and 3.
  np.testing.assert_allclose(w[1, 1], np.eye(8)[[2, 3]], atol=1e-6)
  np.testing.assert_allclose(w[0, 0], [[0.25] * 4 + [0] * 4, [0] * 4 + [0.25] * 4], atol=1e-6)


def _matching(seed=0):
  model = heads.MatchingPairModel(models.TinyResNet(num_classes=None, outputs=(2, 3)))
  x = jax.random.uniform(jax.random.key(seed), (3, 64, 64, 6)) * 255
  return model, models.init_variables(model, jax.random.key(1), x), x


def test_swapping_the_inputs_swaps_the_direction():
  model, v, x = _matching()
  apply = jax.jit(model.apply)
  out = apply(v, x)
  swapped = apply(v, jnp.concatenate([x[..., 3:], x[..., :3]], -1))
  np.testing.assert_allclose(swapped['is_swapped'], out['is_swapped'][:, ::-1], atol=1e-5)
  np.testing.assert_allclose(swapped['is_pair'], out['is_pair'], atol=1e-5)
  np.testing.assert_allclose(swapped['box'], out['box'], atol=1e-5)
  box = np.asarray(out['box'])
  assert (box[:, :2] >= 0).all() and (box[:, 2:] <= 1).all() and (box[:, :2] < box[:, 2:]).all()


def test_cached_features_equal_recomputed_ones():
  model, v, x = _matching()
  encode = jax.jit(functools.partial(model.apply, method=model.encode))
  a, b = encode(v, x[..., :3]), encode(v, x[..., 3:])
  assert a.shape == (3, 8, 8, model.dim)
  np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, atol=1e-3)
  reused = jax.jit(functools.partial(model.apply, method=model.compare))(v, a, b)
  whole = jax.jit(model.apply)(v, x)
  for k in whole:
    np.testing.assert_allclose(reused[k], whole[k], rtol=1e-4, atol=1e-5)


def test_crop_model_outputs_stay_in_range_even_with_huge_weights():
  model = heads.CropModel(models.TinyResNet(num_classes=None), max_angle=10.0)
  x = jax.random.uniform(jax.random.key(0), (16, 32, 32, 3)) * 50
  variables = models.init_variables(model, jax.random.key(1), x)
  params = dict(variables['params'])
  for head in ('crop', 'angle'):  # saturate the heads
    params[head] = jax.tree_util.tree_map(lambda v: v * 1e4, params[head])
  variables = {**variables, 'params': params}
  out = jax.jit(model.apply)(variables, x)
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


def test_turned_corners_follow_the_metadata_geometry():
  from cropjax import metadata
  rng = np.random.default_rng(0)
  for _ in range(5):
    l, t = rng.uniform(0, 0.4, 2)
    r, b = rng.uniform(0.6, 1.0, 2)
    angle = float(rng.uniform(-30, 30))
    got = heads.turned_corners(jnp.array([l, t, r, b], jnp.float32), jnp.float32(angle))
    want = metadata.corners(metadata.Crop(l, t, r, b, angle), 1, 1)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_binned_angle_head_reads_out_bin_plus_residual_and_stays_in_range():
  model = heads.CropModel(models.TinyResNet(num_classes=None), max_angle=10.0, angle_bins=21)
  x = jax.random.uniform(jax.random.key(0), (8, 32, 32, 3))
  variables = models.init_variables(model, jax.random.key(1), x)
  out = jax.jit(model.apply)(variables, x)
  assert out['angle_logits'].shape == (8, 21) and out['angle_residual'].shape == (8, 21)
  centres, width = heads.angle_bins(10.0, 21)
  assert width == 1.0
  best = np.argmax(np.asarray(out['angle_logits']), -1)
  want = np.asarray(centres)[best] + np.asarray(out['angle_residual'])[np.arange(8), best]
  np.testing.assert_allclose(out['angle'], np.clip(want, -10, 10), atol=1e-6)
  assert (np.abs(np.asarray(out['angle_residual'])) <= width).all()


def test_binned_angle_loss_and_the_corner_term():
  centres, width = heads.angle_bins(10.0, 21)
  truth = jnp.array([3.3, -7.8])
  nearest = np.array([13, 2])  # 3.0 and -8.0
  logits = jnp.full((2, 21), -20.0).at[jnp.arange(2), nearest].set(20.0)
  residual = jnp.zeros((2, 21)).at[jnp.arange(2), nearest].set(jnp.array([0.3, 0.2]))
  box = jnp.array([[0.2, 0.2, 0.6, 0.7], [0.1, 0.3, 0.9, 0.8]])
  batch = {'crop': box, 'angle': truth}
  exact = {'crop': box, 'angle': truth, 'angle_logits': logits, 'angle_residual': residual}
  _, terms = heads.crop_loss(exact, batch, {'corners': 1.0}, max_angle=10.0)
  assert float(terms['angle']) < 1e-5 and float(terms['corners']) < 1e-6
  off = dict(exact, angle_residual=residual.at[0, 13].set(-0.2), angle=truth.at[0].add(-0.5))
  _, terms = heads.crop_loss(off, batch, {'corners': 1.0}, max_angle=10.0)
  np.testing.assert_allclose(terms['angle'], 0.5 / 2, rtol=1e-4)  # half a bin, on one of two
  # Half a degree turns the first crop's corners by about 0.0087 x half its diagonal.
  half_diagonal = np.hypot(0.2, 0.25)
  assert 0.3 * 0.0087 * half_diagonal < float(terms['corners']) < 0.0087 * half_diagonal


def test_edge_box_reads_each_edge_where_its_logits_peak_and_never_inverts():
  # Logits peaked on one position give that position (positions spread over [0, 1]).
  x = jnp.full((1, 9, 2), -50.0).at[0, 2, 0].set(50.0).at[0, 6, 1].set(50.0)
  y = jnp.full((1, 5, 2), -50.0).at[0, 1, 0].set(50.0).at[0, 4, 1].set(50.0)
  np.testing.assert_allclose(heads.edge_box(x, y), [[2 / 8, 1 / 4, 6 / 8, 1.0]], atol=1e-6)
  # Two equal peaks: halfway between them, so an edge can sit between positions.
  x = jnp.full((1, 9, 2), -50.0).at[0, 2:4, 0].set(50.0).at[0, 6, 1].set(50.0)
  np.testing.assert_allclose(heads.edge_box(x, y)[0, 0], 2.5 / 8, atol=1e-6)
  # Any logits, swapped or collapsed edges included: inside the frame, ordered, not empty.
  rng = jax.random.split(jax.random.key(0), 2)
  box = np.asarray(heads.edge_box(jax.random.normal(rng[0], (4096, 8, 2)) * 30,
                                  jax.random.normal(rng[1], (4096, 6, 2)) * 30))
  assert (box >= 0).all() and (box <= 1).all()
  assert (box[:, 2] - box[:, 0] >= 1e-3 - 1e-7).all() and (box[:, 3] - box[:, 1] >= 1e-3 - 1e-7).all()
  swapped = jnp.full((1, 9, 2), -50.0).at[0, 7, 0].set(50.0).at[0, 1, 1].set(50.0)
  np.testing.assert_allclose(heads.edge_box(swapped, swapped)[0], [1 / 8, 1 / 8, 7 / 8, 7 / 8],
                             atol=1e-6)


def test_edge_head_crop_model_places_edges_over_the_finest_map_and_learns_a_box():
  import optax
  backbone = models.TinyResNet(num_classes=None, outputs=(2, 4))
  model = heads.CropModel(backbone, max_angle=10.0, angle_bins=21, crop_head='edges')
  # Photos holding a bright rectangle whose box is the crop: a few hundred steps on 64
  # photos bring the box's L1 well below what the mean box gives.
  rng = np.random.default_rng(0)
  n, size = 64, 32
  start = rng.uniform(0.0, 0.6, (n, 2))
  boxes = np.concatenate([start, start + rng.uniform(0.2, 1.0 - start)], 1).astype(np.float32)
  grid = (np.arange(size) + 0.5) / size
  inside = ((grid[None, None, :] >= boxes[:, 0, None, None]) & (grid[None, None, :] <= boxes[:, 2, None, None])
            & (grid[None, :, None] >= boxes[:, 1, None, None]) & (grid[None, :, None] <= boxes[:, 3, None, None]))
  images = np.repeat(inside[..., None], 3, -1).astype(np.float32) + rng.normal(0, 0.05, (n, size, size, 3))
  variables = models.init_variables(model, jax.random.key(1), images[:2])
  assert 'crop' in variables['params'] and set(variables['params']['crop']) >= {'lateral0', 'lateral1'}
  out = jax.jit(model.apply)(variables, images)
  assert out['crop'].shape == (n, 4) and out['angle'].shape == (n,)
  batch = {'crop': jnp.asarray(boxes), 'angle': jnp.zeros(n)}
  tx = optax.adam(3e-3)
  params, state = variables['params'], variables['batch_stats']
  opt = tx.init(params)

  @jax.jit
  def step(params, state, opt):
    def loss(p):
      out, new = model.apply({'params': p, 'batch_stats': state}, images, train=True,
                             mutable=['batch_stats'])
      return jnp.abs(out['crop'] - batch['crop']).mean(), new['batch_stats']
    (value, state), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), state, opt, value

  for _ in range(120):
    params, state, opt, value = step(params, state, opt)
  out = jax.jit(model.apply)({'params': params, 'batch_stats': state}, images)
  baseline = np.abs(boxes - boxes.mean(0)).mean()
  error = float(np.abs(np.asarray(out['crop']) - boxes).mean())
  assert error < 0.3 * baseline, (error, baseline)


def test_inside_target_covers_the_turned_crop_as_its_corners_say():
  from PIL import Image, ImageDraw

  from cropjax import metadata
  # An unturned crop on cell borders covers whole cells; one through their middles, halves.
  t = np.asarray(heads.inside_target(jnp.array([[0.25, 0.125, 0.75, 0.5], [0.0625, 0, 1, 1]]),
                                     jnp.zeros(2), 8, 8))
  want = np.zeros((8, 8))
  want[1:4, 2:6] = 1
  np.testing.assert_allclose(t[0], want, atol=1e-6)
  np.testing.assert_allclose(t[1][:, 0], 0.5, atol=1e-6)
  np.testing.assert_allclose(t[1][:, 1:], 1.0, atol=1e-6)
  # Turned crops: the cells agree with the polygon of `metadata.corners` drawn at 200 x 200,
  # but along its border (turned the other way, they would not).
  for angle in (-12.0, 8.0, 30.0):
    crop = metadata.Crop(0.2, 0.3, 0.7, 0.6, angle)
    t = np.asarray(heads.inside_target(jnp.array([crop.as_tuple()[:4]]), jnp.array([angle]),
                                       200, 200))[0]
    for sign, most in ((1, 0.005), (-1, None)):
      polygon = metadata.corners(metadata.Crop(*crop.as_tuple()[:4], sign * angle), 200, 200)
      image = Image.new('L', (200, 200))
      ImageDraw.Draw(image).polygon([tuple(p) for p in polygon], fill=1)
      wrong = np.mean(np.abs(t - np.asarray(image)) > 0.5)
      assert (wrong < most) if most else wrong > 0.02, (angle, sign, wrong)
    np.testing.assert_allclose(t.mean(), 0.5 * 0.3, rtol=0.01)


def test_inside_head_maps_the_crop_at_the_finest_positions_and_its_loss_sees_it():
  backbone = models.TinyResNet(num_classes=None, outputs=(2, 4))
  model = heads.CropModel(backbone, max_angle=10.0, angle_bins=21, crop_head='inside')
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  variables = models.init_variables(model, jax.random.key(1), x)
  out = jax.jit(model.apply)(variables, x)
  finest = jax.jit(backbone.apply)({'params': variables['params']['backbone'],
                          'batch_stats': variables['batch_stats']['backbone']}, x)[0]
  assert out['inside'].shape == finest.shape[:3] and out['crop'].shape == (2, 4)
  batch = {'crop': jnp.array([[0.25, 0.25, 0.75, 0.75], [0.0, 0.5, 0.5, 1.0]]),
           'angle': jnp.array([0.0, 5.0])}
  target = heads.inside_target(batch['crop'], batch['angle'], *out['inside'].shape[1:])
  sure = dict(out, inside=jnp.where(target > 0.5, 30.0, -30.0))
  _, terms = heads.crop_loss(sure, batch)
  wrong = dict(out, inside=-sure['inside'])
  _, wrong_terms = heads.crop_loss(wrong, batch)
  # Only the border cells' shares keep a sure map's loss above zero; the opposite map pays 30 a cell.
  assert float(terms['inside']) < 0.15 * 30 < float(wrong_terms['inside'])
  assert 'inside' not in heads.crop_loss({k: out[k] for k in ('crop', 'angle')}, batch)[1]
