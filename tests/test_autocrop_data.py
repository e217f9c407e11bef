"""Auto-crop pipeline: the label follows flips, rescales, padding and the resize policy."""

import io

import numpy as np
import pytest
from PIL import Image

from cropjax.data import autocrop

N = 64


def _record(w, h, crop, angle):
  """A grey photo with the crop area painted red, so its box can be found in the output."""
  a = np.full((h, w, 3), 60, np.uint8)
  l, t, r, b = crop
  a[round(t * h):round(b * h), round(l * w):round(r * w)] = (230, 20, 20)
  buf = io.BytesIO()
  Image.fromarray(a).save(buf, format='PNG')
  return buf.getvalue(), crop, angle


RECORDS = [_record(240, 160, (0.2, 0.25, 0.6, 0.9), 5.0),
           _record(120, 200, (0.1, 0.1, 0.5, 0.4), -3.0),
           _record(200, 200, (0.55, 0.3, 0.95, 0.7), 0.0)]


def _red_box(image):
  red = (image[..., 0] > 150) & (image[..., 1] < 100)
  ys, xs = np.nonzero(red)
  return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / N


@pytest.mark.parametrize('resize', ['letterbox', 'stretch'])
@pytest.mark.parametrize('split', ['train', 'validation'])
def test_label_follows_the_pixels(resize, split):
  b = next(autocrop.dataset(RECORDS, image_size=N, batch_size=48 if split == 'train' else 3,
                            seed=0, split=split, resize=resize, color_jitter=0.0)
           .as_numpy_iterator())
  assert b['image'].shape[1:] == (N, N, 3) and b['image'].dtype == np.uint8
  for image, crop in zip(b['image'], b['crop']):
    np.testing.assert_allclose(_red_box(image), crop, atol=2.5 / N)
    assert (crop[:2] < crop[2:]).all() and (crop >= 0).all() and (crop <= 1).all()


def test_validation_is_unaugmented_and_letterboxed():
  # max_source_side=0: the photos as they are, so the arithmetic below is exact
  # (shrinking 240x160 to 128x85 moves the letterbox by a rounding of 0.001).
  b = next(autocrop.dataset(RECORDS, image_size=N, batch_size=3, seed=0, split='validation',
                            max_source_side=0).as_numpy_iterator())
  np.testing.assert_allclose(b['angle'], [5.0, -3.0, 0.0])
  # 240x160 in a square: the picture fills rows 1/6 .. 5/6.
  l, t, r, bottom = (0.2, 0.25, 0.6, 0.9)
  np.testing.assert_allclose(b['crop'][0], [l, 1 / 6 + t * 2 / 3, r, 1 / 6 + bottom * 2 / 3],
                             atol=1e-5)
  assert abs(float(b['image'][0, 2, 2, 0]) - autocrop.FILL) <= 1  # padding


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_shrunk_and_kept_photos_give_the_same_examples(split):
  """Photos shrunk to 2N once and kept decoded with pyramids, against decoding the originals."""
  kw = dict(image_size=N, batch_size=6, seed=4, split=split)
  kept = next(autocrop.dataset(RECORDS, **kw).as_numpy_iterator())
  plain = next(autocrop.dataset(RECORDS, max_source_side=0, decoded_cache_mb=0, **kw)
               .as_numpy_iterator())
  np.testing.assert_allclose(kept['crop'], plain['crop'], atol=0.01)  # integer sizes' rounding
  np.testing.assert_array_equal(kept['angle'], plain['angle'])
  a, b = kept['image'].astype(np.float64), plain['image'].astype(np.float64)
  assert np.abs(a - b).mean() < 3, np.abs(a - b).mean()
  assert np.abs(a - b[::-1]).mean() > 10  # not any two photos


