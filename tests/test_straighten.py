"""Straightening (cropjax/straighten.py): the tilt of straight lines, its sign, and its hook
into predict_crops, the console app and the auto-crop evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import cropjax
from configs import autocrop_tiny
from cropjax import evaluation
from cropjax import inference
from cropjax import metadata
from cropjax import procedural
from cropjax import straighten
from cropjax import train
from cropjax.cli import predict as predict_cli

PHOTOS = dict(procedural.skimage_photos(['camera', 'rocket']))
BOX = (0.1, 0.1, 0.9, 0.9)


def _turned_rectangle(angle: float, size=(400, 300), crop=(0.2, 0.25, 0.8, 0.75)) -> Image.Image:
  """A light rectangle on a dark ground, turned by `angle` as `metadata.corners` turns a crop
  (drawn at 4x and averaged down, so its edges are smooth)."""
  w, h = size
  corners = metadata.corners(metadata.Crop(*crop, angle=angle), w * 4, h * 4)
  big = Image.new('L', (w * 4, h * 4), 50)
  ImageDraw.Draw(big).polygon(corners, fill=200)
  return big.resize(size, Image.Resampling.BOX)


def _turned_photo(photo: np.ndarray, angle: float) -> Image.Image:
  """The photo turned clockwise on screen by `angle` degrees about its centre (PIL turns
  counter-clockwise for positive angles), its middle 80% kept (no empty corners)."""
  im = Image.fromarray(photo).rotate(-angle, resample=Image.Resampling.BICUBIC)
  w, h = im.size
  return im.crop((round(w * 0.1), round(h * 0.1), round(w * 0.9), round(h * 0.9)))


@pytest.mark.parametrize('angle', [-3.2, -0.7, 0.7, 3.2])
def test_a_line_turned_clockwise_gives_a_positive_tilt(angle):
  # The crop geometry's own corners: the tilt is the crop angle that makes the edges level.
  t = straighten.line_tilt(_turned_rectangle(angle), (0.2, 0.25, 0.8, 0.75), 0.0)
  assert t.found and t.angle == pytest.approx(angle, abs=0.05), t
  # A level bar turned clockwise on screen by PIL.
  bar = np.full((300, 400), 60, np.uint8)
  bar[110:190, 60:340] = 210
  turned = Image.fromarray(bar).rotate(-angle, resample=Image.Resampling.BICUBIC)
  t = straighten.line_tilt(turned, (0.15, 0.36, 0.85, 0.64), angle + 2.0)
  assert t.found and t.angle == pytest.approx(angle, abs=0.05), t
  # Plumb lines tilt the same way as level ones (modulo 90): the bar stood on end.
  t = straighten.line_tilt(turned.transpose(Image.Transpose.TRANSPOSE), (0.36, 0.15, 0.64, 0.85),
                           -angle - 2.0)
  assert t.found and t.angle == pytest.approx(-angle, abs=0.05), t  # a transpose mirrors


@pytest.mark.skipif(len(PHOTOS) < 2, reason="scikit-image's photos are not installed")
@pytest.mark.parametrize('name', ['camera', 'rocket'])
def test_a_real_photo_turned_by_a_known_angle_is_found_from_two_degrees_off(name):
  level = straighten.line_tilt(_turned_photo(PHOTOS[name], 0.0), BOX, 0.0)
  assert level.found and abs(level.angle) < 2.5  # the photo's own lines, nearly level
  for angle in (-3.2, -0.7, 0.7, 3.2):
    photo = _turned_photo(PHOTOS[name], angle)
    for proposal in (angle - 2.0, angle + 2.0):
      t = straighten.line_tilt(photo, BOX, level.angle + proposal)
      assert t.found and t.strength > 0.1, (angle, proposal, t)
      assert t.angle - level.angle == pytest.approx(angle, abs=0.2), (angle, proposal, t)


def test_content_without_straight_lines_leaves_the_proposal_alone():
  rng = np.random.default_rng(0)
  smooth = (procedural.pink_noise(rng, 240, 320, 2.0) * 255).astype(np.uint8)
  blurred = Image.fromarray(procedural.image(0, 4, (320, 240))).filter(ImageFilter.GaussianBlur(6))
  flat = np.full((100, 120, 3), 128, np.uint8)
  for image in (smooth, blurred, flat, smooth.astype(np.float64) / 255):
    for proposal in (0.0, 2.5, -7.0):
      t = straighten.line_tilt(image, (0.1, 0.15, 0.85, 0.9), proposal)
      assert not t.found and t.angle == proposal and t.strength < straighten.MIN_STRENGTH, t


def test_inputs_are_taken_in_every_form_and_bad_ones_named():
  im = _turned_rectangle(2.0)
  a = np.asarray(im)
  box = (0.2, 0.25, 0.8, 0.75)
  expected = straighten.line_tilt(im, box, 0.0).angle
  for form in (a, a / 255.0, a.astype(np.uint16) * 257, np.stack([a] * 3, -1),
               np.dstack([a] * 3 + [np.full_like(a, 255)]), a[..., None], im.convert('RGB'),
               straighten.prepare(im)):
    assert straighten.line_tilt(form, box, 0.0).angle == pytest.approx(expected, abs=1e-3)
  # A photo larger than the working side is brought down to it; the answer holds.
  big = _turned_rectangle(2.0, size=(1600, 1200))
  assert straighten.prepare(big).grey.shape == (576, 768)
  assert straighten.line_tilt(big, box, 0.0).angle == pytest.approx(2.0, abs=0.05)
  bad = [
      (np.zeros((0, 5, 3), np.uint8), box, 0.0, 'empty image'),
      (Image.new('RGB', (0, 0)), box, 0.0, 'empty image'),
      (np.zeros((4, 4, 2), np.uint8), box, 0.0, 'HxW, HxWx3 or HxWx4'),
      (np.full((8, 8), np.nan), box, 0.0, 'NaN'),
      (np.zeros((8, 8), np.int64), box, 0.0, 'dtype int64'),
      ('photo.jpg', box, 0.0, 'PIL image or a numpy array'),
      (a, (0.8, 0.25, 0.2, 0.75), 0.0, 'inverted'),
      (a, (0.2, 0.5, 0.8, 0.5), 0.0, 'empty or inverted'),
      (a, (0.2, 0.25, 0.8), 0.0, '4 values'),
      (a, (0.2, float('nan'), 0.8, 0.75), 0.0, 'not finite'),
      (a, box, float('nan'), 'proposed angle is not finite'),
      (a, box, float('inf'), 'proposed angle is not finite'),
  ]
  for image, b, angle, message in bad:
    with pytest.raises(ValueError, match=message):
      straighten.line_tilt(image, b, angle)
  with pytest.raises(ValueError, match='span'):
    straighten.line_tilt(a, box, 0.0, span=0)


# ------------------------------------------------------------------ predict_crops and the CLI


@pytest.fixture(scope='module')
def crop_model():
  """The tiny auto-crop model of configs/autocrop_tiny.py as initialised, untrained: its boxes
  and angles are arbitrary, which is all these tests need (no training, seconds). One pass:
  the close-up pass would move the boxes these tests give the network."""
  import jax
  c = autocrop_tiny.get_config()
  c.data.autocrop_options.refine = 0.0
  variables = train.initial_variables(c, train.build_model(c), jax.random.PRNGKey(0))
  return inference.Model(c, variables, '<initialised>', 0)


def _line_photos() -> list[np.ndarray]:
  photos = [np.asarray(_turned_rectangle(a, size=(240, 180), crop=(0.08, 0.1, 0.92, 0.9)).convert('RGB'))
            for a in (2.5, -1.5)]
  photos += [np.asarray(_turned_photo(p, 3.0)) for p in PHOTOS.values()]
  return photos


def test_predict_crops_straightens_the_angle_and_keeps_the_box(crop_model):
  photos = _line_photos()
  network = inference.predict_crops(photos, model=crop_model, straighten=False)
  straight = inference.predict_crops(photos, model=crop_model)
  moved = 0
  for photo, n, s in zip(photos, network, straight):
    assert (s.fraction, s.left, s.top, s.right, s.bottom, s.size) == (
        n.fraction, n.left, n.top, n.right, n.bottom, n.size)
    tilt = straighten.line_tilt(inference.load_image(photo), n.fraction, n.angle)
    assert s.angle == (tilt.angle if abs(tilt.angle) <= 45 else n.angle)
    moved += s.angle != n.angle
    for r in (n, s):  # never leaving the frame, whatever the angle
      metadata.check_crop(r.to_crop(), *r.size)
  assert moved  # some lines were there to be found
  # One photo alone (another batch shape: the network's numbers move in the last digits).
  alone = inference.predict_crop(photos[0], model=crop_model, straighten=False)
  np.testing.assert_allclose(alone.fraction, network[0].fraction, atol=1e-5)
  single = cropjax.predict_crop(photos[0], model=crop_model)
  np.testing.assert_allclose(single.fraction, alone.fraction)
  tilt = straighten.line_tilt(photos[0], alone.fraction, alone.angle)
  assert single.angle == (tilt.angle if abs(tilt.angle) <= 45 else alone.angle)


@pytest.mark.parametrize('turn, proposal, expected', [
    (2.5, 0.5, 2.5),     # the network 2 degrees off: the lines settle it
    (-1.2, -4.0, -1.2),
    (-43.0, 44.0, 44.0),  # the lines at 47 (= -43 + 90): no crop takes it, the network's stays
])
def test_predict_crops_settles_a_proposed_angle(crop_model, monkeypatch, turn, proposal, expected):
  crop = (0.15, 0.15, 0.85, 0.85)  # a square photo: the letterbox leaves fractions alone
  photo = np.asarray(_turned_rectangle(turn, size=(200, 200), crop=crop).convert('RGB'))
  monkeypatch.setattr(crop_model, 'forward', lambda images, batch_size=32: {
      'crop': np.tile(np.float32(crop), (len(images), 1)),
      'angle': np.full(len(images), proposal, np.float32)})
  r = inference.predict_crop(photo, model=crop_model, mirror=False)  # the mock's angle, as given
  np.testing.assert_allclose(r.fraction, crop, atol=1e-6)
  # 140-px edges: their sub-pixel positions lean to the pixel grid by a few hundredths of
  # a pixel, so a tenth of a degree (a fifth of the goal) is what this size allows.
  assert r.angle == pytest.approx(expected, abs=0.1)
  assert inference.predict_crop(photo, model=crop_model, straighten=False,
                                mirror=False).angle == proposal


def test_the_span_follows_how_sure_the_network_is_of_its_angle():
  bins = np.linspace(-45, 45, 91)
  angles = np.array([0.5, 0.5, 0.0, 3.0])
  probs = np.zeros((4, 91))
  probs[0, 45] = 1.0                     # all on the 0-degree bin: spread 0.5 about 0.5
  probs[1, 40:51] = 1.0                  # evenly over -5..5: spread sqrt(10 + 0.25)
  probs[2] = 1.0                         # evenly over all: far beyond straighten.SPAN
  probs[3, [43, 49]] = [3.0, 1.0]        # unnormalised: -2 and 4 degrees, 3:1
  span = inference.straightening_span(probs, angles, 45.0)
  spread = np.sqrt([0.25, ((bins[40:51] - 0.5) ** 2).mean(), 0, (3 * 25 + 1) / 4])
  expected = np.clip(inference.STRAIGHTEN_SPREADS * spread, inference.STRAIGHTEN_MIN_SPAN,
                     straighten.SPAN)
  expected[2] = straighten.SPAN
  np.testing.assert_allclose(span, expected)
  assert span[0] == max(inference.STRAIGHTEN_SPREADS * 0.5, inference.STRAIGHTEN_MIN_SPAN)
  assert span[0] < span[1] < span[2] == straighten.SPAN
  # A model without angle bins: the whole span.
  np.testing.assert_array_equal(inference.straightening_span(None, angles, 45.0),
                                np.full(4, straighten.SPAN))


@pytest.mark.parametrize('sure, expected', [(True, 0.0), (False, 2.5)])
def test_lines_far_from_a_sure_network_leave_its_angle_alone(crop_model, monkeypatch, sure,
                                                             expected):
  # Lines at 2.5 degrees, the network says 0: sure of it (all on the 0-degree bin, so it
  # looks 1.5 degrees either side at most) its angle stays; unsure (spread evenly over
  # -5..5 degrees) the lines settle it.
  crop = (0.15, 0.15, 0.85, 0.85)
  photo = np.asarray(_turned_rectangle(2.5, size=(200, 200), crop=crop).convert('RGB'))
  logits = np.full(91, -30.0, np.float32)
  if sure:
    logits[45] = 0.0
  else:
    logits[40:51] = 0.0
  monkeypatch.setattr(crop_model, 'forward', lambda images, batch_size=32: {
      'crop': np.tile(np.float32(crop), (len(images), 1)),
      'angle': np.zeros(len(images), np.float32),
      'angle_logits': np.tile(logits, (len(images), 1))})
  for mirror in (False, True):  # the mock's bins are symmetric: the mirror's say the same
    r = inference.predict_crop(photo, model=crop_model, mirror=mirror)
    assert r.angle == pytest.approx(expected, abs=0.1)


def test_predict_cli_no_straighten(crop_model, tmp_path, capsys, monkeypatch):
  # A photo whose lines are near the network's angle, so that straightening moves it.
  photos = _line_photos()
  network = inference.predict_crops(photos, model=crop_model, straighten=False)
  found = [straighten.line_tilt(p, n.fraction, n.angle).found for p, n in zip(photos, network)]
  photo = tmp_path / 'lines.png'
  Image.fromarray(photos[found.index(True)]).save(photo)
  expected = {s: inference.predict_crop(photo, model=crop_model, straighten=s) for s in (False, True)}
  assert expected[True].angle != expected[False].angle
  monkeypatch.setattr(inference, 'load_model', lambda *args, **kwargs: crop_model)
  for flag, s in (([], True), (['--no-straighten'], False)):
    code = predict_cli.main(['--crop', str(photo), '--model', 'M', '--json', *flag])
    out, _ = capsys.readouterr()
    assert code == 0
    assert json.loads(out)['angle'] == pytest.approx(expected[s].angle, abs=1e-5)
  for flag in ('--no-straighten', '--no-mirror'):
    code = predict_cli.main([str(photo), str(photo), flag, '--model', 'M'])
    _, err = capsys.readouterr()
    assert code == 2 and 'need --crop' in err
  # --no-mirror: the photo alone, as predict_crop(mirror=False) gives it.
  alone = inference.predict_crop(photo, model=crop_model, mirror=False)
  assert alone.fraction != expected[True].fraction  # (the default averages two)
  code = predict_cli.main(['--crop', str(photo), '--model', 'M', '--json', '--no-mirror'])
  out, _ = capsys.readouterr()
  assert code == 0
  np.testing.assert_allclose(json.loads(out)['fraction'], alone.fraction, atol=1e-5)
  assert json.loads(out)['angle'] == pytest.approx(alone.angle, abs=1e-5)


def test_the_evaluation_puts_network_and_straightened_side_by_side(crop_model, monkeypatch):
  import io
  from cropjax.data import autocrop

  def records(source, split, data_dir=None):
    out = []
    for i, angle in enumerate((2.5, -1.5, 0.0)):
      crop = (0.1, 0.15, 0.85, 0.9)
      buf = io.BytesIO()
      _turned_rectangle(angle, size=(200, 150), crop=crop).convert('RGB').save(buf, 'PNG')
      out.append((buf.getvalue(), crop, angle))
    return out

  monkeypatch.setattr(autocrop, 'load_records', records)
  report = evaluation.evaluate_crops(crop_model, source='lines', split='validation')
  network, straightened = report['network'], report['straightened']
  # The same boxes (the untrained model's are small: none needs shrinking into the frame).
  assert network['iou_mean'] == pytest.approx(straightened['iou_mean'])
  assert network['boundary_error_mean'] == pytest.approx(straightened['boundary_error_mean'])
  assert report['turned_photos'] == 2 and report['straightened_photos_per_second'] > 0
  table = evaluation.format_table(report).splitlines()
  assert table[1].split() == ['metric', 'network', 'straightened', 'full_frame', 'centre_crop']
  assert table[-1].startswith('photos/s: network')
