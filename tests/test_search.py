"""Library search (cropjax.search): the index on disk, incremental and resumable, refused when
corrupt or another model's; a planted crop found among distractors; the console program."""

import hashlib
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cropjax import procedural
from cropjax import search
from cropjax import threads
from cropjax.cli import find as find_cli
from cropjax.search import descriptors
from cropjax.search import index as index_lib
from cropjax.search import rerank
from skimage import data as skimage_data

CROP_OF = 3                      # the library photo the planted crop is cut from
WINDOW = (52.0, 40.0, 196.0, 136.0)  # its window, upright pixels of that photo


@pytest.fixture(scope='module')
def model(match_model):  # conftest.py: the tiny matching model, trained once a session
  return match_model


def _library(folder, count=6):
  folder.mkdir(parents=True, exist_ok=True)
  for i, a in enumerate(procedural.images(11, count, (260, 180))):
    Image.fromarray(a).save(folder / f'photo{i:02d}.jpg', quality=92)
  return folder


def _jpeg(image, quality):
  buf = io.BytesIO()
  image.save(buf, 'JPEG', quality=quality)
  buf.seek(0)
  return buf


def _snapshot(folder):
  return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
          for p in sorted(folder.rglob('*')) if p.is_file()}


def _counting(monkeypatch):
  encoded = []
  real = descriptors.describe

  def describe(images, model, settings, sizes=None):
    encoded.append(len(images))
    return real(images, model, settings, sizes)
  monkeypatch.setattr(descriptors, 'describe', describe)
  return encoded


def test_index_round_trip_and_the_library_untouched(model, tmp_path):
  lib = _library(tmp_path / 'lib')
  before = _snapshot(lib)
  built = search.update_index([lib], tmp_path / 'idx', model=model)
  assert _snapshot(lib) == before  # only read
  again = search.open_index(tmp_path / 'idx')
  assert [p.path for p in again.photos] == [str(p.resolve()) for p in sorted(lib.iterdir())]
  assert 'hubness' in again.__dict__  # read with the index, not made again
  for name in index_lib.ARRAYS + index_lib.DERIVED:
    np.testing.assert_array_equal(getattr(again, name), getattr(built, name))
  n = len(descriptors.windows())
  assert again.descriptors.shape == (6 * n, built.settings['dim'])
  assert again.photos[2].rows == (2 * n, 3 * n) and (again.regions[2 * n:3 * n, 0] == 2).all()
  np.testing.assert_allclose(np.linalg.norm(again.descriptors.astype(np.float32), axis=1), 1.0,
                             atol=2e-3)
  assert (again.photos[0].width, again.photos[0].height) == (260, 180)
  # Each photo's grey thumbnail, its long side THUMB_SIDE, at the top left.
  side = descriptors.THUMB_SIDE
  assert again.thumbs.shape == (6, side, side) and again.thumbs.dtype == np.uint8
  image, _ = descriptors.read_photo(lib / 'photo02.jpg', built.settings['library_side'])
  np.testing.assert_array_equal(again.thumbs[2], descriptors.thumbnail(image, side))
  w, h = descriptors.thumb_size(260, 180, side)
  assert (w, h) == (side, 66) and again.thumbs[2, :h, :w].std() > 10
  assert not again.thumbs[:, h:].any()


def test_a_thumbnail_is_the_part_re_ranking_reads_when_the_photo_is_decoded_smaller(model,
                                                                                   tmp_path):
  side, t = descriptors.settings(model)['library_side'], descriptors.THUMB_SIDE

  def decoded(w, h):  # the size draft mode decodes a w x h JPEG at for the index
    buf = io.BytesIO()
    Image.new('RGB', (w, h)).save(buf, 'JPEG')
    im = Image.open(buf)
    im.draft('RGB', (side, side))
    return im.size
  # A photo whose reduced decoding rounds its thumbnail a pixel away from its full size's.
  w, h = next((w, h) for w in range(900, 1100) for h in (701, 733, 751, 767)
              if descriptors.thumb_size(*decoded(w, h), t) != descriptors.thumb_size(w, h, t))
  lib = tmp_path / 'lib'
  lib.mkdir()
  ramp = np.linspace(60, 250, w * h).reshape(h, w)
  Image.fromarray(np.stack([ramp] * 3, -1).astype(np.uint8)).save(lib / 'photo.jpg', quality=95)
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  tw, th = rerank.thumb_extent(idx, 0)
  assert (tw, th) == descriptors.thumb_size(w, h, t)
  assert idx.thumbs[0, :th, :tw].min() > 0                        # all photo, no empty row
  assert not idx.thumbs[0, th:].any() and not idx.thumbs[0, :, tw:].any()   # nothing beyond


