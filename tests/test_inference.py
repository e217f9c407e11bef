"""Prediction: image loading, cropjax.predict / predict_crop, the console app, eval and SIFT."""

import contextlib
import hashlib
import io
import json
import os

import cv2
import defusedxml.ElementTree as DET
import numpy as np
import pytest
from PIL import Image

import cropjax
from configs import autocrop_tiny
from configs import tiny
from cropjax import inference
from cropjax import metadata
from cropjax import procedural
from cropjax import sift
from cropjax import train
from cropjax.cli import evaluate as eval_cli
from cropjax.cli import predict as predict_cli
from cropjax.matching import verdict

ASTRONAUT = procedural.skimage_photos
CRS = '{http://ns.adobe.com/camera-raw-settings/1.0/}'


def _photo(h=96, w=128, seed=0):
  return procedural.image(seed, 0, (w, h))


@contextlib.contextmanager
def _refine(model, share: float):
  """The loaded auto-crop model with autocrop_options.refine set to `share` for a while
  (0: its first look alone); pytest's monkeypatch cannot undo on a ConfigDict."""
  options = model.config.data.autocrop_options
  saved, options.refine = options.refine, share
  try:
    yield
  finally:
    options.refine = saved


@pytest.fixture(scope='module')
def pair_workdir(photo_folder, tmp_path_factory):
  root = tmp_path_factory.mktemp('pairs')
  c = tiny.get_config()
  c.data.source = str(photo_folder)
  c.data.data_dir = str(root / 'tfds')
  c.num_steps, c.freeze_steps, c.eval_every = 2, 0, 2
  c.verdict_photos = 4  # the verdict that predict needs, fitted as training does it
  train.train_and_evaluate(c, str(root / 'wd'))
  assert (root / 'wd' / verdict.FILE).is_file()
  return root / 'wd'


@pytest.fixture(scope='module')
def crop_workdir(tmp_path_factory):
  from cropjax import annotate
  from cropjax import demo_library
  root = tmp_path_factory.mktemp('autocrop')
  demo_library.make_library(root / 'lib', count=40, seed=5, long_side=128)
  annotate.annotate([root / 'lib'], root / 'ds', 64, report=lambda problem: None)
  c = autocrop_tiny.get_config()
  c.data.source = str(root / 'ds')
  c.data.data_dir = str(root / 'tfds')
  c.num_steps, c.freeze_steps, c.eval_every = 2, 0, 2
  train.train_and_evaluate(c, str(root / 'wd'))
  return root / 'wd'


# ------------------------------------------------------------------ images


@pytest.mark.parametrize('mode', ['RGB', 'RGBA', 'L', 'P', 'CMYK', 'I;16'])
def test_load_image_takes_every_mode(mode, tmp_path):
  rgb = Image.fromarray(_photo())
  if mode == 'I;16':
    image = Image.fromarray((np.asarray(rgb.convert('L'), np.uint16) * 257))
    assert image.mode.startswith('I;16')
  else:
    image = rgb.convert(mode)
  out = inference.load_image(image)
  assert out.mode == 'RGB' and out.size == (128, 96)
  expected = np.asarray(image.convert('RGB') if mode != 'I;16' else rgb.convert('L').convert('RGB'),
                        np.float64)
  if mode not in ('CMYK', 'P'):  # lossy conversions: only the shape is comparable
    np.testing.assert_allclose(np.asarray(out, np.float64), expected, atol=1.0)
  ext = {'CMYK': 'tif', 'I;16': 'png'}.get(mode, 'png')
  image.save(tmp_path / f'x.{ext}')
  assert inference.load_image(tmp_path / f'x.{ext}').size == (128, 96)


def test_load_image_arrays():
  a = _photo()
  assert inference.load_image(a).size == (128, 96)
  assert inference.load_image(a[..., 0]).size == (128, 96)
  np.testing.assert_array_equal(np.asarray(inference.load_image(a.astype(np.float32) / 255)),
                                a)
  np.testing.assert_array_equal(np.asarray(inference.load_image(a.astype(np.uint16) * 257)), a)
  with pytest.raises(inference.InputError, match=r'shape \(4, 4, 5\)'):
    inference.load_image(np.zeros((4, 4, 5), np.uint8))


def test_exif_orientation_is_applied(tmp_path):
  a = _photo()
  exif = Image.Exif()
  exif[0x0112] = 6  # stored turned: rotate 90 clockwise to display
  stored = np.rot90(a, 1)  # what a camera held upright would store for orientation 6
  Image.fromarray(stored).save(tmp_path / 'o6.png', exif=exif.tobytes())
  out = np.asarray(inference.load_image(tmp_path / 'o6.png'))
  np.testing.assert_array_equal(out, a)