def test_flip_mirrors_the_box_and_negates_the_angle():
  b = next(autocrop.dataset(RECORDS[:1], image_size=N, batch_size=64, seed=1, resize='stretch',
                            zoom=(1.0, 1.0), color_jitter=0.0).as_numpy_iterator())
  flipped = b['angle'] < 0
  assert 10 < flipped.sum() < 54
  np.testing.assert_allclose(b['angle'][flipped], -5.0)
  np.testing.assert_allclose(b['crop'][~flipped], [[0.2, 0.25, 0.6, 0.9]] * int((~flipped).sum()),
                             atol=1e-5)
  np.testing.assert_allclose(b['crop'][flipped], [[0.4, 0.25, 0.8, 0.9]] * int(flipped.sum()),
                             atol=1e-5)


def test_rescale_moves_and_scales_the_box():
  b = next(autocrop.dataset(RECORDS, image_size=N, batch_size=64, seed=2, resize='stretch',
                            color_jitter=0.0).as_numpy_iterator())
  widths = b['crop'][:, 2] - b['crop'][:, 0]
  assert widths.std() > 0.02  # zoom in and out change the box size


def test_deterministic_and_resumable():
  kw = dict(image_size=32, batch_size=4, seed=5)
  a = list(autocrop.dataset(RECORDS, num_batches=3, **kw).as_numpy_iterator())
  again = next(autocrop.dataset(RECORDS, start_step=2, **kw).as_numpy_iterator())
  for k in again:
    np.testing.assert_array_equal(again[k], a[2][k])


def test_hue_turns_colours_only_and_leaves_the_other_draws_alone():
  kw = dict(image_size=N, batch_size=32, seed=6, color_jitter=0.0)
  plain = next(autocrop.dataset(RECORDS, **kw).as_numpy_iterator())
  turned = next(autocrop.dataset(RECORDS, hue=0.5, **kw).as_numpy_iterator())
  for k in ('crop', 'angle'):  # the same windows, flips and turns
    np.testing.assert_array_equal(turned[k], plain[k])
  # Grey stays grey; the red crop takes other hues, about as bright, at the same place.
  a, b = plain['image'].astype(np.float64), turned['image'].astype(np.float64)
  grey = np.ptp(a, -1) == 0
  assert grey.mean() > 0.5 and np.abs(a - b)[grey].max() <= 1
  red = (a[..., 0] > 150) & (a[..., 1] < 100)
  hues = np.argmax(b[red], -1)
  assert len(set(hues.tolist())) == 3  # red, green and blue among them
  np.testing.assert_allclose(b[red].max(-1).mean(), a[red].max(-1).mean(), rtol=0.05)
  np.testing.assert_array_equal(next(autocrop.dataset(RECORDS, hue=0.5, **kw).as_numpy_iterator())
                                ['image'], turned['image'])


def test_bad_options():
  with pytest.raises(ValueError, match='resize'):
    autocrop.dataset(RECORDS, image_size=32, batch_size=2, seed=0, resize='fit')
  with pytest.raises(ValueError, match='hue'):
    autocrop.dataset(RECORDS, image_size=32, batch_size=2, seed=0, hue=0.7)


def test_end_to_end_from_an_annotated_library(tmp_path):
  from cropjax import annotate
  from cropjax import demo_library
  demo_library.make_library(tmp_path / 'lib', count=24, seed=3, long_side=160)
  annotate.annotate([tmp_path / 'lib'], tmp_path / 'ds', 96)
  b = next(autocrop.dataset(str(tmp_path / 'ds'), image_size=32, batch_size=4, seed=0,
                            data_dir=str(tmp_path / 'tfds')).as_numpy_iterator())
  assert b['image'].shape == (4, 32, 32, 3)
  assert (b['crop'][:, :2] < b['crop'][:, 2:]).all() and (np.abs(b['angle']) <= 45).all()