def test_a_second_run_encodes_only_new_and_changed_photos(model, tmp_path, monkeypatch):
  lib = _library(tmp_path / 'lib')
  search.update_index([lib], tmp_path / 'idx', model=model)
  encoded = _counting(monkeypatch)
  search.update_index([lib], tmp_path / 'idx', model=model)
  assert sum(encoded) == 0
  os.utime(lib / 'photo01.jpg', ns=(1, 1))                        # touched: same bytes
  Image.fromarray(next(procedural.images(12, 1, (150, 200)))).save(lib / 'new.jpg')
  Image.fromarray(next(procedural.images(13, 1, (150, 200)))).save(lib / 'photo02.jpg')  # changed
  (lib / 'photo04.jpg').unlink()
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  assert sum(encoded) == 2   # new.jpg and the changed photo02.jpg
  names = sorted(os.path.basename(p.path) for p in idx.photos)
  assert names == ['new.jpg', 'photo00.jpg', 'photo01.jpg', 'photo02.jpg', 'photo03.jpg',
                   'photo05.jpg']
  fresh = search.update_index([lib], tmp_path / 'fresh', model=model)
  by_path = {p.path: p for p in fresh.photos}
  for p in idx.photos:  # the same descriptors as an index built from scratch
    q = by_path[p.path]
    np.testing.assert_array_equal(idx.descriptors[slice(*p.rows)], fresh.descriptors[slice(*q.rows)])
    np.testing.assert_array_equal(idx.thumbs[idx.photos.index(p)],
                                  fresh.thumbs[fresh.photos.index(q)])


def test_an_interrupted_build_resumes(model, tmp_path, monkeypatch):
  lib = _library(tmp_path / 'lib')
  real = descriptors.describe
  calls = []

  def dies_on_the_third_batch(images, model, settings, sizes=None):
    calls.append(len(images))
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real(images, model, settings, sizes)
  monkeypatch.setattr(descriptors, 'describe', dies_on_the_third_batch)
  with pytest.raises(KeyboardInterrupt):
    search.update_index([lib], tmp_path / 'idx', model=model, batch_size=2, save_every=2)
  kept = search.open_index(tmp_path / 'idx')
  assert len(kept) == 4  # saved after the second batch; the killed batch left nothing half-done
  # A build's intermediate saves leave out the hubness (it depends on every photo): an index
  # opened from one makes it when first used.
  assert not list((tmp_path / 'idx').glob('hubness-*')) and 'hubness' not in kept.__dict__
  assert kept.hubness.shape == (len(kept.descriptors),)
  encoded = _counting(monkeypatch)
  done = search.update_index([lib], tmp_path / 'idx', model=model, batch_size=2)
  assert sum(encoded) == 2 and len(done) == 6
  assert sorted(f.name for f in (tmp_path / 'idx').iterdir()) == sorted(
      ['manifest.json'] + [f'{a}-{done.generation}.npy'
                           for a in index_lib.ARRAYS + index_lib.DERIVED])


def test_a_build_read_ahead_in_small_chunks_equals_one_in_one_chunk(model, tmp_path):
  # Files are decoded on threads, the next chunk's while this one's are encoded.
  lib = _library(tmp_path / 'lib', count=5)
  (lib / 'photo02b.jpg').write_text('not a photo')  # a failure inside a chunk
  one = search.update_index([lib], tmp_path / 'one', model=model, batch_size=16)
  small = search.update_index([lib], tmp_path / 'small', model=model, batch_size=2)
  assert [p.path for p in small.photos] == [p.path for p in one.photos]
  assert [os.path.basename(p) for p, _ in small.skipped] == ['photo02b.jpg']
  assert [(p.width, p.height, p.rows) for p in small.photos] == [
      (p.width, p.height, p.rows) for p in one.photos]
  for name in ('regions', 'thumbs'):
    np.testing.assert_array_equal(getattr(small, name), getattr(one, name))
  for name in ('descriptors', 'queries'):  # batches of 2 and 8: the same up to float16
    np.testing.assert_allclose(getattr(small, name).astype(np.float32),
                               getattr(one, name).astype(np.float32), atol=2e-3)