def test_bad_images_are_named(tmp_path):
  (tmp_path / 'empty.jpg').write_bytes(b'')
  (tmp_path / 'text.jpg').write_text('not a photo')
  buf = io.BytesIO()
  Image.fromarray(_photo()).save(buf, 'JPEG')
  (tmp_path / 'cut.jpg').write_bytes(buf.getvalue()[:400])
  cases = {'missing.jpg': 'no such file', 'empty.jpg': 'empty file', 'text.jpg': 'not an image',
           'cut.jpg': 'cannot decode'}
  for name, message in cases.items():
    with pytest.raises(inference.InputError, match=f'{name}: {message}'):
      inference.load_image(tmp_path / name)


# ------------------------------------------------------------------ the API


def test_predict_returns_pixels_consistent_with_fractions(pair_workdir):
  model = cropjax.load_model(pair_workdir)
  a = _photo(120, 160, 1)
  b = a[30:90, 40:120]
  for align in (False, True):
    r = cropjax.predict(a, b, model=model, align=align)
    assert isinstance(r, cropjax.PairPrediction) and isinstance(r.is_crop, bool)
    assert 0 <= r.probability <= 1 and r.original in ('a', 'b')
    w, h = (160, 120) if r.original == 'a' else (80, 60)
    assert r.original_size == (w, h)
    np.testing.assert_allclose(r.box, np.array(r.box_fraction) * [w, h, w, h], rtol=1e-6)
    assert r.top_left == r.box[:2]
    assert 0 <= r.box_fraction[0] < r.box_fraction[2] <= 1
    assert (r.alignment_score is not None) == align and (r.converged is not None) == align
    json.dumps(r.to_json())
  # Batched equals one at a time; padded batches of 3 and 4 share one compilation.
  pairs = [(a, b), (b, a), (a, _photo(64, 64, 2))]
  many = cropjax.predict_pairs(pairs, model=model, align=False)
  for (x, y), got in zip(pairs, many):
    one = cropjax.predict(x, y, model=model, align=False)
    np.testing.assert_allclose(got.probability, one.probability, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.box_fraction, one.box_fraction, rtol=1e-4, atol=1e-6)
  before = model._forward._cache_size()
  cropjax.predict_pairs(pairs + [(b, a)], model=model, align=False)
  assert model._forward._cache_size() == before
  # Any iterable, read a chunk at a time: a generator of pairs gives the same results, and
  # no more than one chunk of it has been drawn when a chunk is loaded.
  drawn = []
  def generator():
    for k, pair in enumerate(pairs):
      drawn.append(k)
      yield pair
  loaded, load = [], inference._load_pairs
  def recording(chunk, first=0):
    loaded.append((first, len(chunk), len(drawn)))
    return load(chunk, first)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(inference, '_load_pairs', recording)
    lazy = cropjax.predict_pairs(generator(), model=model, align=False, batch_size=2)
  assert loaded == [(0, 2, 2), (2, 1, 3)]
  assert [r.probability for r in lazy] == pytest.approx([r.probability for r in many], abs=1e-5)
  with pytest.raises(ValueError, match='batch_size must be at least 1, got 0'):
    cropjax.predict_pairs(pairs, model=model, batch_size=0)


def test_an_image_too_small_to_compare_is_named(pair_workdir, tmp_path):
  model = cropjax.load_model(pair_workdir)
  Image.fromarray(_photo()).save(tmp_path / 'photo.png')
  Image.fromarray(_photo()[:1, :1]).save(tmp_path / 'dot.png')
  with pytest.raises(inference.InputError, match=r'dot\.png: too small to compare \(1x1 pixels'):
    cropjax.predict(tmp_path / 'photo.png', tmp_path / 'dot.png', model=model)
  with pytest.raises(inference.InputError, match=r'pair 0 image b: too small to compare \(5x1 '):
    cropjax.predict(_photo(), _photo()[:1, :5], model=model, align=False)
  # Two pixels a side is enough to be compared (and is not a crop of the photo).
  assert not cropjax.predict(_photo(), _photo()[:2, :2], model=model).is_crop


def test_a_large_jpeg_file_is_read_at_a_reduced_scale_with_the_same_answer(pair_workdir,
                                                                            tmp_path):
  """A JPEG twice the alignment's size is decoded at half scale (the decoder's own), yet sizes
  and boxes are the file's full upright pixels, as from the photo given whole; also stored
  turned a quarter (EXIF orientation 6)."""
  model = cropjax.load_model(pair_workdir)
  photo = np.asarray(Image.fromarray(procedural.image(3, 0, (1050, 700))).resize(
      (4200, 2800), Image.Resampling.BICUBIC))
  window = (1300, 900, 2800, 1900)
  Image.fromarray(photo[900:1900, 1300:2800]).save(tmp_path / 'crop.jpg', quality=90)
  Image.fromarray(photo).save(tmp_path / 'big.jpg', quality=90)
  exif = Image.Exif()
  exif[0x0112] = 6  # stored turned: rotate 90 clockwise to display
  Image.fromarray(np.rot90(photo, 1)).save(tmp_path / 'turned.jpg', quality=90,
                                           exif=exif.tobytes())
  whole = inference.load_image(tmp_path / 'big.jpg')
  for name in ('big.jpg', 'turned.jpg'):
    pixels, size = inference._load(tmp_path / name, least_side=inference.ALIGN_MAX_SIDE)
    assert pixels.size == (2100, 1400) and size == (4200, 2800)
    r = cropjax.predict(tmp_path / name, tmp_path / 'crop.jpg', model=model)
    assert r.original == 'a' and r.original_size == (4200, 2800)
    np.testing.assert_allclose(r.box, window, atol=3.0)  # 1.5 pixels of the 2048-px alignment
  given = cropjax.predict(whole, tmp_path / 'crop.jpg', model=model)
  np.testing.assert_allclose(r.box, given.box, atol=2.0)


