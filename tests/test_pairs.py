"""Crop-pair pipeline: exact labels, hard negatives that do not match, determinism, proportions."""

import io

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from cropjax import procedural
from cropjax.data import pairs, sources

N = 48


@pytest.fixture(scope='module')
def images():
  return sources.from_arrays(list(procedural.images(1, 16, (160, 240))))


@pytest.fixture(scope='module')
def batch(images):
  # Sources shrunk to 4N (192 < 240 px): the labels stay exact through the shrink.
  return next(pairs.dataset(images, image_size=N, batch_size=200, seed=3,
                            max_source_side=4.0).as_numpy_iterator())


def _gray(a, highpass=False):
  g = np.asarray(a, np.float64).mean(-1)
  return g - gaussian_filter(g, 2) if highpass else g


def _corr(a, b):
  a, b = a - a.mean(), b - b.mean()
  return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-9))


def _region(original, box, highpass=False):
  """The box of the NxN original, resized to NxN (what the crop should look like)."""
  x0, y0, x1, y1 = [float(v) * N for v in box]
  return _gray(Image.fromarray(original).resize((N, N), Image.BILINEAR, box=(x0, y0, x1, y1)),
               highpass)


def _unswap(image, swapped):
  return (image[..., 3:], image[..., :3]) if swapped else (image[..., :3], image[..., 3:])


def _best_anywhere(original, second, box):
  """Best high-pass correlation of `second` with any window of the labelled size."""
  w, h = min(box[2] - box[0], 1.0), min(box[3] - box[1], 1.0)
  return max(_corr(_region(original, (x, y, x + w, y + h), True), _gray(second, True))
             for x in np.linspace(0, 1 - w, 9) for y in np.linspace(0, 1 - h, 9))


def test_batch_layout(batch):
  assert batch['image'].shape == (200, N, N, 6) and batch['image'].dtype == np.uint8
  for k in ('is_pair', 'is_swapped', 'kind'):
    assert batch[k].shape == (200,) and batch[k].dtype == np.int32
  assert batch['box'].shape == (200, 4) and batch['box'].dtype == np.float32
  assert batch['angle'].shape == (200,) and batch['angle'].dtype == np.float32
  pair_kinds = [pairs.KINDS.index(k) for k in pairs.PAIR_KINDS]
  np.testing.assert_array_equal(batch['is_pair'], np.isin(batch['kind'], pair_kinds))
  pos = batch['box'][batch['is_pair'] == 1]
  assert (pos[:, :2] >= 0).all() and (pos[:, 2:] <= 1 + 1e-6).all()
  assert (pos[:, :2] < pos[:, 2:]).all()
  assert 0.3 < batch['is_swapped'].mean() < 0.7


def test_positive_labels_are_exact(batch):
  plain, high = [], []
  for i in np.flatnonzero(batch['kind'] == pairs.KINDS.index('positive')):
    original, crop = _unswap(batch['image'][i], batch['is_swapped'][i])
    plain.append(_corr(_region(original, batch['box'][i]), _gray(crop)))
    high.append(_corr(_region(original, batch['box'][i], True), _gray(crop, True)))
    # A window moved by a quarter of its size matches clearly worse.
    b = batch['box'][i]
    dx = 0.25 * (b[2] - b[0]) * (1 if b[0] < 0.5 else -1)
    moved = np.array([b[0] + dx, b[1], b[2] + dx, b[3]])
    if 0 <= moved[0] and moved[2] <= 1:
      assert _corr(_region(original, moved, True), _gray(crop, True)) < high[-1] + 0.05
  assert min(plain) > 0.7, min(plain)
  assert np.median(high) > 0.6, np.median(high)
  # And the undone swap matters: the crop is not the original.
  assert np.median(plain) > 0.9


