"""Alignment, verification and the verdict (cropjax/matching), and the real-photo yardstick."""

import dataclasses
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from cropjax import metadata
from cropjax import procedural
from cropjax import sift
from cropjax import threads
from cropjax.datasets import edits
from cropjax.datasets import splits
from cropjax.datasets import yardstick
from cropjax.matching import AlignError, Pyramid, align, align_batch
from cropjax.matching import alignment
from cropjax.matching import verdict
from cropjax.matching import verify

PHOTOS = dict(procedural.skimage_photos(['astronaut', 'coffee', 'chelsea']))


def _jpeg(image: Image.Image, quality: int) -> np.ndarray:
  buf = io.BytesIO()
  image.save(buf, 'JPEG', quality=quality)
  return np.asarray(Image.open(buf).convert('RGB'))


def _crop(name: str, box, scale: float, quality: int = 60) -> np.ndarray:
  """The window `box` (float pixels) of a real photo, resized by `scale`, JPEG-encoded."""
  photo = Image.fromarray(PHOTOS[name])
  size = (round((box[2] - box[0]) * scale), round((box[3] - box[1]) * scale))
  return _jpeg(photo.resize(size, Image.Resampling.LANCZOS, box=box), quality)


def _off(box, fraction):
  """The box moved by `fraction` of its size right and up, and grown by it at the right."""
  w, h = box[2] - box[0], box[3] - box[1]
  return (box[0] + fraction * w, box[1] - fraction * h, box[2] + 2 * fraction * w, box[3] - fraction * h)


@pytest.mark.parametrize('name, box, scale', [
    ('astronaut', (100.3, 140.7, 380.2, 350.9), 0.7),
    ('coffee', (201.6, 90.2, 530.5, 370.8), 0.55),
    ('chelsea', (40.0, 20.5, 250.25, 290.0), 1.0),
])
def test_a_resized_jpeg_crop_is_found_to_half_a_pixel_from_a_start_ten_percent_off(name, box, scale):
  original = _jpeg(Image.fromarray(PHOTOS[name]), 85)
  crop = _crop(name, box, scale, quality=40)
  a = align(original, crop, _off(box, 0.1))
  assert np.abs(np.array(a.box) - box).max() < 0.5, (a.box, box)
  assert a.converged and a.inside == 1.0
  assert a.score > 0.95 and a.score >= a.start_score
  assert min(a.blocks) > 0.5  # it matches everywhere, not on average
  assert a.peak > 0.05  # and only there


def _shaded(crop: np.ndarray, kind: str) -> np.ndarray:
  """A crop as an editor might shade it: a vignette (corners at 40 % of their brightness) or a
  graduated filter (the top darkened to 55 %, easing off over the next two fifths)."""
  h, w = crop.shape[:2]
  y, x = np.mgrid[0:h, 0:w]
  if kind == 'vignette':
    gain = 1 - 0.6 * ((x / w - 0.5) ** 2 + (y / h - 0.5) ** 2) / 0.5
  else:
    gain = 0.55 + 0.45 * np.clip((y / h - 0.1) / 0.4, 0, 1)
  return _jpeg(Image.fromarray(np.clip(crop * gain[..., None], 0, 255).astype(np.uint8)), 80)


@pytest.mark.parametrize('kind', ['vignette', 'graduated'])
def test_a_crop_shaded_by_an_edit_is_found_as_exactly_as_the_plain_crop(kind, monkeypatch):
  # The template is divided by the smooth gain field that maps the original onto it
  # (`alignment._flattened`): without it a vignette or graduated filter lowers the score the
  # verdict reads (and on camera-size photos pulls the box: docs/real_photos.md).
  box = (100.3, 140.7, 380.2, 350.9)
  original = _jpeg(Image.fromarray(PHOTOS['astronaut']), 85)
  crop = _shaded(_crop('astronaut', box, 0.7, quality=95), kind)
  a = align(original, crop, _off(box, 0.1))
  assert np.abs(np.array(a.box) - box).max() < 0.5, (a.box, box)
  assert a.score > 0.98 and min(a.blocks) > 0.5
  monkeypatch.setattr(alignment, 'FIELD_TERMS', ())
  without = align(original, crop, _off(box, 0.1))
  assert without.score < a.score - 0.01
  monkeypatch.undo()
  # another photo's window gains nothing like it from a field of its own
  other = _shaded(_crop('coffee', (201.6, 90.2, 530.5, 370.8), 0.55, quality=95), kind)
  assert align(original, other, _off(box, 0.1)).score < 0.6


def test_the_gain_field_undoes_a_smooth_shading_and_leaves_a_plain_crop_alone():
  rng = np.random.default_rng(0)
  canvas = (0.2 + 0.6 * np.asarray(Image.fromarray(PHOTOS['chelsea']).convert('L'),
                                   np.float32)[:120, :160] / 255).astype(np.float32)
  inside = np.ones_like(canvas)
  plain = canvas[10:106, 12:140].copy()
  y, x = np.mgrid[0:96, 0:128]
  gain = (0.9 - 0.5 * (x / 128 - 0.3) ** 2 + 0.2 * y / 96).astype(np.float32)
  flat = alignment._flattened(plain * gain * 1.3, canvas, inside, (12, 10), 1)
  ratio = flat / plain
  assert ratio.std() / ratio.mean() < 0.01  # the field gone, a constant left
  noisy = plain + rng.normal(0, 0.01, plain.shape).astype(np.float32)  # JPEG's noise, say
  ratio = noisy / alignment._flattened(noisy, canvas, inside, (12, 10), 1)  # the field itself
  assert np.abs(ratio - 1).max() < 0.02  # a plain crop's field is about 1


def test_the_finest_stage_reaches_its_optimum_in_two_steps():
  # The residual is each sample's difference at unit variance, so Levenberg-Marquardt's first
  # damping (1) is small beside it and its first steps are Gauss-Newton's. (With the difference
  # at unit norm over the whole template, two steps moved the box a tenth of the way there.)
  box = (60.4, 30.8, 330.1, 250.6)
  original = _jpeg(Image.fromarray(PHOTOS['chelsea']), 85)
  crop = _crop('chelsea', box, 0.8, quality=50)
  start = _off(box, 0.005)  # a sample of the 128-sample stage off, 2.7 px
  few, many = (align_batch([original], [crop], [start], stages=((128, 0.08, steps),), seed=False)[0]
               for steps in (3, 30))  # the first step only evaluates the start
  assert np.abs(np.array(many.box) - start).max() > 2.0  # the start was off
  assert np.abs(np.array(many.box) - box).max() < 0.5
  assert np.abs(np.array(few.box) - np.array(many.box)).max() < 0.1, (few.box, many.box)


def test_the_closed_form_jacobian_equals_the_reads_derivatives():
  # The solver's residual without an angle differentiates itself (`_separable_residual`): it
  # must equal autodiff of the plain reads (`_warp`, `_zncc_terms`) between sample centres and
  # where the box leaves the canvas, and on the centres themselves (where autodiff of a read
  # takes one side) the central difference of its values there.
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  th, tw, ch, cw = 16, 32, 28, 44  # powers of two: the sample positions below are exact
  canvas = jnp.asarray(rng.random((ch, cw)), jnp.float32)
  template = jnp.asarray(rng.random((th, tw)), jnp.float32)
  tmask, tsize = jnp.ones((th, tw)), jnp.array([tw, th], jnp.float32)
  ramp = np.r_[np.zeros(3), np.linspace(0.1, 0.9, 4), np.ones(ch - 7)]  # the frame's edge
  cmask = (jnp.asarray(ramp, jnp.float32), jnp.ones(cw, jnp.float32))

  def plain(p, cmask=cmask):
    sampled, inside = alignment._warp(p, tsize, template.shape, canvas, cmask, False)
    diff, _ = alignment._zncc_terms(template, tmask, sampled, inside)
    return diff * jnp.sqrt(jnp.maximum((tmask * inside).sum(), 1.0))

  def closed(p, cmask=cmask):  # its layout is the solver's business: transposed
    return alignment._residual(p, (template, tmask, tsize, canvas, cmask, False)).T

  # Compiled once each (op by op, autodiff of the reads takes seconds a call).
  plain_at, closed_at = jax.jit(plain), jax.jit(closed)
  d_plain, d_closed, r_closed = (jax.jit(jax.jacfwd(plain)), jax.jit(jax.jacfwd(closed)),
                                 jax.jit(jax.jacrev(closed)))
  for p in ([6.3, 5.6, 38.2, 21.9], [-5.0, -3.3, 30.1, 14.2], [-4.5, -2.2, 52.1, 33.3]):
    p = jnp.array(p, jnp.float32)
    expected = d_plain(p)
    assert np.abs(expected).max() > 1.0  # the residual does move
    np.testing.assert_allclose(closed_at(p), plain_at(p), atol=2e-6)
    np.testing.assert_allclose(d_closed(p), expected, atol=2e-6)
    np.testing.assert_allclose(r_closed(p), expected, atol=2e-6)
  # Every sample on a centre (x = 6 + (j + 0.5) * 32 / 32; centres at k + 0.5), the box inside
  # the frame (the mask, which the solver holds still, does not move the differences).
  inside = (jnp.ones(ch, jnp.float32), jnp.ones(cw, jnp.float32))
  p, h = jnp.array([6.0, 5.0, 38.0, 21.0], jnp.float32), 3e-3
  central = jnp.stack([(plain_at(p + h * e, inside) - plain_at(p - h * e, inside)) / (2 * h)
                       for e in jnp.eye(4)], -1)
  assert np.abs(central - d_plain(p, inside)).max() > 1.0  # one-sided autodiff
  np.testing.assert_allclose(d_closed(p, inside), central, atol=1e-2)