def test_predict_with_alignment_is_exact_whichever_image_comes_first(pair_workdir):
  model = cropjax.load_model(pair_workdir)
  photo = dict(ASTRONAUT(['astronaut']))['astronaut']
  box = (100, 140, 380, 350)
  crop = np.asarray(Image.fromarray(photo[140:350, 100:380]).resize((196, 147)))
  both = cropjax.predict_pairs([(photo, crop), (crop, photo)], model=model)
  for r, original in zip(both, 'ab'):
    assert r.original == original and r.original_size == (512, 512)
    np.testing.assert_allclose(r.box, box, atol=0.5)
    assert r.converged and r.alignment_score > 0.95
    assert r.network_probability is not None and abs(r.angle) < 0.1
  one = cropjax.predict(crop, photo, model=model)
  np.testing.assert_allclose(one.box, both[1].box, atol=0.05)  # the solver's tolerance
  np.testing.assert_allclose(one.probability, both[1].probability, atol=1e-3)


def test_a_copy_of_the_whole_picture_names_the_larger_image_its_original(pair_workdir):
  """An export of a photo's whole frame brought down to 0.6x: a crop pair whichever comes
  first, the photo its original (both align at the whole frame, so the evidence alone cannot
  say which), its whole frame the box; a window of it still names the larger image even where
  that is the crop blown up."""
  model = cropjax.load_model(pair_workdir)
  photo = Image.fromarray(dict(ASTRONAUT(['astronaut']))['astronaut'])
  export = Image.open(io.BytesIO(_jpeg_bytes(photo.resize((307, 307), Image.Resampling.LANCZOS),
                                             70))).convert('RGB')
  both = cropjax.predict_pairs([(photo, export), (export, photo)], model=model)
  for r, original in zip(both, 'ab'):
    assert r.is_crop and r.original == original and r.original_size == (512, 512)
    assert r.box == (0.0, 0.0, 512.0, 512.0) and r.box_fraction == (0.0, 0.0, 1.0, 1.0)
    assert inference.whole_frame(r.box_fraction)
  window = photo.crop((100, 140, 380, 350))
  blown_up = window.resize((560, 420), Image.Resampling.BICUBIC)
  r = cropjax.predict(photo, blown_up, model=model)
  assert r.is_crop and r.original == 'a' and not inference.whole_frame(r.box_fraction)
  np.testing.assert_allclose(r.box, (100, 140, 380, 350), atol=1.0)
  assert inference.whole_frame((0.004, 0.0, 1.0, 0.995))
  assert not inference.whole_frame((0.02, 0.0, 1.0, 1.0))


def _jpeg_bytes(image, quality):
  buf = io.BytesIO()
  image.save(buf, 'JPEG', quality=quality)
  return buf.getvalue()


def test_a_long_strip_is_compared_without_keypoints(pair_workdir):
  """A strip 512 times as long as it is high is one pixel high at the keypoints' size (OpenCV's
  ORB fails on that rather than finding none): it has no keypoints, and is still compared."""
  model = cropjax.load_model(pair_workdir)
  strip = np.tile(_photo()[:20], (1, 80, 1))  # 10,240 x 20
  keypoints, descriptors, shape = sift.features(np.zeros((1, 512), np.uint8),
                                                cv2.ORB_create())
  assert (len(keypoints), descriptors, shape) == (0, None, (1, 512))
  r = cropjax.predict(_photo(), strip, model=model)
  assert not r.is_crop
  assert not sift.match_pair(_photo(), strip).is_pair


def test_a_straightened_crop_comes_back_turned_in_cropjax_s_crop_convention(pair_workdir):
  """An editor's straightened crop: its unturned box and its angle with Lightroom's sign
  (`cropjax.metadata`'s), whichever image comes first; SIFT's answer in the same terms."""
  from cropjax import metadata
  from cropjax.datasets import yardstick
  model = cropjax.load_model(pair_workdir)
  photo = dict(ASTRONAUT(['astronaut']))['astronaut']
  turn = metadata.Crop(0.2, 0.25, 0.7, 0.7, angle=4.0)
  crop = np.asarray(yardstick.turned_window(Image.fromarray(photo), turn, 0.8))
  box = np.array([turn.left, turn.top, turn.right, turn.bottom]) * 512
  for r, original in zip(cropjax.predict_pairs([(photo, crop), (crop, photo)], model=model), 'ab'):
    assert r.original == original and abs(r.angle - 4.0) < 0.15
    np.testing.assert_allclose(r.box, box, atol=1.0)
    assert r.alignment_score > 0.95
  s = sift.match_pair(photo, crop)
  assert s.is_pair and abs(s.angle - 4.0) < 0.5
  np.testing.assert_allclose(s.box, box / 512, atol=0.01)