def test_straightened_crops_are_the_turned_window_inside_the_original(batch):
  from cropjax import metadata
  from cropjax.datasets import yardstick
  idx = np.flatnonzero(batch['kind'] == pairs.KINDS.index('straightened'))
  assert len(idx) >= 8
  angles = batch['angle'][idx]
  assert (np.abs(angles) >= 0.5 - 1e-4).all() and (np.abs(angles) <= 8 + 1e-4).all()
  assert (angles > 0).any() and (angles < 0).any()
  np.testing.assert_array_equal(batch['angle'][batch['kind'] != pairs.KINDS.index('straightened')],
                                0.0)
  turned, unturned, other_way = [], [], []
  for i in idx:
    original, crop = _unswap(batch['image'][i], batch['is_swapped'][i])
    box, angle = [float(v) for v in batch['box'][i]], float(batch['angle'][i])
    # The turn is in the original's own pixels (the batch stretches it to N x N): back to its
    # aspect ratio, and its turned corners stay inside it.
    w, h = batch['original_size'][i] * (2 * N / batch['original_size'][i].max())
    original = Image.fromarray(original).resize((round(w), round(h)), Image.BICUBIC)
    for x, y in metadata.corners(metadata.Crop(*box, angle=angle), w, h):
      assert -1e-3 * w <= x <= w * (1 + 1e-3) and -1e-3 * h <= y <= h * (1 + 1e-3), (box, angle)

    # The crop is the window read on the turned axes (labelled angle, Lightroom's sign) ...
    def read(a):
      return _gray(yardstick.turned_window(original, metadata.Crop(*box, angle=a)).resize((N, N)))
    turned.append(_corr(read(angle), _gray(crop)))
    # ... not the window upright, nor turned the other way.
    if abs(angle) > 3:
      unturned.append(_corr(read(0.0), _gray(crop)))
      other_way.append(_corr(read(-angle), _gray(crop)))
  assert np.median(turned) > 0.9 and min(turned) > 0.75, turned
  assert np.median(turned) > np.median(unturned) + 0.05, (turned, unturned)
  assert np.median(turned) > np.median(other_way) + 0.1, (turned, other_way)


@pytest.mark.parametrize('kind', ['outside', 'mirrored', 'squashed', 'near_duplicate'])
def test_hard_negatives_match_nowhere_at_the_labelled_scale(batch, kind):
  positives = [_corr(_region(*_unswap(batch['image'][i], batch['is_swapped'][i])[:1],
                             batch['box'][i], True),
                     _gray(_unswap(batch['image'][i], batch['is_swapped'][i])[1], True))
               for i in np.flatnonzero(batch['is_pair'])]
  idx = np.flatnonzero(batch['kind'] == pairs.KINDS.index(kind))
  assert len(idx) >= 8
  best = [_best_anywhere(*_unswap(batch['image'][i], batch['is_swapped'][i]), batch['box'][i])
          for i in idx]
  assert np.median(best) < 0.35, best
  assert np.percentile(best, 90) < np.median(positives), (best, np.median(positives))


def test_near_duplicates_are_the_same_view_under_another_geometry(batch):
  idx = np.flatnonzero(batch['kind'] == pairs.KINDS.index('near_duplicate'))
  assert len(idx) >= 8
  np.testing.assert_array_equal(batch['box'][idx], np.tile([0.0, 0.0, 1.0, 1.0], (len(idx), 1)))
  scene, detail = [], []
  for i in idx:
    first, second = _unswap(batch['image'][i], batch['is_swapped'][i])
    # The same scene: the broad layout agrees ...
    scene.append(_corr(gaussian_filter(_gray(first), 4), gaussian_filter(_gray(second), 4)))
    # ... but not point for point: the perspective moves the detail by pixels.
    detail.append(_corr(_gray(first, True), _gray(second, True)))
  assert np.median(scene) > 0.5, scene
  assert np.median(detail) < 0.35, detail


def test_outside_windows_leave_the_original(batch):
  boxes = batch['box'][batch['kind'] == pairs.KINDS.index('outside')]
  overhang = np.maximum(np.maximum(-boxes[:, 0], -boxes[:, 1]),
                        np.maximum(boxes[:, 2] - 1, boxes[:, 3] - 1))
  sizes = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
  assert (overhang > 0.2 * sizes).all()