def test_a_corrupt_or_foreign_index_is_refused(model, tmp_path):
  lib = _library(tmp_path / 'lib', count=2)
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  array = tmp_path / 'idx' / f'descriptors-{idx.generation}.npy'
  data = bytearray(array.read_bytes())
  data[-3] ^= 0xFF
  array.write_bytes(bytes(data))
  with pytest.raises(search.SearchIndexError, match='descriptors-1.npy does not match its checksum'):
    search.update_index([lib], tmp_path / 'idx', model=model)
  (tmp_path / 'idx' / 'manifest.json').write_text('{"format": 1, "generat')
  with pytest.raises(search.SearchIndexError, match='a corrupt cropjax index'):
    search.open_index(tmp_path / 'idx')
  idx2 = search.update_index([lib], tmp_path / 'idx2', model=model)
  hub = tmp_path / 'idx2' / f'hubness-{idx2.generation}.npy'
  good = hub.read_bytes()
  hub.write_bytes(good[:-4])
  with pytest.raises(search.SearchIndexError, match='hubness-1.npy does not match its checksum'):
    search.open_index(tmp_path / 'idx2')
  hub.write_bytes(good)
  # One made with other settings (an older cropjax) is made again, not used nor refused.
  manifest = json.loads((tmp_path / 'idx2' / 'manifest.json').read_text())
  manifest['derived']['hubness']['neighbours'] = 5
  (tmp_path / 'idx2' / 'manifest.json').write_text(json.dumps(manifest))
  other = search.open_index(tmp_path / 'idx2')
  assert 'hubness' not in other.__dict__
  np.testing.assert_allclose(other.hubness, idx2.hubness, atol=1e-6)
  with pytest.raises(search.SearchIndexError, match='built by another model'):
    search.open_index(tmp_path / 'idx2', fingerprint='0' * 64)
  with pytest.raises(search.SearchIndexError, match='no cropjax index here'):
    search.open_index(tmp_path / 'nothing')
  with pytest.raises(search.SearchIndexError, match='lies inside the library'):
    search.update_index([lib], lib / 'idx', model=model)
  rebuilt = search.update_index([lib], tmp_path / 'idx', model=model, rebuild=True)
  assert len(search.open_index(tmp_path / 'idx')) == len(rebuilt) == 2
  # An index of an older cropjax (format 1: no thumbnails) is refused, saying what to do.
  manifest = json.loads((tmp_path / 'idx' / 'manifest.json').read_text())
  (tmp_path / 'idx' / 'manifest.json').write_text(json.dumps({**manifest, 'format': 1}))
  with pytest.raises(search.SearchIndexError, match=r'an older cropjax \(format 1.*--rebuild'):
    search.update_index([lib], tmp_path / 'idx', model=model)