def test_the_network_runs_beside_the_search_with_the_same_answers(pair_workdir, monkeypatch):
  """The network runs on a thread of its own while the pyramids and the coarse search are made;
  run first, on the caller's thread, it gives the same results to the bit."""
  import concurrent.futures
  import threading
  model = cropjax.load_model(pair_workdir)
  photo = dict(ASTRONAUT(['astronaut']))['astronaut']
  crop = np.asarray(Image.fromarray(photo[140:350, 100:380]).resize((196, 147)))
  pairs = [(photo, crop), (crop, photo), (photo, _photo())]
  ran_on, real = [], inference._network_pairs

  def network(*args):
    ran_on.append(threading.current_thread().name)
    return real(*args)
  monkeypatch.setattr(inference, '_network_pairs', network)
  beside = cropjax.predict_pairs(pairs, model=model)
  assert ran_on[0].startswith('cropjax-network')

  class Inline:  # the network first, on this thread
    def submit(self, fn, *args):
      done = concurrent.futures.Future()
      done.set_result(fn(*args))
      return done
  monkeypatch.setattr(inference, '_network_thread', Inline)
  first = cropjax.predict_pairs(pairs, model=model)
  assert ran_on[1] == threading.current_thread().name
  assert [r.to_json() for r in beside] == [r.to_json() for r in first]


def test_a_matching_model_encodes_each_distinct_image_once(photo_folder, pair_workdir,
                                                            match_model, monkeypatch):
  model = match_model  # as the demo: each image at its own aspect ratio
  assert model.keep_aspect
  files = sorted(str(p) for p in photo_folder.iterdir())[:5]
  encoded = []
  original_encode = inference.Model.encode
  monkeypatch.setattr(inference.Model, 'encode',
                      lambda self, images, batch_size=32: encoded.append(len(images)) or
                      original_encode(self, images, batch_size))
  grid = [(a, b) for a in files[:2] for b in files[2:]]   # 2 x 3 images, 6 pairs
  results = inference.predict_pairs(grid, model=model, align=False)
  assert encoded == [5] and len(results) == 6
  # The same answers as pair by pair, and as comparing cached features.
  single = inference.predict(*grid[4], model=model, align=False)
  assert single.probability == pytest.approx(results[4].probability, abs=1e-5)
  features = inference.encode(files, model=model)
  for f, extent in zip(files, features.extents):  # each image's share of its square
    w, h = Image.open(f).size
    np.testing.assert_allclose(extent, np.array([w, h]) / max(w, h),
                               atol=1 / model.config.image_size)
  out = model.compare(features[[1]], features[[3]])
  assert float(out['box'][0, 0]) == pytest.approx(results[4].box_fraction[0], abs=1e-5)
  with pytest.raises(inference.ModelError, match='encodes pairs, not images'):
    inference.load_model(pair_workdir).encode(np.zeros((1, 8, 8, 3), np.uint8))


def test_a_model_without_a_verdict_says_how_to_fit_one(pair_workdir, tmp_path):
  import shutil
  copy = tmp_path / 'wd'
  shutil.copytree(pair_workdir, copy)
  (copy / verdict.FILE).unlink()
  model = cropjax.load_model(copy)
  a = _photo(120, 160, 1)
  assert cropjax.predict(a, a[30:90, 40:120], model=model, align=False).alignment_score is None
  with pytest.raises(cropjax.ModelError, match='--fit-verdict'):
    cropjax.predict(a, a[30:90, 40:120], model=model)


def test_default_model_comes_from_the_environment(pair_workdir, monkeypatch):
  monkeypatch.delenv(inference.ENV, raising=False)
  with pytest.raises(cropjax.ModelError, match='CROPJAX_MODEL.*configs/demo.py'):
    cropjax.predict(_photo(), _photo())
  monkeypatch.setenv(inference.ENV, str(pair_workdir))
  assert cropjax.predict(_photo(), _photo()).original in ('a', 'b')