def test_same_seed_same_batches_and_resume(images):
  kw = dict(image_size=32, batch_size=8, seed=7)
  a = list(pairs.dataset(images, num_batches=3, **kw).as_numpy_iterator())
  b = list(pairs.dataset(images, num_batches=3, **kw).as_numpy_iterator())
  resumed = next(pairs.dataset(images, start_step=2, **kw).as_numpy_iterator())
  other = next(pairs.dataset(images, image_size=32, batch_size=8, seed=8).as_numpy_iterator())
  assert len(a) == 3
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  for k in resumed:
    np.testing.assert_array_equal(resumed[k], a[2][k])
  assert not np.array_equal(other['image'], a[0]['image'])
  val = next(pairs.dataset(images, split='validation', **kw).as_numpy_iterator())
  assert not np.array_equal(val['image'], a[0]['image'])
  # A private pool of one thread (training on the CPU) gives the same stream.
  one = pairs.dataset(images, num_batches=3, threads=1, **kw)
  assert one.options().threading.private_threadpool_size == 1
  assert pairs.dataset(images, **kw).options().threading.private_threadpool_size is None
  for x, y in zip(a, one.as_numpy_iterator()):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_shards_partition_the_global_stream(images):
  kw = dict(image_size=16, batch_size=4, seed=1, num_batches=1)
  whole = next(pairs.dataset(images, **{**kw, 'batch_size': 8}).as_numpy_iterator())
  s0 = next(pairs.dataset(images, shard_index=0, shard_count=2, **kw).as_numpy_iterator())
  s1 = next(pairs.dataset(images, shard_index=1, shard_count=2, **kw).as_numpy_iterator())
  np.testing.assert_array_equal(whole['image'][0::2], s0['image'])
  np.testing.assert_array_equal(whole['image'][1::2], s1['image'])


def test_kind_proportions_follow_the_options(images):
  kinds = {'positive': 0.2, 'other_image': 0.0, 'outside': 0.5, 'mirrored': 0.3, 'squashed': 0.0}
  b = next(pairs.dataset(images, image_size=16, batch_size=1000, seed=2, kinds=kinds,
                         jpeg_quality=(90, 90)).as_numpy_iterator())
  counts = np.bincount(b['kind'], minlength=len(pairs.KINDS)) / 1000
  for name, weight in kinds.items():
    assert abs(counts[pairs.KINDS.index(name)] - weight) < 0.05, (name, counts)


def test_to_pil_round_trip(batch):
  first, second, box, labels = pairs.to_pil(batch, 0)
  assert first.size == second.size == (N, N)
  np.testing.assert_array_equal(np.asarray(first), batch['image'][0, ..., :3])
  np.testing.assert_array_equal(np.asarray(second), batch['image'][0, ..., 3:])
  assert labels['kind'] == pairs.KINDS[batch['kind'][0]]
  assert box == pytest.approx(tuple(batch['box'][0]))


def test_bad_options_are_refused(images):
  with pytest.raises(ValueError, match='unknown kinds'):
    pairs.dataset(images, image_size=32, batch_size=2, seed=0, kinds={'rotated': 1.0})
  with pytest.raises(ValueError, match='jpeg_quality'):
    pairs.dataset(images, image_size=32, batch_size=2, seed=0, jpeg_quality=(0, 120))
  with pytest.raises(TypeError):
    pairs.dataset(images, image_size=32, batch_size=2, seed=0, crop_size=3)
  with pytest.raises(ValueError, match='threads'):
    pairs.dataset(images, image_size=32, batch_size=2, seed=0, threads=-1)


def test_undecodable_source_images_are_skipped_with_a_warning(tmp_path, caplog):
  good = sources.from_arrays([np.zeros((20, 20, 3), np.uint8)])
  checked = sources._checked([('a.png', good[0]), ('broken.jpg', b'\xff\xd8\xff garbage')],
                             'my-folder')
  assert checked == good
  assert 'broken.jpg' in caplog.text and 'my-folder' in caplog.text