@pytest.mark.parametrize('name', sorted(PHOTOS))
def test_a_large_crop_with_odd_sides_is_found_without_stretching(name):
  # Sides odd at every halving: a template read from a padded pyramid level came out up to
  # 2^k - 1 pixels too wide, and the box with it (0.8-1.7 px on the far edges).
  photo = PHOTOS[name]
  big = Image.fromarray(photo).resize((1536, round(1536 * photo.shape[0] / photo.shape[1])),
                                      Image.Resampling.BICUBIC)
  box = (211.0, 97.0, 211.0 + 1003, 97.0 + 763)
  crop = np.asarray(big.crop(tuple(int(v) for v in box)))
  a = align(np.asarray(big), crop, np.array(box) + [12, -9, 20, -3])
  assert np.abs(np.array(a.box) - box).max() < 0.4, (a.box, box)


def test_flat_content_matches_without_a_peak():
  y, x = np.mgrid[0:300, 0:400].astype(np.float64)
  sky = np.clip(np.stack([90 + 0.2 * y, 140 + 0.15 * y + 0.02 * x, 220 - 0.05 * y], -1), 0, 255)
  original = _jpeg(Image.fromarray(sky.astype(np.uint8)), 80)
  box = (100.0, 60.0, 260.0, 180.0)
  crop = _jpeg(Image.fromarray(original).crop(tuple(int(v) for v in box)), 60)
  textured = align(PHOTOS['astronaut'], PHOTOS['astronaut'][140:260, 100:260],
                   (100, 140, 260, 260))
  flat = align(original, crop, box)
  assert flat.score > 0.95 and textured.score > 0.95
  assert flat.peak < 0.1 * textured.peak  # a high score here says little: the verdict sees that


def test_content_that_slides_along_one_axis_has_no_peak():
  # Motion blur along x (rows of a real photo averaged over 80 px): the crop fits anywhere
  # along the row, so the match says nothing about x, however well it scores.
  rows = np.asarray(Image.fromarray(PHOTOS['coffee']).resize((1, 400)), np.float64)
  streaks = np.broadcast_to(rows, (400, 600, 3)).astype(np.uint8)
  original = _jpeg(Image.fromarray(streaks), 85)
  box = (150.0, 100.0, 350.0, 260.0)
  crop = _jpeg(Image.fromarray(original).crop(tuple(int(v) for v in box)), 70)
  slides = align(original, crop, box)
  textured = align(PHOTOS['coffee'], PHOTOS['coffee'][100:260, 150:350], box)
  assert slides.score > 0.95 and textured.score > 0.95
  assert slides.peak < 0.1 * textured.peak


def test_detail_tells_matching_texture_from_matching_shading():
  # The same crop at its place, and a window that matches only in its shading: a copy of the
  # crop's blurred light, with another photo's fine texture on it.
  photo = PHOTOS['astronaut'].astype(np.float64)
  box = (100, 140, 300, 300)
  crop = _jpeg(Image.fromarray(photo[140:300, 100:300].astype(np.uint8)), 50)
  light = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(8)), np.float64)
  other = PHOTOS['coffee'][:160, :200].astype(np.float64)
  texture = other - np.asarray(Image.fromarray(other.astype(np.uint8)).filter(
      ImageFilter.GaussianBlur(8)), np.float64)
  fake = np.clip(light + texture, 0, 255).astype(np.uint8)
  at_place = align(_jpeg(Image.fromarray(photo.astype(np.uint8)), 85), crop, box)
  shading = align(fake, crop, (0, 0, 200, 160))
  assert at_place.detail > 0.8
  assert shading.score > 0.5 and shading.detail < 0.3, (shading.score, shading.detail)


def test_detail_alone_reads_as_the_full_scores_do():
  # The mirror check's finest stage scores its fit and detail alone (no blocks, no peak): the
  # same numbers as the full scores, for a crop at its place and for one that is not there.
  original = _jpeg(Image.fromarray(PHOTOS['coffee']), 85)
  box = (201.6, 90.2, 530.5, 370.8)
  crop = _crop('coffee', box, 0.55, quality=40)
  mirrored = np.ascontiguousarray(crop[:, ::-1])
  kw = dict(stages=alignment.STAGES[-1:], seed=False)
  full = alignment.align_batch([original] * 2, [crop, mirrored], [box] * 2, **kw)
  alone = alignment.align_batch([original] * 2, [crop, mirrored], [box] * 2, detail='detail', **kw)
  for f, a in zip(full, alone):
    np.testing.assert_allclose([a.score, a.inside, a.detail, *a.box],
                               [f.score, f.inside, f.detail, *f.box], atol=1e-5)
    assert a.blocks == () and np.isnan(a.peak) and len(f.blocks) == alignment.BLOCKS ** 2
  assert full[0].detail > 0.8 > 0.3 > full[1].detail


def test_batched_equals_one_at_a_time():
  box = (100.3, 140.7, 380.2, 350.9)
  crop = _crop('astronaut', box, 0.7)
  other = _crop('coffee', (201.6, 90.2, 530.5, 370.8), 0.55)
  jobs = [(PHOTOS['astronaut'], crop, _off(box, 0.08)),
          (PHOTOS['coffee'], other, (190.0, 100.0, 520.0, 380.0)),
          (PHOTOS['astronaut'], crop, _off(box, -0.05))]
  many = align_batch(*zip(*jobs))
  for job, got in zip(jobs, many):
    one = align(*job)
    # Equal to within the solver's tolerance (1e-4 of coordinates of a few hundred samples): a
    # batch may take other float32 kernels, and the solver may then stop one step apart.
    np.testing.assert_allclose(got.box, one.box, atol=0.05)
    np.testing.assert_allclose([got.score, got.inside], [one.score, one.inside], atol=1e-3)
    assert got.converged == one.converged


def test_a_stage_in_sub_batches_equals_one_call(monkeypatch):
  """Calls of at most CALL_SAMPLES samples (two pairs at the finest stage here, the last one
  half padding) give what one call over the padded batch gives, scores and detail included."""
  box = (100.3, 140.7, 380.2, 350.9)
  crop = _crop('astronaut', box, 0.7)
  other = _crop('coffee', (201.6, 90.2, 530.5, 370.8), 0.55)
  jobs = [(PHOTOS['astronaut'], crop, _off(box, 0.08)),
          (PHOTOS['coffee'], other, (190.0, 100.0, 520.0, 380.0)),
          (PHOTOS['astronaut'], crop, _off(box, -0.05)),
          (PHOTOS['coffee'], crop, (150.0, 120.0, 420.0, 330.0)),  # not a crop of it
          (PHOTOS['coffee'], other, _off((201.6, 90.2, 530.5, 370.8), 0.06))]
  monkeypatch.setattr(alignment, 'CALL_SAMPLES', 1 << 30)
  monkeypatch.setattr(alignment, 'CPU_CALLS', 1)
  whole = align_batch(*zip(*jobs))
  monkeypatch.setattr(alignment, 'CALL_SAMPLES', 2 * 128 * 128)
  batch = alignment._prepare(*zip(*[(alignment.Pyramid(o), alignment.Pyramid(c), np.array(b))
                                    for o, c, b in jobs]), [0.0] * 5, 128, 0.08, False)
  assert alignment._sub_batches(batch) == [slice(0, 2), slice(2, 4), slice(4, 6)]
  parts = align_batch(*zip(*jobs))
  for a, b in zip(whole, parts):
    np.testing.assert_allclose(a.box, b.box, atol=1e-3)
    np.testing.assert_allclose([a.score, a.inside, a.peak, a.detail, *a.blocks],
                               [b.score, b.inside, b.peak, b.detail, *b.blocks], atol=1e-4)
    assert a.converged == b.converged


def _stage_jobs(n: int):
  """n crops of real photos, each with a start a few per cent off."""
  rng = np.random.default_rng(5)
  jobs = []
  for k in range(n):
    name = ('astronaut', 'coffee', 'chelsea')[k % 3]
    h, w = PHOTOS[name].shape[:2]
    x0, y0 = rng.uniform(0, 0.4) * w, rng.uniform(0, 0.4) * h
    box = (x0, y0, x0 + rng.uniform(0.3, 0.6) * w, y0 + rng.uniform(0.3, 0.6) * h)
    jobs.append((Pyramid(PHOTOS[name]), Pyramid(_crop(name, box, 0.8)),
                 _off(box, rng.uniform(-0.04, 0.04))))
  return jobs