def test_wrong_models_are_refused(pair_workdir, crop_workdir, tmp_path):
  with pytest.raises(cropjax.ModelError, match='crop-pair model, but an auto-crop model'):
    cropjax.predict_crop(_photo(), model=cropjax.load_model(pair_workdir))
  with pytest.raises(cropjax.ModelError, match='auto-crop model, but a crop-pair model'):
    cropjax.predict(_photo(), _photo(), model=str(crop_workdir))
  from cropjax import models
  from cropjax import weights
  import jax
  path = weights.save(models.init(models.TinyResNet(num_classes=10), jax.random.key(0), 32),
                      tmp_path / 'conv', arch='tiny')
  with pytest.raises(cropjax.ModelError, match='converted backbone weights'):
    cropjax.load_model(path)
  with pytest.raises(cropjax.ModelError, match='not a cropjax training workdir'):
    cropjax.load_model(tmp_path)
  with pytest.raises(cropjax.ModelError, match='no such workdir'):
    cropjax.load_model(tmp_path / 'nothing')
  # A checkpoint of another architecture than its config says.
  import shutil
  other = tmp_path / 'other'
  shutil.copytree(pair_workdir, other)
  config = json.loads((other / 'config.json').read_text())
  config['model']['arch'] = 'tiny_bottleneck'
  (other / 'config.json').write_text(json.dumps(config))
  with pytest.raises(cropjax.ModelError, match='does not fit its config'):
    cropjax.load_model(other)
  # A step folder works as well as the workdir.
  step = sorted(os.listdir(pair_workdir / 'checkpoints'))[-1]
  assert cropjax.load_model(pair_workdir / 'checkpoints' / step).step == int(step)


def test_a_suggested_crop_is_at_least_a_pixel_each_way(crop_workdir, monkeypatch):
  """Edges that meet (top = bottom at the frame's edge, left = right inside) give a crop of one
  pixel there, inside the frame, not an empty one."""
  model = cropjax.load_model(crop_workdir)
  photo = _photo(40, 300, 3)
  monkeypatch.setattr(model, 'forward', lambda images, batch_size=32: {
      'crop': np.tile(np.float32([0.5, 1.0, 0.5, 1.0]), (len(images), 1)),
      'angle': np.zeros(len(images), np.float32)})
  with _refine(model, 0.0):
    r = cropjax.predict_crop(photo, model=model, straighten=False, mirror=False)
  assert r.size == (300, 40)
  assert (r.left, r.right) == pytest.approx((149.5, 150.5)) and (r.top, r.bottom) == (39.0, 40.0)


def test_predict_crop_undoes_the_letterbox_of_the_training_pipeline(crop_workdir, monkeypatch):
  """Fed the pipeline's own label, predict_crop returns the photographer's crop."""
  from cropjax.data import autocrop
  photo = _photo(100, 200, 3)
  buf = io.BytesIO()
  Image.fromarray(photo).save(buf, 'PNG')
  crop, angle = (0.1, 0.2, 0.6, 0.9), 4.0
  model = cropjax.load_model(crop_workdir)
  size = model.image_size
  batch = next(autocrop.dataset([(buf.getvalue(), crop, angle)], image_size=size, batch_size=1,
                                seed=0, split='validation').as_numpy_iterator())
  pixels, _ = inference.letterbox(Image.fromarray(photo), size)
  assert np.abs(pixels.astype(float) - batch['image'][0]).mean() < 6  # the same input picture
  monkeypatch.setattr(model, 'forward', lambda images, batch_size=32: {
      'crop': batch['crop'][:len(images)], 'angle': batch['angle'][:len(images)]})
  # The network's angle as it is (this procedural photo's shapes have edges at any angle),
  # and its first answer alone (no close-up pass).
  with _refine(model, 0.0):
    r = cropjax.predict_crop(photo, model=model, straighten=False, mirror=False)
  np.testing.assert_allclose(r.fraction, crop, atol=1.5 / size)
  assert r.size == (200, 100) and r.angle == pytest.approx(angle)
  np.testing.assert_allclose((r.left, r.right), np.array(r.fraction)[[0, 2]] * 200, rtol=1e-6)


# ------------------------------------------------------------------ the console app


def _run(main, argv, capsys):
  code = main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err


def test_predict_cli_json_show_and_bad_input(pair_workdir, crop_workdir, tmp_path, capsys):
  a = _photo(120, 160, 1)
  Image.fromarray(a).save(tmp_path / 'a.jpg')
  Image.fromarray(a[30:90, 40:120]).save(tmp_path / 'b.jpg', quality=50)
  code, out, _ = _run(predict_cli.main, [tmp_path / 'a.jpg', tmp_path / 'b.jpg', '--json',
                                         '--model', pair_workdir], capsys)
  assert code == 0
  r = json.loads(out)
  assert {'is_crop', 'probability', 'original', 'box', 'box_fraction', 'top_left',
          'angle'} <= set(r)
  code, out, _ = _run(predict_cli.main, [tmp_path / 'a.jpg', tmp_path / 'b.jpg', '--show',
                                         tmp_path / 'side.png', '--model', pair_workdir], capsys)
  assert code == 0 and ('crop' in out) and Image.open(tmp_path / 'side.png').size[1] == 512
  (tmp_path / 'text.jpg').write_text('hello')
  bad = {
      (tmp_path / 'a.jpg', tmp_path / 'missing.jpg'): 'missing.jpg: no such file',
      (tmp_path / 'a.jpg', tmp_path / 'text.jpg'): 'text.jpg: not an image',
  }
  for (x, y), message in bad.items():
    code, out, err = _run(predict_cli.main, [x, y, '--model', pair_workdir], capsys)
    assert code == 2 and message in err and 'Traceback' not in err and len(err.splitlines()) == 1
  code, _, err = _run(predict_cli.main, [tmp_path / 'a.jpg', tmp_path / 'b.jpg', '--model',
                                         crop_workdir], capsys)
  assert code == 2 and 'auto-crop model' in err and len(err.splitlines()) == 1