def test_unreadable_files_are_skipped_and_listed(model, tmp_path):
  lib = _library(tmp_path / 'lib', count=3)
  good = (lib / 'photo00.jpg').read_bytes()
  (lib / 'truncated.jpg').write_bytes(good[:len(good) // 3])
  (lib / 'notes.jpg').write_text('not a photo')
  Image.open(lib / 'photo00.jpg').resize((1, 1)).save(lib / 'dot.png')  # nothing to compare
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  assert len(idx) == 3
  assert sorted(os.path.basename(p) for p, _ in idx.skipped) == [
      'dot.png', 'notes.jpg', 'truncated.jpg']
  why = dict(idx.skipped)
  assert why[str((lib / 'dot.png').resolve())].startswith('InputError: too small to compare (1x1')
  # each reason says what is wrong without the path the list already gives
  assert why[str((lib / 'notes.jpg').resolve())] == (
      'UnidentifiedImageError: cannot identify image file')
  assert all(os.path.basename(p) not in w for p, w in idx.skipped)
  assert sorted(os.path.basename(p) for p, _ in search.open_index(tmp_path / 'idx').skipped) == [
      'dot.png', 'notes.jpg', 'truncated.jpg']
  # The library's crop relations are still looked for (the tiny file used to end the run),
  # and a query too small to compare is skipped and listed.
  matches, skipped = search.find(idx, model=model, top=1)
  assert not skipped
  matches, skipped = search.find(idx, [lib / 'dot.png'], model=model)
  assert not matches and [os.path.basename(p) for p, _ in skipped] == ['dot.png']


def _planted(tmp_path):
  lib = _library(tmp_path / 'lib')
  photo = Image.open(lib / f'photo{CROP_OF:02d}.jpg')
  crop = photo.resize((115, 77), Image.Resampling.LANCZOS, box=WINDOW)
  queries = tmp_path / 'queries'
  queries.mkdir()
  crop.save(queries / 'crop.jpg', quality=70)
  Image.fromarray(next(procedural.images(99, 1, (120, 160)))).save(queries / 'stranger.jpg')
  return lib, queries


def test_a_planted_crop_is_found_among_distractors_with_its_box(model, tmp_path):
  lib, queries = _planted(tmp_path)
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  matches, skipped = search.find(idx, [queries / 'crop.jpg', queries / 'stranger.jpg'],
                                 model=model, top=len(idx))
  assert not skipped
  assert [os.path.basename(m.query) for m in matches] == ['crop.jpg']
  m = matches[0]
  assert os.path.basename(m.original) == f'photo{CROP_OF:02d}.jpg'
  np.testing.assert_allclose(m.box, WINDOW, atol=1.5)
  assert m.original_size == (260, 180)


def test_a_query_verifies_its_best_candidate_first_and_every_copy_of_its_original(
    model, tmp_path, monkeypatch):
  """A query whose best-ranked candidate is its original spares the others, but for another copy
  of that original (which matches it about as well); a query without one verifies them all;
  `verify_all` verifies every candidate and reports the same."""
  from cropjax import inference
  lib, queries = _planted(tmp_path)
  photo = Image.open(lib / f'photo{CROP_OF:02d}.jpg')
  photo.resize((182, 126), Image.Resampling.LANCZOS).save(lib / 'copy.jpg', quality=85)
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  asked = []
  real = inference.predict_pairs

  def predict_pairs(pairs, **kwargs):
    asked.extend((os.path.basename(q), os.path.basename(o)) for q, o in pairs)
    return real(pairs, **kwargs)
  monkeypatch.setattr(inference, 'predict_pairs', predict_pairs)
  asks = [queries / 'crop.jpg', queries / 'stranger.jpg']
  progress = []
  found, _ = search.find(idx, asks, model=model, top=len(idx),
                         progress=lambda done, total: progress.append((done, total)))
  verified = {q: [o for qq, o in asked if qq == q] for q in ('crop.jpg', 'stranger.jpg')}
  assert sorted((os.path.basename(m.query), os.path.basename(m.original)) for m in found) == [
      ('crop.jpg', 'copy.jpg'), ('crop.jpg', f'photo{CROP_OF:02d}.jpg')]
  assert sorted(verified['crop.jpg']) == ['copy.jpg', f'photo{CROP_OF:02d}.jpg']
  assert len(verified['stranger.jpg']) == len(idx)
  assert progress[-1] == (len(asked), len(asked))
  asked.clear()
  every, _ = search.find(idx, asks, model=model, top=len(idx), verify_all=True)
  assert len(asked) == 2 * len(idx)
  assert len(every) == len(found)
  for a, b in zip(sorted(every, key=lambda m: m.original), sorted(found, key=lambda m: m.original)):
    assert (a.query, a.original, a.original_size) == (b.query, b.original, b.original_size)
    # the same pairs, verified in other batches: equal to float32 rounding
    np.testing.assert_allclose(a.box, b.box, atol=1e-4)
    np.testing.assert_allclose([a.score, a.angle], [b.score, b.angle], atol=1e-5)


def test_a_copy_of_a_query_s_whole_picture_is_reported_and_its_original_still_found(
    model, tmp_path, monkeypatch):
  """Verification says a library photo is a copy of a query's whole picture (`whole_frame`):
  reported whichever has more pixels (the query's holding it reads as the query's frame, and
  is given as the photo's), and not taken for the query's original, so a candidate that
  matches much worse by template is still verified (it is where the crop was cut from)."""
  import importlib

  from cropjax import inference
  find_module = importlib.import_module('cropjax.search.find')  # (`search.find`: the function)
  lib, queries = _planted(tmp_path)
  Image.open(queries / 'crop.jpg').resize((92, 62)).save(lib / 'export.jpg')
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  number = {os.path.basename(p.path): k for k, p in enumerate(idx.photos)}
  order = ['export.jpg', f'photo{CROP_OF:02d}.jpg', 'photo00.jpg']
  monkeypatch.setattr(find_module, 'shortlist', lambda *a, **k: [
      [(number[n], 0.5, t) for n, t in zip(order, (0.99, 0.6, 0.5))]])

  def answer(is_crop, original, box, size):
    f = (box[0] / size[0], box[1] / size[1], box[2] / size[0], box[3] / size[1])
    return inference.PairPrediction(is_crop, 0.9 if is_crop else 0.1, original, 0.5, box, f,
                                    box[:2], f[:2], size, alignment_score=0.99)
  answers = {  # the export (92 x 62) is the query (115 x 77) at its whole frame
      'export.jpg': answer(True, 'b', (0.0, 0.0, 92.0, 62.0), (92, 62)),
      f'photo{CROP_OF:02d}.jpg': answer(True, 'b', WINDOW, (260, 180)),
      'photo00.jpg': answer(False, 'a', (0.0, 0.0, 9.0, 9.0), (115, 77))}
  asked = []

  def predict_pairs(pairs, **kwargs):
    asked.extend(os.path.basename(o) for _, o in pairs)
    return [answers[os.path.basename(o)] for _, o in pairs]
  monkeypatch.setattr(inference, 'predict_pairs', predict_pairs)
  found, _ = search.find(idx, [queries / 'crop.jpg'], model=model, top=3)
  assert asked == order  # the export first, then the rest: a copy is not the crop's original
  got = {os.path.basename(m.original): m for m in found}
  assert sorted(got) == ['export.jpg', f'photo{CROP_OF:02d}.jpg']
  assert got['export.jpg'].box == (0.0, 0.0, 92.0, 62.0)
  # The query holds the export (it has more pixels): the same, the box the export's frame.
  answers['export.jpg'] = answer(True, 'a', (0.0, 0.0, 115.0, 77.0), (115, 77))
  asked.clear()
  found, _ = search.find(idx, [queries / 'crop.jpg'], model=model, top=3)
  assert asked == order
  got = {os.path.basename(m.original): m for m in found}
  assert sorted(got) == ['export.jpg', f'photo{CROP_OF:02d}.jpg']
  assert got['export.jpg'].box == (0.0, 0.0, 92.0, 62.0)
  assert got['export.jpg'].box_fraction == (0.0, 0.0, 1.0, 1.0)
  assert got['export.jpg'].original_size == (92, 62)
  assert got[f'photo{CROP_OF:02d}.jpg'].box == WINDOW
  # A query that holds a library photo but not at its whole frame is its original: not reported.
  answers['export.jpg'] = answer(True, 'a', (5.0, 0.0, 115.0, 77.0), (115, 77))
  found, _ = search.find(idx, [queries / 'crop.jpg'], model=model, top=3)
  assert [os.path.basename(m.original) for m in found] == [f'photo{CROP_OF:02d}.jpg']


def test_one_capture_s_files_are_not_compared_in_a_library_searched_against_itself(
    model, tmp_path, monkeypatch):
  """IMG_1.jpg and IMG_1.png (as a raw file and its JPEG) are one capture's: not verified
  against each other when the library is searched against itself; a query still is."""
  from cropjax import inference
  lib = _library(tmp_path / 'lib', count=3)
  Image.open(lib / 'photo01.jpg').save(lib / 'photo01.png')
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  asked = []
  real = inference.predict_pairs

  def predict_pairs(pairs, **kwargs):
    asked.extend(frozenset(map(os.path.basename, p)) for p in pairs)
    return real(pairs, **kwargs)
  monkeypatch.setattr(inference, 'predict_pairs', predict_pairs)
  search.find(idx, model=model, top=len(idx))
  assert frozenset(('photo01.jpg', 'photo01.png')) not in asked
  assert frozenset(('photo00.jpg', 'photo01.png')) in asked and len(asked) == 5  # of 6 pairs
  asked.clear()
  search.find(idx, [lib / 'photo01.png'], model=model, top=len(idx), verify_all=True)
  assert frozenset(('photo01.jpg', 'photo01.png')) in asked


def test_the_shortlist_puts_the_original_first_by_template(model, tmp_path, monkeypatch):
  lib, queries = _planted(tmp_path)
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  image = descriptors.read_photo(queries / 'crop.jpg', max(idx.settings['query_sides']))[0]
  described = descriptors.query_descriptors([image], model, idx.settings)
  grey = rerank.query_grey(image, 2 * idx.settings['thumb_side'])
  everything = search.candidates(idx, described, len(idx))[0]
  shortlist = search.shortlist(idx, described, [grey], top=3, rerank=len(idx))[0]
  assert shortlist[0][0] == CROP_OF and len(shortlist) == 3
  assert sorted(shortlist) == sorted(c for c in everything if c[0] in {k for k, _ in shortlist})
  assert search.shortlist(idx, described, [grey], top=3, rerank=0)[0] == everything[:3]
  # A re-ranking that puts the descriptors' first candidate last (as unturned templates can a
  # straightened crop's original): it keeps the last place verified; with one place, not.
  with monkeypatch.context() as m:
    m.setattr(rerank, 'order', lambda index, grey, photos: [
        (j, 1.0 - j / 100) for j in range(1, len(photos))] + [(0, -1.0)])
    kept = search.shortlist(idx, described, [grey], top=3, rerank=len(idx), with_template=True)[0]
    assert [c[0] for c in kept] == [everything[1][0], everything[2][0], everything[0][0]]
    assert kept[-1][2] == -1.0
    assert [c[0] for c in search.shortlist(idx, described, [grey], top=1,
                                           rerank=len(idx))[0]] == [everything[1][0]]
  # A library searched against itself: its own thumbnails stand in for the queries.
  asked = []
  real = rerank.order
  monkeypatch.setattr(rerank, 'order', lambda index, grey, photos: asked.append(grey) or
                      real(index, grey, photos))
  own = search.shortlist(idx, idx.queries.astype(np.float32), [None] * len(idx), top=2,
                         exclude=list(range(len(idx))))
  assert all(len(c) == 2 and i not in [k for k, _ in c] for i, c in enumerate(own))
  w, h = descriptors.thumb_size(260, 180, idx.settings['thumb_side'])
  assert len(asked) == len(idx)
  for i, grey in enumerate(asked):
    np.testing.assert_array_equal(grey, idx.thumbs[i, :h, :w])


def _photo(name):
  return Image.fromarray(getattr(skimage_data, name)()).convert('RGB')


@pytest.mark.parametrize('area', [0.3, 0.06])
def test_template_matching_finds_a_real_photos_crop(area):
  """A crop of a real photo, resized and re-encoded, scores near 1 on its original's thumbnail
  and clearly lower on other photos and as its mirror image."""
  photo = _photo('astronaut')
  w, h = photo.size
  side = np.sqrt(area * w * h)
  box = (0.3 * w, 0.2 * h, 0.3 * w + side * 1.1, 0.2 * h + side / 1.1)
  crop = photo.resize((round(side * 0.6), round(side * 0.6 / 1.21)), Image.Resampling.LANCZOS,
                      box=box)
  crop = Image.open(_jpeg(crop, 40))
  grey = rerank.query_grey(crop, 2 * descriptors.THUMB_SIDE)
  canvas = lambda im: descriptors.thumbnail(im, descriptors.THUMB_SIDE)[
      :descriptors.thumb_size(*im.size, descriptors.THUMB_SIDE)[1],
      :descriptors.thumb_size(*im.size, descriptors.THUMB_SIDE)[0]].astype(np.float32)
  own = rerank.template_score(grey, canvas(photo))
  others = [rerank.template_score(grey, canvas(_photo(n)))
            for n in ('coffee', 'chelsea', 'rocket', 'immunohistochemistry')]
  mirrored = rerank.template_score(np.ascontiguousarray(grey[:, ::-1]), canvas(photo))
  assert own > 0.85 and own > max(others) + 0.15 and own > mirrored + 0.15


def test_template_matching_of_many_canvases_is_each_on_its_own():
  """Canvases matched together (stacked in one column) score as each alone, and a query that
  would fit only across two of them fits neither."""
  rng = np.random.default_rng(1)
  canvases = cv2.GaussianBlur(rng.uniform(0, 255, (5, 40, 64)).astype(np.float32).reshape(200, 64),
                              (0, 0), 2).reshape(5, 40, 64)
  inside = canvases[3, 5:30, 10:50].copy()
  across = np.concatenate([canvases[1, 28:], canvases[2, :13]])[:, 10:50].copy()  # 25 x 40
  for query in (inside, across):
    together = rerank.template_scores(query, canvases)
    alone = [rerank.template_score(query, c) for c in canvases]
    np.testing.assert_allclose(together, alone, atol=1e-4)
  assert rerank.template_scores(inside, canvases).argmax() == 3
  assert rerank.template_scores(inside, canvases)[3] > 0.95
  assert rerank.template_scores(across, canvases).max() < 0.8   # 0.97 were it counted


@pytest.mark.parametrize('halved', [False, True])
def test_scores_matched_in_parts_on_threads_equal_one_pass(monkeypatch, halved):
  """`rerank.scores` splits the candidates by thumbnail size and into parts, one a core:
  whatever the parts, each photo scores as its thumbnail matched alone."""
  rng = np.random.default_rng(2)
  thumbs = cv2.GaussianBlur(rng.uniform(0, 255, (40 * 96, 96)).astype(np.float32), (0, 0), 2)
  thumbs = np.clip((thumbs - 128) * 4 + 128, 0, 255).astype(np.uint8).reshape(40, 96, 96)
  sizes = [(1024, 768) if k % 3 else (600, 800) for k in range(40)]   # two thumbnail extents
  photos = [index_lib.Photo(f'p{k}', 1, 1, '', w, h, (k, k + 1))
            for k, (w, h) in enumerate(sizes)]
  idx = index_lib.Index(Path('.'), '', {}, photos, np.zeros((40, 4), np.float16),
                        np.zeros((40, 5), np.float32), np.zeros((40, 3, 4), np.float16), thumbs)
  query = cv2.resize(thumbs[7, 10:50, 20:70].astype(np.float32), (75, 60))
  asked = list(rng.permutation(40)[:33])
  alone = []
  for k in asked:
    w, h = rerank.thumb_extent(idx, k)
    canvas = thumbs[k, :h, :w].astype(np.float32)
    alone.append(rerank.template_scores(rerank._halved(query), rerank._halved(canvas)[None],
                                        scales=rerank.COARSE_SCALES)[0] if halved
                 else rerank.template_score(query, canvas))
  for workers in (1, 3):
    monkeypatch.setattr(threads, 'workers', lambda: workers)
    np.testing.assert_allclose(rerank.scores(idx, query, asked, halved), alone, atol=1e-5)
  assert asked[int(np.argmax(alone))] == 7


def test_template_matching_of_a_flat_or_oversized_query_is_no_match():
  canvas = np.random.default_rng(0).uniform(0, 255, (60, 90)).astype(np.float32)
  assert rerank.template_score(np.full((20, 30), 128.0, np.float32), canvas) == -1.0
  assert rerank.template_score(np.zeros((4, 400), np.float32), canvas) == -1.0   # no size fits


def test_crops_inside_the_library_are_found_once_crop_first(model, tmp_path):
  lib, queries = _planted(tmp_path)
  (queries / 'crop.jpg').rename(lib / 'zz-crop.jpg')          # the crop is a library photo too
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  matches, skipped = search.find(idx, model=model, top=1)   # each photo's best candidate
  assert not skipped
  assert [(os.path.basename(m.query), os.path.basename(m.original)) for m in matches] == [
      ('zz-crop.jpg', f'photo{CROP_OF:02d}.jpg')]
  np.testing.assert_allclose(matches[0].box, WINDOW, atol=1.5)


@pytest.mark.parametrize('cells', [1, 2])
def test_region_descriptors_are_the_unit_mean_features_of_their_window(cells):
  rng = np.random.default_rng(0)
  features = rng.standard_normal((2, 8, 8, 5)).astype(np.float32)
  extents = np.array([[1.0, 1.0], [1.0, 0.5]], np.float32)   # the second fills half the height
  boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.75, 1.0]], np.float32)
  got = descriptors._pooled(features, extents, boxes, cells).reshape(2, 2, cells, cells, 5)
  unit = lambda v: v / np.linalg.norm(v)
  for b, rows in ((0, 8), (1, 4)):            # the feature rows each image covers
    for r, (x0, y0, x1, y1) in enumerate(boxes):
      for i in range(cells):
        for j in range(cells):
          ys = slice(round(rows * (y0 + (y1 - y0) * i / cells)),
                     round(rows * (y0 + (y1 - y0) * (i + 1) / cells)))
          xs = slice(round(8 * (x0 + (x1 - x0) * j / cells)),
                     round(8 * (x0 + (x1 - x0) * (j + 1) / cells)))
          expected = unit(features[b, ys, xs].mean((0, 1))) / cells
          np.testing.assert_allclose(got[b, r, i, j], expected, atol=1e-5)