def test_a_stage_s_calls_side_by_side_equal_one_after_another(monkeypatch):
  """On the CPU a stage's pairs go in (at least) two calls, whatever the number of cores; run
  side by side on two cores they give what they give one after another on one."""
  jobs = _stage_jobs(10)
  batch = alignment._prepare(*zip(*jobs), [0.0] * 10, 32, 0.35, False)
  found = {}
  for workers in (1, 2):
    monkeypatch.setattr(threads, 'workers', lambda: workers)
    assert alignment._sub_batches(batch) == [slice(0, 8), slice(8, 16)]  # 5 + 5 pairs, padded
    found[workers] = align_batch(*zip(*jobs))
  assert found[1] == found[2]


def test_stage_calls_from_two_threads_at_once_finish(monkeypatch):
  """Two threads aligning at once (each a batch large enough for XLA to spread over the cores)
  finish with what each gives alone: with optimistix's default QR step, jaxlib's batched LAPACK
  QR never returned here."""
  import threading
  monkeypatch.setattr(threads, 'workers', lambda: 1)  # each thread's calls in turn
  jobs = _stage_jobs(32)
  alone = align_batch(*zip(*jobs), stages=alignment.STAGES[:1], seed=False, detail=False)
  out = [None, None]

  def work(k):
    for _ in range(3):
      out[k] = align_batch(*zip(*jobs), stages=alignment.STAGES[:1], seed=False, detail=False)

  both = [threading.Thread(target=work, args=(k,), daemon=True) for k in (0, 1)]
  for t in both:
    t.start()
  for t in both:
    t.join(timeout=60)
  assert not any(t.is_alive() for t in both), 'two alignments at once never returned'
  def key(results):  # without detail, peak and detail are NaN: compare the rest
    return [(a.box, a.score, a.start_score, a.inside, a.converged) for a in results]
  assert key(out[0]) == key(alone) and key(out[1]) == key(alone)


def test_a_result_never_scores_worse_than_its_start():
  box = (100.3, 140.7, 380.2, 350.9)
  crop = _crop('astronaut', box, 0.7)
  a = align(PHOTOS['astronaut'], crop, box)  # the exact box: nothing to gain
  assert a.score >= a.start_score
  assert np.abs(np.array(a.box) - box).max() < 0.5


@pytest.mark.parametrize('stages, detail', [(alignment.STAGES, True), (alignment.STAGES[:1], False),
                                             (alignment.STAGES[2:], True),
                                             (alignment.STAGES[1:], False)])
def test_a_fit_that_ends_worse_keeps_its_start_and_the_start_s_score(monkeypatch, stages, detail):
  # The second of three pairs is pushed off by every stage (and its own score of the result
  # spoiled): it must come back at its start, unconverged, with its start's full score.
  real = alignment._stage_fn

  def pushed(with_angle, max_steps, scored, over):
    fn = real(with_angle, max_steps, scored, over)

    def call(*args):
      out = [np.array(v) for v in fn(*args)]
      out[0][1, [0, 2]] += 20.0
      if scored:
        out[2][1] = -1.0
      return tuple(out)
    return call
  monkeypatch.setattr(alignment, '_stage_fn', pushed)
  boxes = [(100.3, 140.7, 380.2, 350.9), (60.0, 50.0, 300.0, 260.0), (201.6, 90.2, 400.5, 300.8)]
  crops = [_crop('astronaut', b, 0.7) for b in boxes]
  starts = [_off(b, 0.02) for b in boxes]
  got = align_batch([PHOTOS['astronaut']] * 3, crops, starts, stages=stages, detail=detail)
  samples, margin, _ = stages[-1]
  at = alignment._prepare([Pyramid(PHOTOS['astronaut'])], [Pyramid(crops[1])], [starts[1]], [0.0],
                          samples, margin, False)
  zncc, share, *rest = (v[0] for v in alignment._scores(at, at.p0, False, full=detail))
  a = got[1]
  np.testing.assert_allclose(a.box, starts[1], atol=1e-9)
  assert not a.converged and a.score == pytest.approx(a.start_score, abs=1e-6)
  np.testing.assert_allclose([a.score, a.inside], [zncc, share], atol=1e-6)
  if detail:
    np.testing.assert_allclose([a.peak, a.detail, *a.blocks], [rest[1], rest[2], *rest[0]],
                               atol=1e-6)
  for i in (0, 2):  # the others are fitted as ever
    assert got[i].score > got[i].start_score
    assert np.abs(np.array(got[i].box) - starts[i]).max() > 1.0


def test_the_angle_of_a_straightened_crop_is_found():
  photo = Image.fromarray(PHOTOS['astronaut'])
  centre, size, angle = np.array([250.0, 240.0]), np.array([220.0, 170.0]), 4.0
  # The crop's pixel (u, v) is the photo at centre + R(angle) (u - size / 2, v - size / 2).
  t = np.deg2rad(angle)
  lin = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
  off = centre - lin @ (size / 2)
  # PIL's affine maps output -> input pixel corners; the half-pixel terms cancel out here.
  coeffs = (*lin[0], off[0], *lin[1], off[1])
  crop = _jpeg(photo.transform(tuple(int(s) for s in size), Image.Transform.AFFINE, coeffs,
                               Image.Resampling.BICUBIC), 70)
  start = (*(centre - size / 2 + [8, -6]), *(centre + size / 2 + [8, -6]))
  a = align(PHOTOS['astronaut'], crop, start, with_angle=True)
  assert abs(a.angle - angle) < 0.2, a.angle
  np.testing.assert_allclose(a.box, [*(centre - size / 2), *(centre + size / 2)], atol=1.0)
  flat = align(PHOTOS['astronaut'], crop, start)  # without the angle it fits worse
  assert flat.score < a.score


def test_the_direction_is_found_both_ways_round():
  box = (201.6, 90.2, 530.5, 370.8)
  original = Pyramid(_jpeg(Image.fromarray(PHOTOS['coffee']), 80))
  crop = Pyramid(_crop('coffee', box, 0.6))
  first, second = verify.verify_batch([(original, crop), (crop, original)])
  assert (first.original, second.original) == ('a', 'b')
  for ev in (first, second):
    np.testing.assert_allclose(ev.alignment.box, box, atol=1.0)
    assert ev.alignment.score > ev.reverse.score
    assert abs(ev.alignment.angle) < 0.1  # not turned


def _straightened(name: str, crop: metadata.Crop, scale: float) -> tuple[np.ndarray, np.ndarray]:
  """A straightened crop of a real photo, JPEG-encoded, and its unturned box in pixels."""
  photo = Image.fromarray(PHOTOS[name])
  w, h = photo.size
  turned = Image.fromarray(_jpeg(yardstick.turned_window(photo, crop, scale), 70))
  return np.asarray(turned), np.array([crop.left * w, crop.top * h, crop.right * w, crop.bottom * h])


@pytest.mark.parametrize('angle', [-6.0, 2.5])
def test_verification_fits_a_straightened_crop_s_angle_both_ways_round(angle):
  crop, box = _straightened('coffee', metadata.Crop(0.25, 0.15, 0.7, 0.75, angle), 0.8)
  original, crop = Pyramid(_jpeg(Image.fromarray(PHOTOS['coffee']), 80)), Pyramid(crop)
  first, second = verify.verify_batch([(original, crop), (crop, original)])
  assert (first.original, second.original) == ('a', 'b')
  for ev in (first, second):
    assert abs(ev.alignment.angle + angle) < 0.15  # alignment's angle: counter-clockwise
    np.testing.assert_allclose(ev.alignment.box, box, atol=1.0)
    assert ev.alignment.score > 0.95 and ev.alignment.inside > 0.999


@pytest.mark.parametrize('name, angle', [('coffee', -1.0), ('coffee', 1.0), ('astronaut', 1.0)])
def test_a_small_turn_is_fitted_whole_not_short_of_it(name, angle):
  # Found by the unturned search, a crop turned a degree starts its angle fit at 0; read on a
  # canvas of one pixel a sample, the fit stayed near that start (these settled 0.18-0.27
  # degrees short); on alignment.ANGLE_OVERSAMPLE's canvas within a few hundredths.
  crop, _ = _straightened(name, metadata.Crop(0.25, 0.15, 0.7, 0.75, angle), 0.8)
  original, crop = Pyramid(_jpeg(Image.fromarray(PHOTOS[name]), 80)), Pyramid(crop)
  for ev in verify.verify_batch([(original, crop), (crop, original)]):
    assert abs(ev.alignment.angle + angle) < 0.08, ev.alignment.angle