def test_folder_source_through_tfds(tmp_path):
  folder = tmp_path / 'photos'
  folder.mkdir()
  for i, a in enumerate(procedural.images(4, 6, (60, 90))):
    Image.fromarray(a).save(folder / f'p{i}.jpg')
  (folder / 'fake.jpg').write_text('not an image')
  train = sources.load(str(folder), 'train', data_dir=str(tmp_path / 'tfds'))
  val = sources.load(str(folder), 'validation', data_dir=str(tmp_path / 'tfds'))
  assert len(train) + len(val) == 6
  b = next(pairs.dataset(str(folder), image_size=16, batch_size=4, seed=0,
                         data_dir=str(tmp_path / 'tfds')).as_numpy_iterator())
  assert b['image'].shape == (4, 16, 16, 6)
  with pytest.raises(sources.SourceError, match='no-such-dataset'):
    sources.load('no-such-dataset', data_dir=str(tmp_path / 'tfds'))


def test_large_sources_are_shrunk_once_and_keep_their_content(images):
  small = sources.shrink(images, 120)
  assert len(small) == len(images)
  for before, after in zip(images, small):
    a, b = Image.open(io.BytesIO(before)), Image.open(io.BytesIO(after))
    assert max(b.size) == 120 and abs(b.width / b.height - a.width / a.height) < 0.02
    ref = np.asarray(a.convert('RGB').resize(b.size, Image.Resampling.BOX), np.float64)
    got = np.asarray(b, np.float64)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.95  # JPEG q95 of the same pixels
    assert np.corrcoef(got.ravel(), ref[::-1].ravel())[0, 1] < 0.9  # not just any image
  assert sources.shrink(images, 240) == images  # nothing to do: the very same bytes
  # The 160x240 sources exceed 4 x 48 on their long side, so `batch` was drawn from
  # shrunk sources, and its labels are the exact ones checked above.
  assert max(Image.open(io.BytesIO(images[0])).size) > 4 * N


def test_kept_sources_and_their_pyramids(images):
  decoded = sources.DecodedImages.fit(images, 64, min_side=32)
  assert len(decoded) == len(images)
  assert decoded.shapes.shape == (16, 3, 3)  # 240x160, 120x80, 60x40 (60 // 2 < 32)
  for i in (0, len(images) - 1):
    full = Image.open(io.BytesIO(images[i]))
    np.testing.assert_array_equal(decoded[i], np.asarray(full))
    for k, (h, w) in enumerate([(120, 80), (60, 40)], start=1):
      np.testing.assert_array_equal(decoded.level(i, k),
                                    np.asarray(full.resize((w, h), Image.Resampling.BOX)))
  assert sources.DecodedImages.fit(images, 0.5) is None  # 16 x 160 x 240 x 3 bytes is ~1.8 MB
  # A short pyramid repeats its last level up to the longest one's depth.
  mixed = sources.from_arrays([np.zeros((40, 40, 3), np.uint8), np.zeros((160, 160, 3), np.uint8)])
  short = sources.DecodedImages.fit(mixed, 1, min_side=20)
  assert short.shapes[:, :, 0].tolist() == [[40, 20, 20, 20], [160, 80, 40, 20]]
  assert short.offsets[0, 1] == short.offsets[0, 3]


def test_kept_sources_give_the_same_examples_as_decoding(images):
  kept, decoding = [next(pairs.dataset(images, image_size=N, batch_size=16, seed=5,
                                       max_source_side=0, decoded_cache_mb=mb)
                         .as_numpy_iterator()) for mb in (64, 0)]
  for k in kept:
    if k != 'image':  # the labels only depend on the sources' sizes: bit for bit
      np.testing.assert_array_equal(kept[k], decoding[k], err_msg=k)
  # The pixels are read from the pyramid's smallest level with the detail needed,
  # instead of the full image: the same content, resampled a little differently.
  a, b = kept['image'].astype(np.float64), decoding['image'].astype(np.float64)
  assert np.abs(a - b).mean() < 2.5
  assert min(np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a, b)) > 0.97
  assert np.corrcoef(a[0].ravel(), b[1].ravel())[0, 1] < 0.9  # not any two examples