def test_write_xmp_never_touches_photos_and_keeps_other_fields(crop_workdir, tmp_path, capsys):
  photo = tmp_path / 'IMG_1.jpg'
  Image.fromarray(_photo(90, 150, 4)).save(photo)
  digest = hashlib.sha256(photo.read_bytes()).hexdigest()
  args = ['--crop', photo, '--model', crop_workdir]
  code, out, _ = _run(predict_cli.main, args + ['--json'], capsys)
  assert code == 0
  suggested = json.loads(out)
  code, out, _ = _run(predict_cli.main, args + ['--write-xmp'], capsys)
  assert code == 0 and 'IMG_1.xmp' in out
  sidecar = tmp_path / 'IMG_1.xmp'
  back = metadata.read_crop(photo)
  np.testing.assert_allclose(back.as_tuple()[:4], suggested['fraction'], atol=1e-5)
  assert back.angle == pytest.approx(suggested['angle'], abs=1e-5)
  # An independent parser sees Lightroom's fields.
  desc = next(e for e in DET.parse(sidecar).iter() if e.get(f'{CRS}CropLeft') is not None
              or e.find(f'{CRS}CropLeft') is not None)
  assert desc is not None
  # Without --force an existing sidecar is refused; with it, other fields survive.
  text = sidecar.read_text().replace('crs:HasCrop', 'crs:Exposure2012="+0.50"\n   crs:HasCrop')
  sidecar.write_text(text)
  code, _, err = _run(predict_cli.main, args + ['--write-xmp'], capsys)
  assert code == 2 and 'sidecar exists' in err and sidecar.read_text() == text
  code, _, _ = _run(predict_cli.main, args + ['--write-xmp', '--force'], capsys)
  assert code == 0 and 'Exposure2012="+0.50"' in sidecar.read_text()
  assert hashlib.sha256(photo.read_bytes()).hexdigest() == digest
  assert sorted(os.listdir(tmp_path)) == ['IMG_1.jpg', 'IMG_1.xmp']


# ------------------------------------------------------------------ eval and SIFT


def test_roc_auc_matches_pairwise_counting():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 5, 200).astype(float)  # many ties
  labels = rng.uniform(size=200) < 0.4
  pos, neg = scores[labels], scores[~labels]
  brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (
      len(pos) * len(neg))
  from cropjax import evaluation
  assert evaluation.roc_auc(scores, labels) == pytest.approx(brute)


def test_sift_finds_the_crop_and_its_original():
  photo = dict(ASTRONAUT())['astronaut']
  crop = photo[100:300, 150:400]
  truth = (150 / 512, 100 / 512, 400 / 512, 300 / 512)
  r = sift.match_pair(photo, crop)
  assert r.is_pair and r.original == 'a'
  np.testing.assert_allclose(r.box, truth, atol=0.01)
  r = sift.match_pair(crop, photo)
  assert r.is_pair and r.original == 'b'
  np.testing.assert_allclose(r.box, truth, atol=0.01)
  assert not sift.match_pair(photo, crop[:, ::-1]).is_pair  # mirrored
  assert not sift.match_pair(photo, dict(ASTRONAUT())['coffee']).is_pair


def test_eval_cli_prints_both_columns_and_writes_json(pair_workdir, crop_workdir, tmp_path, capsys):
  code, out, _ = _run(eval_cli.main, ['--workdir', pair_workdir, '--baseline', 'sift',
                                      '--examples', '24', '--sift-size', '96',
                                      '--out', tmp_path / 'e.json'], capsys)
  assert code == 0
  report = json.loads((tmp_path / 'e.json').read_text())
  for method in ('network', 'sift'):
    assert {'accuracy', 'precision', 'recall', 'roc_auc', 'box_iou_median',
            'top_left_error_px_mean'} <= set(report[method]['all'])
    assert report[method]['all']['examples'] == 24
  assert 'sift' in out.splitlines()[1] and 'positive' in out
  code, out, _ = _run(eval_cli.main, ['--workdir', crop_workdir, '--out', tmp_path / 'c.json'],
                      capsys)
  assert code == 0 and 'centre_crop' in out
  report = json.loads((tmp_path / 'c.json').read_text())
  full = report['full_frame']
  assert 0 < full['iou_mean'] < 1 and full['angle_error_mean'] >= 0
  code, _, err = _run(eval_cli.main, ['--workdir', crop_workdir, '--baseline', 'sift'], capsys)
  assert code == 2 and 'auto-crop model' in err