def test_a_turned_canvas_crossed_by_the_frame_s_edge_reads_its_whole_mask():
  # On the frame's axes a canvas's inside-mask is the product of a row and a column profile;
  # turned, with the frame's edge across it, it is not, and a stage reads the mask itself: a
  # straightened crop that touches the frame's edge lies wholly inside the frame.
  w, h = Image.fromarray(PHOTOS['coffee']).size
  turn = metadata.fit_in_frame(metadata.Crop(0.0, 0.2, 0.5, 0.8, angle=5.0), w, h)
  crop, box = _straightened('coffee', turn, 0.9)
  original = Pyramid(PHOTOS['coffee'])
  masks = [alignment._stage_inputs(original, Pyramid(crop), box, a, 128, 0.08)[2]
           for a in (-5.0, 0.0)]
  assert [alignment._separable(m, alignment._profiles(m)) for m in masks] == [False, True]
  fine = align(original, crop, box, angle=-5.0, stages=alignment.STAGES[-1:])
  assert fine.inside > 0.999 and fine.score > 0.95
  np.testing.assert_allclose(fine.box, box, atol=1.0)


def test_the_mirror_check_follows_a_direction_the_second_stage_turns_round(monkeypatch):
  # The mirror check starts after the first stage, in the direction leading then; where the
  # second stage turns the direction round it is made again, in the winning one.
  original = Pyramid(_jpeg(Image.fromarray(PHOTOS['coffee']), 80))
  crop = Pyramid(_crop('coffee', (201.6, 90.2, 530.5, 370.8), 0.6))
  align_batch, mirrored = verify.alignment.align_batch, verify._mirrored

  def second_stage_turns(*args, stages, **kwargs):
    out = align_batch(*args, stages=stages, **kwargs)
    if tuple(stages) == alignment.STAGES[1:2]:  # the second stage: directions a, b of pair 0
      out[0] = dataclasses.replace(out[0], score=-1.0)
    return out
  calls = []

  def recorded(pairs, winners, best):
    calls.append((list(winners), mirrored(pairs, winners, best)))
    return calls[-1][1]
  monkeypatch.setattr(verify.alignment, 'align_batch', second_stage_turns)
  monkeypatch.setattr(verify, '_mirrored', recorded)
  monkeypatch.setattr(verify, 'RUNNER_UP', False)  # the second stage's rows: a, b alone
  ev, = verify.verify_batch([(original, crop)])
  assert [w for w, _ in calls] == [[(0, 'a')], [(0, 'b')]]
  assert ev.original == 'b' and ev.mirror is calls[1][1][0]
  monkeypatch.undo()
  calls.clear()
  monkeypatch.setattr(verify, '_mirrored', recorded)
  ev, = verify.verify_batch([(original, crop)])  # not turned: one mirror check
  assert [w for w, _ in calls] == [[(0, 'a')]] and ev.original == 'a'


def test_spread_is_the_standard_deviation_and_zero_when_flat():
  # What the search and the seed ask of each template before correlating it (a flat one says
  # nothing): OpenCV's one pass, equal to numpy's std.
  rng = np.random.default_rng(3)
  for shape in ((7, 11), (32, 24), (1, 5)):
    a = rng.random(shape, np.float32) * 3 - 1
    assert abs(alignment.spread(a) - float(a.std())) < 1e-6
    assert abs(alignment.spread(a[:, ::2]) - float(a[:, ::2].std())) < 1e-6  # a strided view
  assert alignment.spread(np.full((9, 9), 0.37, np.float32)) < 1e-7  # under both thresholds