def test_sharpness_does_not_tell_the_crop_from_the_original():
  """Each side is rendered at its own resolution: a crop of a large photo is as sharp as one.

  Zooming in lowers a natural image's high frequencies per pixel a little; a
  crop upsampled from the original's working image (as the pipeline once did)
  lowered them far more: mean log(high-pass energy crop / original) was -0.81
  on these sources, a cue the model learnt instead of the content.
  """
  images = sources.from_arrays(list(procedural.images(1, 8, (480, 720))))
  b = next(pairs.dataset(images, image_size=N, batch_size=120, seed=3,
                         downscale_prob=0.0).as_numpy_iterator())
  ratios = []
  for i in np.flatnonzero(b['is_pair']):
    original, crop = _unswap(b['image'][i], b['is_swapped'][i])
    energy = lambda x: np.mean(_gray(x, highpass=True) ** 2)
    ratios.append(np.log(energy(crop) / energy(original)))
  assert np.mean(ratios) > -0.5 and np.mean(np.asarray(ratios) > 0) > 0.1, np.mean(ratios)


def test_sides_kept_at_their_aspect_ratio(images, batch):
  kept = next(pairs.dataset(images, image_size=N, batch_size=200, seed=3, max_source_side=4.0,
                            keep_aspect=True).as_numpy_iterator())
  for k in ('box', 'kind', 'is_pair', 'is_swapped'):  # the same examples, only drawn otherwise
    np.testing.assert_array_equal(kept[k], batch[k])
  extent = kept['extent']
  assert extent.shape == (200, 4) and extent.dtype == np.float32
  np.testing.assert_allclose(np.maximum(extent[:, 0], extent[:, 1]), 1.0)  # long side N
  np.testing.assert_allclose(np.maximum(extent[:, 2], extent[:, 3]), 1.0)
  assert extent.min() < 0.7  # some sides really are narrow
  plain = []
  for i in range(200):
    w1, h1, w2, h2 = np.rint(extent[i] * N).astype(int)
    image = kept['image'][i]
    assert not image[h1:, :, :3].any() and not image[:, w1:, :3].any()  # zeros beyond
    assert not image[h2:, :, 3:].any() and not image[:, w2:, 3:].any()
    if not kept['is_pair'][i]:
      continue
    first, second, box, labels = pairs.to_pil(kept, i)
    original, crop = (second, first) if labels['is_swapped'] else (first, second)
    # The crop's aspect ratio is its box's in the original (to a pixel of N either way).
    bw, bh = (box[2] - box[0]) * original.width, (box[3] - box[1]) * original.height
    aspect = crop.width / crop.height
    assert abs(np.log(aspect * bh / bw)) < np.log((N + 1.5) / (N - 1.5)) + 2 / min(crop.size)
    if labels['kind'] != 'positive':  # (a straightened crop's window is turned)
      continue
    # Compared at the lower of the two resolutions (a small box of a narrow original has
    # few pixels; the crop is as sharp as the source allows).
    x0, y0, x1, y1 = np.array(box) * np.tile(original.size, 2)
    size = (max(4, round(min(bw, crop.width))), max(4, round(min(bh, crop.height))))
    region = original.resize(size, Image.BILINEAR, box=(x0, y0, x1, y1))
    plain.append(_corr(_gray(region), _gray(crop.resize(size, Image.BOX))))
  # (The few below 0.7 are boxes of about 9 pixels of a narrow original.)
  assert np.percentile(plain, 5) > 0.7 and np.median(plain) > 0.9, sorted(plain)[:5]