def test_eval_on_real_photos_puts_network_alignment_and_sift_side_by_side(
    pair_workdir, tmp_path, capsys, monkeypatch):
  from cropjax.datasets import yardstick
  missing = yardstick.Photo('q', 'some-package', str(tmp_path / 'q.jpg'), '0' * 64, 0)
  monkeypatch.setattr(yardstick, 'PHOTOS', (missing,))
  code, _, err = _run(eval_cli.main, ['--workdir', pair_workdir, '--data', 'real'], capsys)
  assert code == 2 and 'apt-get install' in err and len(err.splitlines()) == 1
  # A folder of one's own photos (two scikit-image photos and a broken file) instead.
  mine = tmp_path.resolve() / 'mine'
  mine.mkdir()
  for n, a in ASTRONAUT(['astronaut', 'coffee']):
    Image.fromarray(a).save(mine / f'{n}.jpg', quality=95)
  (mine / 'broken.jpg').write_bytes(b'\xff\xd8 cut short')
  code, _, err = _run(eval_cli.main, ['--workdir', pair_workdir, '--photo-dir', mine], capsys)
  assert code == 2 and '--photo-dir makes real-photo pairs: use it with --data real' in err
  code, out, err = _run(eval_cli.main, ['--workdir', pair_workdir, '--data', 'real', '--baseline',
                                        'sift', '--generated', '8', '--photo-dir', mine,
                                        '--out', tmp_path / 'r.json'], capsys)
  assert code == 0
  assert f'skipped {mine / "broken.jpg"}: ' in err and f'2 photos: photos in {mine}' in out
  report = json.loads((tmp_path / 'r.json').read_text())
  assert report['photos'] == 2 and [s[0] for s in report['skipped']] == [str(mine / 'broken.jpg')]
  for part, kinds in (('user_pairs', yardstick.KINDS), ('generated_pairs', ())):
    for method in ('network', 'aligned', 'sift'):
      assert set(kinds) <= set(report[part][method])
      assert {'accuracy', 'swap_accuracy', 'top_left_error_median', 'box_iou_median'} <= set(
          report[part][method]['all'])
  user = report['user_pairs']
  assert user['aligned']['all']['examples'] == 18  # nine kinds, two photos
  # the straightened crops' angle: the network has none, alignment fits it
  assert user['aligned']['straightened']['angle_error_median'] < 0.5 < user['network'][
      'straightened']['angle_error_median']
  # alignment places the crops it is given at least as exactly as the network does
  assert user['aligned']['positive']['box_iou_median'] >= user['network']['positive']['box_iou_median']
  assert 'aligned' in out and 'near_duplicate' in out


def test_turned_iou_against_the_axis_aligned_iou_and_a_rasterised_count():
  from PIL import Image, ImageDraw

  from cropjax import evaluation, metadata
  a, b = np.array([0.1, 0.2, 0.6, 0.7]), np.array([0.3, 0.1, 0.9, 0.5])
  np.testing.assert_allclose(evaluation.turned_iou(a, 0.0, b, 0.0, 300, 200),
                             evaluation.box_iou(a[None], b[None])[0], rtol=1e-9)
  assert evaluation.turned_iou(a, 7.0, a, 7.0, 300, 200) == pytest.approx(1.0)
  rng = np.random.default_rng(1)
  w, h = 400, 300
  for _ in range(4):
    boxes = [np.sort(rng.uniform(0.15, 0.85, (2, 2)), 0).T.reshape(-1)[[0, 2, 1, 3]] for _ in range(2)]
    angles = rng.uniform(-20, 20, 2)
    masks = []
    for box, angle in zip(boxes, angles):
      m = Image.new('L', (w, h))
      ImageDraw.Draw(m).polygon(metadata.corners(metadata.Crop(*box, angle=angle), w, h), fill=1)
      masks.append(np.asarray(m).astype(bool))
    raster = (masks[0] & masks[1]).sum() / max((masks[0] | masks[1]).sum(), 1)
    got = evaluation.turned_iou(boxes[0], angles[0], boxes[1], angles[1], w, h)
    assert abs(got - raster) < 0.02, (got, raster)


def test_close_up_window_and_its_way_back():
  a = _photo(100, 200, 4)
  box = (0.1, 0.05, 0.4, 0.75)  # 60 x 70 px, centred on (50, 40): the window is 1.35 x 70 a side
  pixels, (x0, y0, side) = inference.close_up(Image.fromarray(a), box, 48)
  assert pixels.shape == (48, 48, 3) and side == round(1.35 * 70)
  assert abs(x0 + side / 2 - 50) <= 1 and abs(y0 + side / 2 - 40) <= 1 and y0 < 0
  # The photo's pixels in the window, grey beyond it (above the photo here), brought down.
  padded = np.pad(a, ((side, side), (side, side), (0, 0)), constant_values=128)
  window = padded[side + y0:2 * side + y0, side + x0:2 * side + x0]
  expected = np.asarray(Image.fromarray(window).resize((48, 48), Image.Resampling.BOX))
  np.testing.assert_array_equal(pixels, expected)
  assert (pixels[:2] == 128).all()
  # A box given in the close-up's fractions comes back in the photo's.
  inner = np.array([(20 - x0) / side, (5 - y0) / side, (80 - x0) / side, (75 - y0) / side])
  np.testing.assert_allclose(inference._from_close_up(inner, (x0, y0, side), (200, 100)), box,
                             atol=1e-9)