@pytest.mark.parametrize('kind', edits.KINDS)
def test_an_edited_crop_is_its_window_toned_or_shaded(kind):
  photos = [(n, Image.fromarray(a)) for n, a in PHOTOS.items()]
  pairs = yardstick.user_pairs(photos, seed=2, per_kind={'edited': 1}, edits=(kind,))
  assert [p.edit for p in pairs] == [kind] * len(photos) and all(p.is_pair for p in pairs)
  for p in pairs:
    original, crop = (p.a, p.b) if p.original == 'a' else (p.b, p.a)
    window = np.asarray(original.resize(crop.size, Image.Resampling.LANCZOS, box=p.box)
                        .convert('L'), float)
    mine = np.asarray(crop.convert('L'), float)
    assert np.corrcoef(window.ravel(), mine.ravel())[0, 1] > 0.8  # the same picture
    h, w = mine.shape
    gain = (mine + 8) / (window + 8)  # what the edit did, where
    top, mid = np.median(gain[:h // 10]), np.median(gain[h // 2:])
    corner, centre = np.median(gain[:h // 8, :w // 8]), np.median(gain[3 * h // 8:5 * h // 8,
                                                                        3 * w // 8:5 * w // 8])
    if kind == 'graduated':  # the top darker than the lower half
      assert top < 0.75 * mid
    elif kind in ('vignette', 'vignette30', 'export'):  # the corners darker than the centre
      assert corner < {'vignette': 0.6, 'vignette30': 0.9, 'export': 0.95}[kind] * centre
    elif kind == 'bw':
      rgb = np.asarray(crop, float)
      assert np.abs(rgb - rgb.mean(-1, keepdims=True)).mean() < 3  # no colour left
  with pytest.raises(ValueError, match='unknown edit'):
    edits.edit(photos[0][1], 'sepia', np.random.default_rng(0))
  with pytest.raises(ValueError, match='edits must be some of'):
    yardstick.user_pairs(photos, per_kind={'edited': 1}, edits=('sepia',))


def test_unshading_removes_a_smooth_gain_and_keeps_the_detail():
  image = np.asarray(Image.fromarray(PHOTOS['astronaut']).convert('L').resize((128, 128)),
                     np.float32) / 255
  y, x = np.mgrid[0:128, 0:128] / 128
  shaded = image * (0.5 + 0.5 * np.clip((y - 0.1) / 0.4, 0, 1)) * (1 - 0.3 * (x - 0.5) ** 2)
  plain, undone = verify._unshaded(image), verify._unshaded(shaded.astype(np.float32))
  inner = (slice(8, -8), slice(8, -8))  # a blur's reach from the edge
  corr = lambda a, b: np.corrcoef(a[inner].ravel(), b[inner].ravel())[0, 1]
  assert corr(plain, undone) > 0.995 > 0.95 > corr(image, shaded)  # undone, where it was not
  assert corr(y, undone) ** 2 < 0.001  # nothing of the graduated filter's ramp left


def test_a_graduated_crop_is_placed_by_the_unshaded_search_and_scored_unshaded(monkeypatch):
  box = (100.3, 140.7, 380.2, 350.9)
  original = Pyramid(_jpeg(Image.fromarray(PHOTOS['astronaut']), 85))
  crop = Pyramid(_shaded(_crop('astronaut', box, 0.7, quality=95), 'graduated'))
  found = verify.search(original, crop)
  assert any(verify._iou(p.box, box) > 0.7 for p in found)
  # the unshaded place is one more start, where it is a place of its own
  monkeypatch.setattr(verify, 'UNSHADED', 0)
  assert len(verify.search(original, crop)) == verify.SEARCH_TOP <= len(found)
  monkeypatch.undo()
  # the runner-up's score: the crop's shading undone where it is read, nothing fitted
  (at, _), (elsewhere, _) = alignment.scores_at([original] * 2, [crop] * 2,
                                                [box, _off(box, 0.5)])
  assert at > 0.97 and elsewhere < 0.7
  monkeypatch.setattr(alignment, 'FIELD_TERMS', ())
  assert alignment.scores_at([original], [crop], [box])[0][0] < at - 0.02


def test_the_runner_up_is_the_best_unshaded_fit_elsewhere(monkeypatch):
  def fit(box, score):
    return alignment.Alignment(box=tuple(box), angle=0.0, score=score, start_score=score,
                               converged=True, inside=1.0, blocks=(), peak=0.0, detail=0.0)
  original, crop = Pyramid(PHOTOS['astronaut']), Pyramid(PHOTOS['coffee'])
  starts = [np.array(b, float) for b in ((0, 0, 100, 100), (5, 5, 105, 105), (300, 300, 400, 400),
                                         (200, 0, 300, 100))]
  jobs = [(0, 'a', original, crop, b) for b in starts]
  # the third start's fit moved far from it (to the fourth's place); the best is the first
  done = [fit(starts[0], 0.9), fit(starts[1], 0.8), fit(starts[3] + 20, 0.7),
          fit(starts[3], 0.6)]
  best = {(0, 'a'): (0, done[0])}
  flat = {(300.0, 300.0): 0.95, (220.0, 20.0): 0.5, (200.0, 0.0): 0.8}  # by top-left
  seen = []

  def scores_at(originals, crops, boxes, angles=None, stage=0):
    seen.extend(tuple(float(v) for v in b[:2]) for b in boxes)
    return [(flat[tuple(float(v) for v in b[:2])], 1.0) for b in boxes]
  monkeypatch.setattr(alignment, 'scores_at', scores_at)
  runner = verify._runners_up(jobs, done, best)
  # the second overlaps the best; the third's start (not its fit) scores best unshaded
  assert sorted(seen) == sorted(flat) and runner[(0, 'a')][0] == 2
  assert runner[(0, 'a')][1].box == tuple(starts[2])
  monkeypatch.setattr(verify, 'RUNNER_UP', False)
  assert verify._runners_up(jobs, done, best) == {}


def test_the_search_gives_its_best_distinct_places_best_first(monkeypatch):
  box = (100.3, 140.7, 380.2, 350.9)
  original = Pyramid(_jpeg(Image.fromarray(PHOTOS['astronaut']), 85))
  crop = Pyramid(_crop('astronaut', box, 0.7))
  monkeypatch.setattr(verify, 'UNSHADED', 0)  # the places by plain correlation alone
  found = verify.search(original, crop, top=4)
  assert len(found) == 4
  # 8 pixels a sample: 4 at 128 of 512, its sizes searched on the original halved once
  np.testing.assert_allclose(found[0].box, box, atol=16)
  assert found[0].angle == 0.0  # not turned
  scores = [p.score for p in found]
  assert scores == sorted(scores, reverse=True)
  for i, a in enumerate(found):  # distinct places: no two overlap by half
    assert all(verify._iou(a.box, b.box) < 0.5 for b in found[:i])
  fewer = verify.search(original, crop, top=2)
  np.testing.assert_equal([p.box for p in fewer], [p.box for p in found[:2]])
  assert verify.search(original, crop, top=0) == []


@pytest.mark.parametrize('turns', [(), (8.0,)])
def test_a_large_crop_is_searched_on_the_original_halved_and_found_in_place(monkeypatch, turns):
  # 55 % of the frame: at 128 samples its template's short side is about 80, so its sizes are
  # searched on the original halved twice; the place comes back in the original's pixels (a
  # sample there is 16 of them), as the search at full resolution finds it (with a sample of 4).
  box = (40.2, 30.7, 480.3, 360.9)
  original = Pyramid(_jpeg(Image.fromarray(PHOTOS['astronaut']), 85))
  crop = Pyramid(_crop('astronaut', box, 0.6))
  halved = verify.search(original, crop, turns=turns)
  monkeypatch.setattr(verify, 'SEARCH_LEAST', 10**6)  # every size at `side` itself
  full = verify.search(original, crop, turns=turns)
  assert halved[0].angle == full[0].angle == 0.0 and halved[0].score > 0.9
  centre, width = (np.add(box[:2], box[2:])) / 2, box[2] - box[0]
  # within a sample and a half (a template rounded to whole samples moves its centre by up to
  # half of one); the sizes tried are 12 % apart
  for place, sample in ((halved[0], 16), (full[0], 4)):
    np.testing.assert_allclose((place.box[:2] + place.box[2:]) / 2, centre, atol=1.5 * sample)
    assert abs(np.log((place.box[2] - place.box[0]) / width)) < np.log(1.13) / 2 + 0.02


@pytest.mark.parametrize('angle', [-9.0, 7.0])
def test_the_search_finds_a_crop_turned_beyond_the_unturned_search_s_reach(angle, monkeypatch):
  # A straightened crop turned by several degrees (Lightroom's sign): unturned, its best place
  # is elsewhere or scores poorly; the turned pass finds its place, at the nearest turn tried
  # (alignment's sign: the other way), and verification then fits its angle.
  crop, box = _straightened('astronaut', metadata.Crop(0.2, 0.25, 0.75, 0.7, angle), 0.8)
  original, crop = Pyramid(_jpeg(Image.fromarray(PHOTOS['astronaut']), 80)), Pyramid(crop)
  unturned = verify.search(original, crop, turns=())
  turned = verify.search(original, crop)
  nearest = min(verify.SEARCH_TURNS, key=lambda t: abs(t + angle))
  assert turned[0].angle == nearest and turned[0].score > unturned[0].score + 0.05
  centre = (np.asarray(turned[0].box[:2]) + turned[0].box[2:]) / 2
  np.testing.assert_allclose(centre, (box[:2] + box[2:]) / 2, atol=12)
  # From the search alone, and beside a given unturned start on the window itself (a network's
  # box): the turned place near it is a start of its own, not a duplicate of that box.
  monkeypatch.setattr(verify, 'PROPOSAL_INLIERS', 0)  # searched, not proposed by keypoints
  for starts in (None, [{'a': [box]}]):
    ev, = verify.verify_batch([(original, crop)], starts)
    assert ev.original == 'a' and abs(ev.alignment.angle + angle) < 0.15
    np.testing.assert_allclose(ev.alignment.box, box, atol=1.0)


def test_keypoints_propose_a_crop_s_place_and_turn_whichever_image_comes_first():
  # ORB keypoints and a RANSAC similarity put a straightened crop of a real photo within a few
  # pixels and its turn within a few tenths of a degree (alignment's sign: the other way).
  crop, box = _straightened('astronaut', metadata.Crop(0.2, 0.25, 0.75, 0.7, 5.0), 0.8)
  original, crop = Pyramid(_jpeg(Image.fromarray(PHOTOS['astronaut']), 80)), Pyramid(crop)
  for a, b, which in ((original, crop, 'a'), (crop, original, 'b')):
    proposal = verify.propose(a, b)
    assert proposal.original == which
    np.testing.assert_allclose(proposal.place.box, box, atol=3)
    assert abs(proposal.place.angle + 5.0) < 0.3
    assert proposal.place.score >= verify.PROPOSAL_INLIERS  # its inliers
  # an unturned crop starts unturned; another photo and a mirrored crop are proposed nothing
  window = (100.3, 140.7, 380.2, 350.9)
  plain = Pyramid(_crop('astronaut', window, 0.7))
  proposal = verify.propose(original, plain)
  assert proposal.original == 'a' and proposal.place.angle == 0.0
  np.testing.assert_allclose(proposal.place.box, window, atol=3)
  assert verify.propose(original, Pyramid(PHOTOS['coffee'])) is None
  assert verify.propose(original, verify.mirrored(plain)) is None


def test_a_pair_proposed_by_keypoints_is_not_searched(monkeypatch):
  window = (100.3, 140.7, 380.2, 350.9)
  original = Pyramid(_jpeg(Image.fromarray(PHOTOS['astronaut']), 85))
  crop = Pyramid(_crop('astronaut', window, 0.7))
  pairs = [(crop, original), (Pyramid(PHOTOS['coffee']), crop)]
  searched = []
  search = verify.search
  monkeypatch.setattr(verify, 'search', lambda o, c, **k: searched.append((o, c)) or search(
      o, c, **k))
  described = []
  features = sift.features
  monkeypatch.setattr(sift, 'features', lambda g, d: described.append(g.shape) or features(g, d))
  found = verify.search_pairs(pairs)
  proposal = verify.propose(crop, original)
  assert len(described) == 3  # the crop, in both pairs, described once
  # the crop pair: its proposal alone, in its direction; the other photo searched both ways
  assert found[0]['a'] == [] and len(found[0]['b']) == 1
  np.testing.assert_equal(found[0]['b'][0].box, proposal.place.box)
  assert [(o is pairs[1][0], c is pairs[1][0]) for o, c in searched] == [(True, False),
                                                                         (False, True)]
  ev, = verify.verify_batch(pairs[:1], searched=found[:1])
  assert ev.original == 'b'
  np.testing.assert_allclose(ev.alignment.box, window, atol=1.0)
  # without proposals every pair is searched both ways round
  searched.clear()
  monkeypatch.setattr(verify, 'PROPOSAL_INLIERS', 0)
  found = verify.search_pairs(pairs)
  assert len(searched) == 4 and len(found[0]['b']) > 1
  assert verify.search_pairs(pairs, top=0) == [{'a': [], 'b': []}] * 2


def test_an_image_in_pairs_proposed_side_by_side_is_described_once(monkeypatch):
  # Both pairs start with the same crop, on two threads at once (where there are two cores):
  # one describes it, the other waits for its keypoints.
  crop = Pyramid(_crop('astronaut', (100.3, 140.7, 380.2, 350.9), 0.7))
  pairs = [(crop, Pyramid(PHOTOS['astronaut'])), (crop, Pyramid(PHOTOS['coffee']))]
  described = []
  features = sift.features

  def slow(grey, detector):
    described.append(grey.shape)
    time.sleep(0.3)  # long enough for the other thread to ask for the same image meanwhile
    return features(grey, detector)
  monkeypatch.setattr(sift, 'features', slow)
  proposals = threads.map(lambda p: verify.propose(*p), pairs)
  assert proposals[0] is not None and proposals[1] is None
  assert described.count(crop.levels[0].shape) == 1 and len(described) == 3


def test_a_keypoint_placed_crop_s_angle_is_fitted_from_its_turn_alone(monkeypatch):
  crop, box = _straightened('coffee', metadata.Crop(0.25, 0.15, 0.7, 0.75, -3.0), 0.8)
  original, crop = Pyramid(_jpeg(Image.fromarray(PHOTOS['coffee']), 80)), Pyramid(crop)
  assert verify.propose(original, crop) is not None
  turned = []  # (samples, starts) of each angle stage's call
  align_batch = alignment.align_batch

  def counted(originals, *args, **kwargs):
    if kwargs.get('with_angle'):
      turned.append((kwargs['stages'][0][0], len(originals)))
    return align_batch(originals, *args, **kwargs)
  monkeypatch.setattr(alignment, 'align_batch', counted)
  ev, = verify.verify_batch([(original, crop)])
  assert ev.original == 'a' and abs(ev.alignment.angle - 3.0) < 0.15
  np.testing.assert_allclose(ev.alignment.box, box, atol=1.0)
  # from the proposal's turn alone, at the second stage's samples: no coarse stage, no start at 0
  assert turned == [(verify.TURN_STAGES[1][0], 1)]
  turned.clear()
  monkeypatch.setattr(verify, 'PROPOSAL_INLIERS', 0)  # searched: both stages, from its turn and 0
  ev, = verify.verify_batch([(original, crop)])
  assert turned == [(stage[0], 2) for stage in verify.TURN_STAGES]
  assert abs(ev.alignment.angle - 3.0) < 0.15


def test_a_given_box_of_the_wrong_shape_starts_at_the_crop_s_shape():
  box = (120.0, 40.0, 330.0, 460.0)  # a tall window, full of the photo's height
  crop = Pyramid(_crop('astronaut', box, 0.6))
  original = Pyramid(_jpeg(Image.fromarray(PHOTOS['astronaut']), 85))
  squat = (120.0, 145.0, 330.0, 355.0)  # the network's shape can be this far off
  start = verify._at_aspect(np.array(squat), crop.width / crop.height)
  np.testing.assert_allclose((start[0] + start[2]) / 2, 225.0)
  np.testing.assert_allclose((start[1] + start[3]) / 2, 250.0)
  np.testing.assert_allclose((start[2] - start[0]) * (start[3] - start[1]), 210.0 * 210.0)
  np.testing.assert_allclose((start[2] - start[0]) / (start[3] - start[1]),
                             crop.width / crop.height)
  ev, = verify.verify_batch([(original, crop)], [{'a': [squat]}], search_top=0, mirror=False)
  assert ev.original == 'a'
  np.testing.assert_allclose(ev.alignment.box, box, atol=1.5)


def test_the_starts_aligned_ahead_give_the_same_evidence(monkeypatch):
  # What inference does while the network runs: the search's places through the first stage
  # before the network's boxes are known, and then (on the network's thread) its boxes;
  # verification then goes on from both. (Searched, not proposed by keypoints: a proposed pair's
  # other direction starts from the whole frame, aligned with whatever else is left to align, so
  # only to float32 rounding the same.)
  monkeypatch.setattr(verify, 'PROPOSAL_INLIERS', 0)
  box = (201.6, 90.2, 530.5, 370.8)
  pairs = [(Pyramid(PHOTOS['coffee']), Pyramid(_crop('coffee', box, 0.6))),
           (Pyramid(PHOTOS['chelsea']), Pyramid(_crop('coffee', box, 0.5)))]
  starts = [{'a': [np.add(box, (20.0, -15.0, 20.0, -15.0))]}, {'b': [(10.0, 10.0, 90.0, 70.0)]}]
  searched = verify.search_pairs(pairs)
  placed = verify.align_places(pairs, searched)
  assert ([[len(p[d]) for d in 'ab'] for p in placed]
          == [[len(s[d]) for d in 'ab'] for s in searched])
  assert max(verify._iou(np.array(a.box), np.array(box)) for a in placed[0]['a']) > 0.9
  given = verify.align_given(pairs, starts)
  assert [[len(g[d]) for d in 'ab'] for g in given] == [[1, 0], [0, 1]]
  ahead = verify.verify_batch(pairs, starts, searched=searched, placed=placed)
  both_ahead = verify.verify_batch(pairs, starts, searched=searched, placed=placed,
                                   given_placed=given)
  made_here = verify.verify_batch(pairs, starts)
  for x, y, z in zip(ahead, made_here, both_ahead):
    np.testing.assert_equal(dataclasses.asdict(x), dataclasses.asdict(y))
    np.testing.assert_equal(dataclasses.asdict(z), dataclasses.asdict(y))
  assert ahead[0].original == 'a'
  np.testing.assert_allclose(ahead[0].alignment.box, box, atol=1.0)


def test_verification_on_threads_equals_one_core(monkeypatch):
  box = (201.6, 90.2, 530.5, 370.8)
  pairs = lambda: [(Pyramid(PHOTOS['coffee']), Pyramid(_crop('coffee', box, 0.6))),
                   (Pyramid(_crop('astronaut', (100.3, 140.7, 380.2, 350.9), 0.7)),
                    Pyramid(PHOTOS['astronaut'])),
                   (Pyramid(PHOTOS['chelsea']), Pyramid(_crop('coffee', box, 0.5)))]
  found = {}
  for workers in (1, 3):
    monkeypatch.setattr(threads, 'workers', lambda: workers)
    found[workers] = verify.verify_batch(pairs(), [{'a': [box]}, {}, {}])
  for one, many in zip(found[1], found[3]):  # the same numbers (NaN where left out)
    np.testing.assert_equal(dataclasses.asdict(one), dataclasses.asdict(many))
  assert [ev.original for ev in found[3][:2]] == ['a', 'b']


def test_a_window_cut_partly_beyond_the_original_aligns_partly_outside_it():
  # The original is the photo without its left 150 px; the crop runs 100 px (a third of
  # its width) beyond that edge, into content the original does not have.
  photo = PHOTOS['astronaut']
  original = Pyramid(_jpeg(Image.fromarray(photo[:, 150:]), 85))
  window = (50.0, 120.0, 350.0, 360.0)   # photo pixels
  ev, = verify.verify_batch([(original, Pyramid(_crop('astronaut', window, 0.8)))])
  assert ev.original == 'a'
  x0, y0, x1, y1 = ev.alignment.box
  np.testing.assert_allclose((x0, y0, x1, y1), (-100.0, 120.0, 200.0, 360.0), atol=2.0)
  assert ev.alignment.inside == pytest.approx(2 / 3, abs=0.02)
  assert ev.alignment.score > 0.9   # on the part inside the frame


def test_a_mirrored_crop_and_a_second_shot_score_below_the_crop():
  box = (100.3, 140.7, 380.2, 350.9)
  photo = Image.fromarray(PHOTOS['astronaut'])
  original = Pyramid(_jpeg(photo, 85))
  crop = _crop('astronaut', box, 0.7)
  mirrored = np.ascontiguousarray(crop[:, ::-1])
  rng = np.random.default_rng(3)
  shot = np.asarray(yardstick._second_shot(rng, photo, np.array(box), 0.7))
  found, flipped, second = verify.verify_batch(
      [(original, Pyramid(crop)), (original, Pyramid(mirrored)), (original, Pyramid(shot))])
  assert found.alignment.score > 0.95
  for ev in (flipped, second):
    assert ev.alignment.score < found.alignment.score - 0.05
    assert min(ev.alignment.blocks) < min(found.alignment.blocks) - 0.2


def test_the_aspect_evidence_tells_a_crop_from_the_same_window_squeezed():
  # A crop keeps its window's shape (one scale for both sides); the same window resized to
  # another shape still aligns (scale per axis) but its box's aspect strays from the crop's.
  box = (90.6, 120.2, 400.9, 330.4)
  photo = Image.fromarray(PHOTOS['astronaut'])
  original = Pyramid(_jpeg(photo, 85))
  crop = _crop('astronaut', box, 0.6)
  h, w = crop.shape[:2]
  squeezed = _jpeg(photo.resize((round(w * 0.8), h), Image.Resampling.LANCZOS, box=box), 60)
  true, wide = verify.verify_batch([(original, Pyramid(crop)), (original, Pyramid(squeezed))])
  feature = verify.FEATURES.index('aspect')
  np.testing.assert_allclose(true.alignment.box, box, atol=1.0)
  np.testing.assert_allclose(wide.alignment.box, box, atol=2.0)  # found all the same
  assert abs(true.aspect) < 0.01
  np.testing.assert_allclose(wide.aspect, -np.log(0.8), atol=0.02)
  assert true.features[feature] < np.log(0.015) < np.log(0.2) < wide.features[feature]


def test_a_mirrored_crop_never_fits_by_turning_its_box_inside_out():
  # A box with x1 < x0 reads the template mirrored, so a mirrored crop fits its original that
  # way; unguarded, the finest stage took this one there: (244, -2, 135, 410), ZNCC 0.52.
  wheel = dict(procedural.skimage_photos(['colorwheel']))['colorwheel']
  x0, y0, x1, y1 = 40, 60, 220, 300
  crop = np.ascontiguousarray(wheel[y0:y1, x0:x1][:, ::-1])
  for stages in (alignment.STAGES[:1], alignment.STAGES[-1:], alignment.STAGES):
    a = align_batch([wheel], [crop], [(x0, y0, x1, y1)], stages=stages, seed=False)[0]
    assert a.box[2] > a.box[0] and a.box[3] > a.box[1], (stages, a.box)


def test_a_mirrored_crop_of_a_nearly_symmetric_scene_fits_better_flipped_back():
  # A scene symmetric left-right but for faint detail (a second photo at 15 %): the mirrored
  # copy of a window fits the window's mirror image almost as well as a crop would; flipped
  # back it fits its own window better still, which a true crop never does.
  base = PHOTOS['coffee'][:, :300].astype(np.float64)
  scene = np.concatenate([base, base[:, ::-1]], 1)
  detail = np.asarray(Image.fromarray(PHOTOS['astronaut']).resize(scene.shape[1::-1]), np.float64)
  photo = Image.fromarray(np.clip(0.85 * scene + 0.15 * detail, 0, 255).astype(np.uint8))
  box = (60.4, 90.2, 260.7, 330.1)
  crop = _jpeg(photo.resize((150, 180), Image.Resampling.LANCZOS, box=box), 80)
  original = Pyramid(_jpeg(photo, 85))
  true, mirrored = verify.verify_batch([(original, Pyramid(crop)),
                                        (original, Pyramid(np.ascontiguousarray(crop[:, ::-1])))])
  gain = verify.FEATURES.index('mirror_detail')
  assert mirrored.alignment.score > 0.9            # the mirror alone looks like a crop
  assert mirrored.features[gain] > 0.03 > -0.03 > true.features[gain]
  assert mirrored.mirror.detail > 0.98                # flipped back: the window itself
  np.testing.assert_allclose(mirrored.mirror.box, box, atol=1.0)
  without = verify.verify_batch([(original, Pyramid(crop))], mirror=False)[0]
  assert without.mirror is None and without.features[gain] == 0.0


def test_bad_input_to_align_is_named():
  photo = PHOTOS['astronaut']
  crop = photo[100:200, 100:220]
  with pytest.raises(AlignError, match='original 0: empty image'):
    align(np.zeros((0, 10, 3), np.uint8), crop, (0, 0, 5, 5))
  with pytest.raises(AlignError, match='crop 0: an image must be'):
    align(photo, np.zeros((4, 4, 4, 4)), (0, 0, 5, 5))
  with pytest.raises(AlignError, match='mismatched batch: 2 originals, 1 crops'):
    align_batch([photo, photo], [crop], [(0, 0, 5, 5)])
  with pytest.raises(AlignError, match='lies outside the original'):
    align(photo, crop, (600, 10, 700, 90))
  with pytest.raises(AlignError, match='empty or inverted'):
    align(photo, crop, (100, 10, 90, 90))
  with pytest.raises(AlignError, match='4 finite numbers'):
    align(photo, crop, (0, 0, np.nan, 9))


# ------------------------------------------------------------------ the verdict


def _separable(n=400, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.uniform(size=n) < 0.5
  x = rng.normal(size=(n, len(verdict.FEATURES)))
  x[:, 1] += np.where(y, 0.4, -0.4)  # the alignment score tells them apart
  return x, y


def test_the_verdict_learns_which_evidence_matters_and_round_trips(tmp_path):
  x, y = _separable()
  v = verdict.fit(x, y, fitted_on='test')
  p = v.probability(x)
  assert np.mean((p > 0.5) == y) > 0.6
  assert np.argmax(np.abs(v.weights)) == 1
  v.save(tmp_path / verdict.FILE)
  back = verdict.load(tmp_path / verdict.FILE)
  np.testing.assert_allclose(back.probability(x), p)
  assert [f.name for f in tmp_path.iterdir()] == [verdict.FILE]  # no temporary file left


def test_the_network_s_logit_never_lowers_the_verdict_s_odds():
  # The network's logit a little higher for negatives by chance, the alignment score
  # separating the pairs: fitted freely its weight goes negative; the verdict holds it at 0
  # and fits the rest without it. A logit that does say crop keeps its positive weight.
  x, y = _separable()
  rng = np.random.default_rng(1)
  x[:, 0] = np.where(y, 0.0, 0.3) + rng.normal(scale=0.3, size=len(y))
  free = verdict.fit(x, y, nonnegative=())
  held = verdict.fit(x, y)
  assert free.weights[0] < -0.1
  assert held.weights[0] == 0.0
  rest = x.copy()
  rest[:, 0] = 0.0
  np.testing.assert_allclose(held.probability(x),
                             verdict.fit(rest, y, nonnegative=()).probability(rest), atol=1e-6)
  x[:, 0] = np.where(y, 0.3, 0.0) + rng.normal(scale=0.3, size=len(y))
  assert verdict.fit(x, y).weights[0] > 0.1
  with pytest.raises(ValueError, match='unknown features'):
    verdict.fit(x, y, nonnegative=('logit',))


def test_the_network_s_weight_pays_a_stronger_prior():
  # Its logit is judged on validation photos unlike real ones: under its multiple of the prior
  # its weight is well below what the same prior as the rest would give it, and still positive
  # where the logit separates the pairs; the other weights hardly move.
  x, y = _separable()
  rng = np.random.default_rng(2)
  x[:, 0] = np.where(y, 0.4, -0.4) + rng.normal(size=len(y))  # about as informative as x[:, 1]
  plain = verdict.fit(x, y, prior={})
  held = verdict.fit(x, y)
  assert verdict.PRIOR['network_logit'] > 1
  assert plain.weights[0] > 0.3
  assert 0 < held.weights[0] < 0.6 * plain.weights[0]
  assert held.weights[1] >= 0.9 * plain.weights[1]
  with pytest.raises(ValueError, match='unknown features'):
    verdict.fit(x, y, prior={'logit': 2.0})
  with pytest.raises(ValueError, match='finite and >= 0'):
    verdict.fit(x, y, prior={'network_logit': -1.0})


def test_the_verdict_reads_each_feature_within_the_range_it_was_fitted_on(tmp_path):
  # A feature beyond the range of the pairs fitted on (the network's logit on real photos, where
  # it was fitted on procedural ones) reads as the range's end, not the line carried further.
  x, y = _separable()
  v = verdict.fit(x, y)
  np.testing.assert_array_equal(v.low, x.min(0))
  np.testing.assert_array_equal(v.high, x.max(0))
  row = np.zeros((3, x.shape[1]))
  row[:, 1] = [x[:, 1].max(), x[:, 1].max() + 5, x[:, 1].min() - 5]
  p = v.probability(row)
  edge = row.copy()
  edge[2, 1] = x[:, 1].min()
  np.testing.assert_allclose(p, v.probability(edge)[[0, 0, 2]], rtol=1e-12)
  unbounded = dataclasses.replace(v, low=None, high=None)
  assert unbounded.probability(row)[1] > p[1] and unbounded.probability(row)[2] < p[2]
  v.save(tmp_path / verdict.FILE)
  back = verdict.load(tmp_path / verdict.FILE)
  assert back == v
  # A file of the version before has no range: it loads and reads features as they are.
  d = json.loads((tmp_path / verdict.FILE).read_text())
  d.update(version=4)
  del d['low'], d['high']
  (tmp_path / 'v4.json').write_text(json.dumps(d))
  np.testing.assert_array_equal(verdict.load(tmp_path / 'v4.json').probability(row),
                                unbounded.probability(row))


def test_a_corrupt_or_foreign_verdict_is_refused(tmp_path):
  x, y = _separable()
  verdict.fit(x, y).save(tmp_path / verdict.FILE)
  d = json.loads((tmp_path / verdict.FILE).read_text())
  with pytest.raises(verdict.VerdictError, match='no verdict fitted'):
    verdict.load(tmp_path / 'missing.json')
  (tmp_path / 'cut.json').write_text((tmp_path / verdict.FILE).read_text()[:50])
  with pytest.raises(verdict.VerdictError, match='cut.json: unreadable'):
    verdict.load(tmp_path / 'cut.json')
  for change, message in ((lambda d: d.update(features=['a', 'b']), 'fitted for features'),
                          (lambda d: d.update(weights=d['weights'][:3]), 'do not match'),
                          (lambda d: d.update(bias=float('nan')), 'non-finite'),
                          (lambda d: d.update(low=d['low'][:3]), 'do not match'),
                          (lambda d: d.update(low=d['high'], high=d['low']), 'least value above'),
                          (lambda d: d.update(version=3), 'format version 3'),
                          (lambda d: d.update(low=None), 'not both given'),
                          (lambda d: d.update(high=None), 'not both given'),
                          (lambda d: d.pop('mean'), 'not a usable verdict')):
    bad = dict(d)
    change(bad)
    (tmp_path / 'bad.json').write_text(json.dumps(bad))
    with pytest.raises(verdict.VerdictError, match=message):
      verdict.load(tmp_path / 'bad.json')
  with pytest.raises(ValueError, match='both crop pairs and negatives'):
    verdict.fit(x, np.ones(len(x)))


# ------------------------------------------------------------------ the yardstick


def test_the_yardstick_photos_are_in_no_training_source():
  from cropjax.datasets import photos
  demo = photos.Photos.BUILDER_CONFIGS[0]
  assert demo.name == 'demo' and not demo.path  # procedural images and scikit-image's photos
  # The 512 procedural images are made here, on both cores.
  training = threads.map(lambda e: splits.dhash(e.load()), photos.sources(demo))
  assert len(training) == demo.procedural + len(list(procedural.skimage_photos()))
  packages = {p.package for p in yardstick.PHOTOS}
  assert len(yardstick.PHOTOS) >= 30 and len({p.name for p in yardstick.PHOTOS}) == len(yardstick.PHOTOS)
  assert all(p.path.startswith('/usr/share/') for p in yardstick.PHOTOS)
  assert packages == {'mate-backgrounds', 'lomiri-wallpapers-16.04', 'lomiri-wallpapers-20.04',
                      'plasma-workspace-wallpapers'}
  near = [(p.name, splits.hamming(p.dhash, t)) for p in yardstick.PHOTOS for t in training
          if splits.hamming(p.dhash, t) <= demo.max_distance]
  assert not near
  # and no two yardstick photos are near-duplicates of each other
  hashes = [p.dhash for p in yardstick.PHOTOS]
  assert min(splits.hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]) > 6


def test_missing_or_changed_yardstick_photos_are_a_clear_error(tmp_path, monkeypatch):
  real = tmp_path / 'p.jpg'
  Image.fromarray(PHOTOS['coffee']).save(real)
  entry = yardstick.Photo('p', 'some-package', str(real), '0' * 64, 0)
  monkeypatch.setattr(yardstick, 'PHOTOS', (entry,))
  with pytest.raises(yardstick.YardstickError, match='p.jpg: differs from the yardstick manifest'):
    yardstick.photos()
  missing = yardstick.Photo('q', 'some-package', str(tmp_path / 'q.jpg'), '0' * 64, 0)
  monkeypatch.setattr(yardstick, 'PHOTOS', (missing,))
  with pytest.raises(yardstick.YardstickError, match='apt-get install mate-backgrounds'):
    yardstick.photos()


def test_own_photos_are_read_spread_capped_and_listed_when_unreadable(tmp_path):
  lib = tmp_path / 'lib'
  (lib / '2021').mkdir(parents=True)
  (lib / '.hidden').mkdir()
  names = ['astronaut', 'coffee', 'chelsea', 'camera', 'rocket']
  arrays = dict(procedural.skimage_photos(names))
  for k, name in enumerate(names):  # a portrait shot (EXIF orientation 6) among them
    exif = Image.Exif()
    if name == 'rocket':
      exif[0x0112] = 6
    folder = lib / '2021' if k % 2 else lib
    Image.fromarray(arrays[name]).convert('RGB').save(folder / f'{k}-{name}.jpg', quality=90,
                                                      exif=exif)
  Image.fromarray(arrays['coffee']).save(lib / '.hidden' / 'x.jpg')
  (lib / 'broken.jpg').write_bytes(b'not a jpeg')
  (lib / 'notes.txt').write_text('not a photo')
  Image.fromarray(arrays['chelsea']).resize((300, 200)).save(lib / '5-export.png')  # a copy
  photos, skipped = yardstick.own_photos([lib], None, max_side=400)
  order = ['0-astronaut.jpg', '2-chelsea.jpg', '1-coffee.jpg', '3-camera.jpg', '4-rocket.jpg']
  assert [Path(n).name for n, _ in photos] == order  # sorted paths, hidden ones left out
  file = lambda name: str((lib / name).resolve())
  assert skipped == [(file('broken.jpg'), 'UnidentifiedImageError: cannot identify image file'),
                     (file('5-export.png'), f'a copy of {file("2-chelsea.jpg")} (its dHash '
                                            'within 6 bits), not another picture')]
  sizes = {Path(n).name: im.size for n, im in photos}
  assert all(max(size) == 400 for size in sizes.values())
  assert all(im.mode == 'RGB' for _, im in photos)
  h, w = arrays['rocket'].shape[:2]  # upright: turned a quarter, then capped
  assert sizes['4-rocket.jpg'] == (round(h * 400 / w), 400)
  assert sizes['2-chelsea.jpg'] == (400, round(300 * 400 / 451))
  # a count: spread evenly over the seven sorted files (the unreadable one last)
  three, skipped = yardstick.own_photos([lib], 3, max_side=400)
  assert [Path(n).name for n, _ in three] == ['0-astronaut.jpg', '3-camera.jpg']
  assert skipped == [(file('broken.jpg'), 'UnidentifiedImageError: cannot identify image file')]
  # the pairs are made from them as from the yardstick's photos
  pairs = yardstick.user_pairs(three, seed=0)
  assert len(pairs) == 2 * 9 and pairs[0].name.startswith(three[0][0] + '/')
  with pytest.raises(yardstick.YardstickError, match='nowhere: no such file or folder'):
    yardstick.own_photos([tmp_path / 'nowhere'])
  with pytest.raises(yardstick.YardstickError, match=r'broken.jpg: 0 distinct photos could be '
                     r'read \(1 skipped\); the pairs need at least two'):
    yardstick.own_photos([lib / 'broken.jpg'])
  with pytest.raises(yardstick.YardstickError, match=r'1 distinct photo could be read \(1 '
                     r'skipped\)'):  # a photo and its copy: one picture
    yardstick.own_photos([lib / '2-chelsea.jpg', lib / '5-export.png'])


def test_user_pairs_have_the_geometry_they_claim():
  photos = [(n, Image.fromarray(a)) for n, a in PHOTOS.items()]
  pairs = yardstick.user_pairs(photos, seed=1)
  assert {p.kind for p in pairs} == set(yardstick.KINDS)
  assert len(pairs) == 9 * len(photos) and sum(p.is_pair for p in pairs) == 5 * len(photos)
  assert all((p.edit in edits.KINDS) == (p.kind == 'edited') for p in pairs)
  assert yardstick.user_pairs(photos, seed=1)[5].box == pairs[5].box  # deterministic
  # each side kept as its JPEG file, decoded afresh (to the same pixels) when read
  p = pairs[0]
  assert p.a_jpeg[:2] == p.b_jpeg[:2] == b'\xff\xd8' and p.a is not p.a
  assert p.a.mode == 'RGB' and np.array_equal(np.asarray(p.a), np.asarray(p.a))
  decoded = yardstick.Decoded(pairs[:3])
  assert len(decoded) == 3
  for _ in range(2):  # read as often as asked
    assert [(np.asarray(a).tobytes(), np.asarray(b).tobytes()) for a, b in decoded] == [
        (np.asarray(q.a).tobytes(), np.asarray(q.b).tobytes()) for q in pairs[:3]]
  for p in pairs:
    original, crop = (p.a, p.b) if p.original == 'a' else (p.b, p.a)
    assert original.size == p.original_size
    x0, y0, x1, y1 = p.box
    w, h = original.size
    if p.kind in ('positive', 'mirrored'):
      assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
      assert abs((x1 - x0) / (y1 - y0) - crop.width / crop.height) < 0.05 * crop.width / crop.height
      area = (x1 - x0) * (y1 - y0) / (w * h)
      assert 0.14 < area < 0.86
      # the crop is the original's window (through two JPEG encodings)
      window = np.asarray(original.resize(crop.size, Image.Resampling.LANCZOS, box=p.box), float)
      mine = np.asarray(crop, float)
      if p.kind == 'mirrored':
        mine = mine[:, ::-1]
      assert np.corrcoef(window.ravel(), mine.ravel())[0, 1] > 0.95
    if p.kind == 'outside':  # runs over the original's edge
      assert x0 < 0 or y0 < 0 or x1 > w or y1 > h
    if p.kind == 'copy':  # the whole photo brought down: the original is the larger image
      assert p.box == (0.0, 0.0, w, h) and crop.width < w and crop.height < h
      assert abs(crop.width / crop.height - w / h) < 0.02 * w / h
      window = np.asarray(original.resize(crop.size, Image.Resampling.LANCZOS), float)
      assert np.corrcoef(window.ravel(), np.asarray(crop, float).ravel())[0, 1] > 0.95
    if p.kind == 'straightened':  # turned, inside the frame, the crop's shape
      assert yardstick.STRAIGHTENED[0] <= abs(p.angle) <= yardstick.STRAIGHTENED[1]
      corners = np.array(metadata.corners(metadata.Crop(x0 / w, y0 / h, x1 / w, y1 / h, p.angle),
                                          w, h))
      assert corners.min() > -1e-6 and (corners <= [w + 1e-6, h + 1e-6]).all()
      assert abs((x1 - x0) / (y1 - y0) - crop.width / crop.height) < 0.05 * crop.width / crop.height
      # the original read by alignment's own map at the turn (counter-clockwise there) is the crop
      affine = alignment._box_affine(np.array(p.box), -p.angle, crop.size)
      step = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
      window, _ = Pyramid(np.asarray(original)).read(affine, crop.size, step)
      assert np.corrcoef(window.ravel(), np.asarray(crop.convert('L'), float).ravel())[0, 1] > 0.95