def test_similarity_keeps_each_photos_best_region(model, tmp_path):
  lib = _library(tmp_path / 'lib', count=3)
  idx = search.update_index([lib], tmp_path / 'idx', model=model)
  q = idx.queries.astype(np.float32)
  sims = search.similarities(idx, q, chunk=7)   # chunks that split photos' rows
  mean, w = idx.whitening
  white = lambda x: ((x - mean) @ w) / np.linalg.norm((x - mean) @ w, axis=-1, keepdims=True)
  # The whitened region descriptors are decorrelated, with unit spread on every axis the
  # descriptors use (an axis with no spread at all stays at 0, not blown up).
  cov = np.cov(((idx.descriptors.astype(np.float64) - mean) @ w).T, bias=True)
  np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=0.05)
  # Each principal axis is scaled by 1 / (its spread + 1e-3): well-used axes to unit variance,
  # unused ones left small rather than blown up.
  values = np.linalg.eigvalsh(np.cov(idx.descriptors.astype(np.float64).T, bias=True))
  expected = np.clip(values, 0, None) / (np.sqrt(np.clip(values, 0, None)) + 1e-3) ** 2
  np.testing.assert_allclose(np.sort(np.diag(cov)), np.sort(expected), atol=0.02)
  # Not vacuous: many axes come out at unit spread, as many as the spectrum says (how many
  # depends on the 2-step test model's features: 16 and 17 of 64 seen).
  assert (np.diag(cov) > 0.9).sum() == (expected > 0.9).sum() >= 8
  d = white(idx.descriptors.astype(np.float32))
  # Hubness: each region's mean cosine with its nearest whole photos at the query scales, its
  # own photo left out (here all 6 vectors of the two others: fewer than HUB_NEIGHBOURS).
  ref = white(q.reshape(-1, q.shape[-1]))
  ref_owner = np.repeat(np.arange(3), q.shape[1])
  hub = [np.sort(ref[ref_owner != o] @ r)[::-1][:index_lib.HUB_NEIGHBOURS].mean()
         for r, o in zip(d, idx.regions[:, 0])]
  np.testing.assert_allclose(idx.hubness, hub, atol=1e-5)
  for i in range(3):
    for k, p in enumerate(idx.photos):
      rows = slice(*p.rows)
      expected = (d[rows] @ white(q[i]).T - index_lib.HUB_WEIGHT * idx.hubness[rows, None]).max()
      assert sims[i, k] == pytest.approx(expected, abs=1e-5)
  assert all(np.argmax(sims[i]) == i for i in range(3))  # a photo's best match is itself