def test_the_close_up_pass_refines_where_the_config_asks_for_it(crop_workdir, monkeypatch):
  """A model trained with close-ups looks again at close-ups round its first answer, one at
  each of CLOSE_UP_GROWTHS; the mean of the answers there, mapped back to the photo, is the
  prediction."""
  model = cropjax.load_model(crop_workdir)
  photo = _photo(120, 160, 5)
  seen = []

  def forward(images, batch_size=32):
    seen.append(images.copy())
    first = len(seen) == 1
    box = [0.25, 0.25, 0.75, 0.75] if first else [0.1, 0.15, 0.8, 0.9]
    return {'crop': np.tile(np.float32(box), (len(images), 1)),
            'angle': np.zeros(len(images), np.float32)}

  monkeypatch.setattr(model, 'forward', forward)
  with _refine(model, 0.0):
    once = inference.predict_crop(photo, model=model, straighten=False, mirror=False)
  assert len(seen) == 1
  seen.clear()
  with _refine(model, 0.3):
    twice = inference.predict_crop(photo, model=model, straighten=False, mirror=False)
  assert len(seen) == 1 + len(inference.CLOSE_UP_GROWTHS) == 4
  expected = []
  for look, growth in zip(seen[1:], inference.CLOSE_UP_GROWTHS):
    pixels, window = inference.close_up(Image.fromarray(photo), once.fraction, model.image_size,
                                        growth)
    np.testing.assert_array_equal(look[0], pixels)
    expected.append(inference._from_close_up(np.array([0.1, 0.15, 0.8, 0.9]), window,
                                              (160, 120)))
  assert len({tuple(np.round(e, 6)) for e in expected}) == 3   # three different windows
  np.testing.assert_allclose(twice.fraction, np.mean(expected, 0), atol=1e-6)
  assert twice.fraction != once.fraction


def test_the_photo_and_its_mirror_image_are_averaged(crop_workdir, monkeypatch):
  """The whole prediction is made on the photo and on its mirror image; the mirror's box,
  mirrored back, is averaged with the photo's, and its angle, negated, with the photo's."""
  model = cropjax.load_model(crop_workdir)
  photo = _photo(128, 128, 6)  # square: the letterbox leaves fractions alone
  seen = []

  def forward(images, batch_size=32):
    seen.append(np.array(images))
    # (0.1, 0.2, 0.5, 0.6) at 3 degrees on the photo; on the mirror image (0.6, 0.2, 0.8, 0.6)
    # at -4 degrees, that is (0.2, 0.2, 0.4, 0.6) at 4 degrees mirrored back.
    box, angle = ([0.1, 0.2, 0.5, 0.6], 3.0) if len(seen) == 1 else ([0.6, 0.2, 0.8, 0.6], -4.0)
    return {'crop': np.tile(np.float32(box), (len(images), 1)),
            'angle': np.full(len(images), angle, np.float32)}

  monkeypatch.setattr(model, 'forward', forward)
  with _refine(model, 0.0):
    r = inference.predict_crop(photo, model=model, straighten=False)
  assert len(seen) == 2
  np.testing.assert_array_equal(seen[1][0], seen[0][0][:, ::-1])
  np.testing.assert_allclose(r.fraction, (0.15, 0.2, 0.45, 0.6), atol=1e-6)
  assert r.angle == pytest.approx(3.5)


def test_a_turned_suggestion_is_shrunk_into_the_photo(crop_workdir, monkeypatch):
  """A near-full-frame box at 8 degrees would leave the photo: it comes back shrunk about its
  centre, its shape and angle kept, every corner inside (writable as a sidecar)."""
  model = cropjax.load_model(crop_workdir)
  photo = _photo(128, 128, 7)
  monkeypatch.setattr(model, 'forward', lambda images, batch_size=32: {
      'crop': np.tile(np.float32([0.02, 0.05, 0.98, 0.95]), (len(images), 1)),
      'angle': np.full(len(images), 8.0, np.float32)})
  with _refine(model, 0.0):
    r = inference.predict_crop(photo, model=model, straighten=False, mirror=False)
  assert r.angle == pytest.approx(8.0)
  metadata.check_crop(r.to_crop(), 128, 128)
  l, t, right, b = r.fraction
  assert (l + right) / 2 == pytest.approx(0.5) and (t + b) / 2 == pytest.approx(0.5)
  assert (right - l) / (b - t) == pytest.approx(0.96 / 0.90)
  assert right - l < 0.9  # shrunk