def _turned_record(w, h, crop):
  """A grey photo with the turned crop (a `metadata.Crop`) painted red, by the metadata geometry."""
  from PIL import ImageDraw

  from cropjax import metadata
  image = Image.new('RGB', (w, h), (60, 60, 60))
  ImageDraw.Draw(image).polygon(metadata.corners(crop, w, h), fill=(230, 20, 20))
  buf = io.BytesIO()
  image.save(buf, format='PNG')
  return buf.getvalue(), crop.as_tuple()[:4], crop.angle


def test_turned_photos_turn_their_labels():
  from PIL import ImageDraw

  from cropjax import metadata
  records = [_turned_record(240, 180, metadata.Crop(0.3, 0.3, 0.7, 0.7, 6.0)),
             _turned_record(180, 240, metadata.Crop(0.25, 0.35, 0.7, 0.6, -4.0))]
  n = 128  # the red shape's outline, rasterised twice, costs little IoU at this size
  b = next(autocrop.dataset(records, image_size=n, batch_size=48, seed=3, split='train',
                            rotate=15.0, color_jitter=0.0).as_numpy_iterator())
  original = {6.0, -6.0, 4.0, -4.0}  # flips negate the angle
  turned = [a for a in b['angle'] if min(abs(a - o) for o in original) > 0.5]
  assert len(turned) > 30 and np.abs(b['angle']).max() <= 21.0 + 1e-4
  for image, crop, angle in zip(b['image'], b['crop'], b['angle']):
    red = (image[..., 0] > 150) & (image[..., 1] < 100)
    mask = Image.new('L', (n, n))
    ImageDraw.Draw(mask).polygon(metadata.corners(metadata.Crop(*crop, angle=float(angle)), n, n),
                                 fill=1)
    expected = np.asarray(mask).astype(bool)
    iou = (red & expected).sum() / (red | expected).sum()
    assert iou > 0.88, (crop, angle, iou)
    centre = lambda m: np.array([np.nonzero(m)[1].mean(), np.nonzero(m)[0].mean()])
    assert np.abs(centre(red) - centre(expected)).max() < 1.0, (crop, angle)
    corners = np.array(metadata.corners(metadata.Crop(*crop, angle=float(angle)), 1, 1))
    assert (corners >= -1e-5).all() and (corners <= 1 + 1e-5).all()  # never leaves the frame


def test_turning_needs_letterbox():
  with pytest.raises(ValueError, match='letterbox'):
    autocrop.AutocropOptions(resize='stretch', rotate=5.0)


def test_close_ups_hold_the_crop_at_the_growth_the_second_pass_uses():
  b = next(autocrop.dataset(RECORDS, image_size=N, batch_size=48, seed=6, refine=1.0,
                            color_jitter=0.0).as_numpy_iterator())
  crop = b['crop']
  longer = np.maximum(crop[:, 2] - crop[:, 0], crop[:, 3] - crop[:, 1])  # of the square window
  low, high = autocrop.REFINE_GROWTH
  assert (longer >= 1 / high - 0.01).all() and (longer <= 1 / low + 0.01).all(), longer
  assert longer.std() > 0.03  # the growth varies
  for image, box in zip(b['image'], crop):  # the label still follows the pixels
    np.testing.assert_allclose(_red_box(image), box, atol=2.5 / N)
  # Windows reaching beyond the photo are grey there; without refine no close-ups at all.
  grey = [(np.abs(im.astype(float) - autocrop.FILL) <= 1).all(-1).mean() for im in b['image']]
  assert max(grey) > 0.05
  plain = next(autocrop.dataset(RECORDS, image_size=N, batch_size=48, seed=6, color_jitter=0.0)
               .as_numpy_iterator())['crop']
  assert np.maximum(plain[:, 2] - plain[:, 0], plain[:, 3] - plain[:, 1]).min() < 1 / high
  with pytest.raises(ValueError, match='refine needs resize=letterbox'):
    autocrop.AutocropOptions(resize='stretch', refine=0.5)
  with pytest.raises(ValueError, match='share from 0 to 1'):
    autocrop.AutocropOptions(refine=1.5)