def test_the_console_program(model, tmp_path, capsys):
  lib, queries = _planted(tmp_path)
  before = _snapshot(lib)
  code = find_cli.main([str(lib), '--queries', str(queries), '--model', model.source,
                        '--index', str(tmp_path / 'idx'), '--top', '6',
                        '--csv', str(tmp_path / 'out.csv'), '--report', str(tmp_path / 'out.html')])
  out, err = capsys.readouterr()
  assert code == 0
  lines = [json.loads(line) for line in out.splitlines()]
  assert len(lines) == 1 and lines[0]['original'].endswith(f'photo{CROP_OF:02d}.jpg')
  assert abs(lines[0]['x0'] - WINDOW[0]) < 1.5
  assert '6 library photos indexed' in err and '1 crop pairs found' in err
  assert (tmp_path / 'out.csv').read_text().count('\n') == 2
  assert (tmp_path / 'out.html').read_text().count('<img') == 2
  assert _snapshot(lib) == before
  assert find_cli.main([str(lib), '--model', model.source, '--index', str(tmp_path / 'idx'),
                        '--rerank', '-1']) == 2
  assert '--rerank at least 0' in capsys.readouterr().err
  (tmp_path / 'idx' / 'manifest.json').write_text('garbage')
  assert find_cli.main([str(lib), '--model', model.source, '--index', str(tmp_path / 'idx')]) == 2
  assert 'a corrupt cropjax index' in capsys.readouterr().err
