"""Splits, the procedural source, and the tfds builders (on a tmp data_dir)."""

import io
import logging
import random

import numpy as np
import pytest
from PIL import Image

from cropjax import annotate
from cropjax import procedural
from cropjax.datasets import splits
from library import crs_xmp, image_bytes, write

tfds = pytest.importorskip('tensorflow_datasets')
from cropjax.datasets import annotated  # noqa: E402
from cropjax.datasets import photos  # noqa: E402

SKIP_STATS = dict(compute_stats=tfds.download.ComputeStatsMode.SKIP)


def _recompressed(image, scale=0.7, quality=60):
  small = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
  buf = io.BytesIO()
  small.save(buf, 'JPEG', quality=quality)
  return Image.open(io.BytesIO(buf.getvalue()))


# ----------------------------------------------------------------------------- splits

def test_dhash_sees_near_duplicates():
  pytest.importorskip('skimage')
  pictures = dict(procedural.skimage_photos(['astronaut', 'coffee', 'rocket']))
  astronaut = Image.fromarray(pictures['astronaut'])
  assert splits.hamming(splits.dhash(astronaut), splits.dhash(_recompressed(astronaut))) <= 3
  assert splits.hamming(splits.dhash(astronaut), splits.dhash(Image.fromarray(pictures['coffee']))) > 12
  assert splits.hamming(splits.dhash(astronaut), splits.dhash(Image.fromarray(pictures['rocket']))) > 12


def _items(n=300, seed=0):
  rng = random.Random(seed)
  return [splits.Item(f'{rng.getrandbits(128):032x}', rng.getrandbits(64),
                      f'2020-01-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00'
                      if rng.random() < 0.5 else None) for _ in range(n)]


def test_split_is_deterministic_and_order_free():
  items = _items()
  first = splits.assign(items, 0.2)
  shuffled = items[:]
  random.Random(1).shuffle(shuffled)
  assert splits.assign(shuffled, 0.2) == first
  assert set(first.values()) == {'train', 'validation'}
  share = sum(v == 'validation' for v in first.values()) / len(first)
  assert 0.1 < share < 0.3
  assert splits.assign(items, 0.2, salt='other') != first


def test_near_duplicates_always_share_a_split():
  base = _items(60, seed=2)
  near = splits.Item('near-copy', base[0].dhash ^ 0b101, None)           # 2 bits from item 0
  chain = splits.Item('chain', near.dhash ^ (0b111 << 40), None)          # 3 more bits: same group
  burst = [splits.Item('burst1', None, '2021-05-05T10:10:05'), splits.Item('burst2', None, '2021-05-05T10:10:59')]
  items = base + [near, chain] + burst
  together = 0
  for salt in range(40):
    split = splits.assign(items, 0.5, max_distance=4, salt=str(salt))
    assert split['near-copy'] == split['chain'] == split[base[0].key]
    assert split['burst1'] == split['burst2']
    together += split['near-copy'] == split['burst1']
  assert 5 < together < 35  # unrelated groups do go their own ways


def test_small_sets_get_both_splits():
  items = [splits.Item(k, None, None) for k in 'abc']
  for salt in range(20):
    assert set(splits.assign(items, 0.1, salt=str(salt)).values()) == {'train', 'validation'}
  assert set(splits.assign(items[:1], 0.1).values()) == {'train'} or set(
      splits.assign(items[:1], 0.1).values()) == {'validation'}


# ----------------------------------------------------------------------------- sources

def test_procedural_is_deterministic():
  a = procedural.image(7, 3, (64, 48))
  assert a.shape == (48, 64, 3) and a.dtype == np.uint8
  assert np.array_equal(a, procedural.image(7, 3, (64, 48)))
  assert not np.array_equal(a, procedural.image(7, 4, (64, 48)))
  assert not np.array_equal(a, procedural.image(8, 3, (64, 48)))
  for kind in procedural.KINDS:
    assert procedural.image(0, 0, (40, 40), kind=kind).std() > 5  # not flat
  assert len(list(procedural.images(1, 3, (16, 16)))) == 3


def test_skimage_photos_load_offline():
  pytest.importorskip('skimage')
  loaded = dict(procedural.skimage_photos())
  assert {'astronaut', 'chelsea', 'cat'} <= set(loaded)
  assert all(a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8 for a in loaded.values())


# ----------------------------------------------------------------------------- tfds builders

def _split_examples(builder):
  out = {}
  for split in builder.info.splits:
    out[split] = list(tfds.as_numpy(builder.as_dataset(split=split)))
  return out


def test_annotated_builder(tmp_path):
  lib, out = tmp_path / 'library', tmp_path / 'dataset'
  crop = crs_xmp({'CropLeft': '0.1', 'CropTop': '0.2', 'CropRight': '0.7', 'CropBottom': '0.9', 'CropAngle': '3'})
  for i in range(8):
    write(lib / f'p{i}.jpg', image_bytes(seed=100 + i, xmp=crop))
  original = Image.open(io.BytesIO(image_bytes(seed=100)))
  buf = io.BytesIO()
  _recompressed(original, 0.8, 70).save(buf, 'JPEG', xmp=crop.encode())
  write(lib / 'copies/p0-small.jpg', buf.getvalue())  # a near-duplicate of p0
  for i in range(2):  # a burst: same capture minute
    write(lib / f'burst{i}.jpg', image_bytes(seed=200 + i, xmp=crop, when=f'2020:06:01 10:00:{10 + i:02d}'))
  assert annotate.annotate([lib], out, 48).added == 11
  records = {r['id']: r for r in annotate.read_manifest(out)}
  by_name = {r['source'].rsplit('/', 1)[1]: r['id'] for r in records.values()}

  builder = annotated.AnnotatedCrops(data_dir=tmp_path / 'tfds', config=annotated.AnnotatedCropsConfig(
      name='half', path=str(out), validation_fraction=0.5))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(**SKIP_STATS))
  examples = _split_examples(builder)
  assert set(examples) == {'train', 'validation'}
  where = {}
  for split, items in examples.items():
    for ex in items:
      ident = ex['id'].decode()
      assert ident not in where
      where[ident] = split
      r = records[ident]
      assert ex['sha256'].decode() == r['sha256']
      assert ex['image'].shape == (r['height'], r['width'], 3)
      assert np.allclose(ex['crop'], [r['crop'][k] for k in ('left', 'top', 'right', 'bottom')], atol=1e-6)
      assert ex['angle'] == pytest.approx(3.0)
  assert set(where) == set(records)
  assert where[by_name['p0.jpg']] == where[by_name['p0-small.jpg']]
  assert where[by_name['burst0.jpg']] == where[by_name['burst1.jpg']]

  # The same folder as the manual dir, and through `builder()`: the same splits.
  again = annotated.AnnotatedCrops(data_dir=tmp_path / 'tfds2')
  again.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(out), **SKIP_STATS))
  helper = annotated.builder(out, data_dir=tmp_path / 'tfds3')
  helper.download_and_prepare(download_config=tfds.download.DownloadConfig(**SKIP_STATS))
  for b in (again, helper):
    ids = {s: sorted(ex['id'].decode() for ex in items) for s, items in _split_examples(b).items()}
    assert ids == {s: sorted(k for k, v in splits.assign(
        [splits.Item(k, int(r['dhash'], 16), r['capture_time']) for k, r in records.items()], 0.1).items()
        if v == s) for s in ids}


def test_photos_builder_demo_config(tmp_path):
  config = photos.PhotosConfig(name='tiny_demo', procedural=5, procedural_size=64, skimage=True,
                               max_size=64, validation_fraction=0.3)
  builder = photos.Photos(data_dir=tmp_path / 'tfds', config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(**SKIP_STATS))
  examples = _split_examples(builder)
  ids = {ex['id'].decode(): split for split, items in examples.items() for ex in items}
  assert sum(k.startswith('procedural/') for k in ids) == 5
  if 'skimage/cat' in ids:  # with scikit-image installed
    assert ids['skimage/cat'] == ids['skimage/chelsea']   # the same photo twice: one split
  assert all(max(ex['image'].shape[:2]) <= 64 for items in examples.values() for ex in items)
  assert set(examples) == {'train', 'validation'}
  assert photos.Photos.BUILDER_CONFIGS[0].name == 'demo'  # the default needs no user data


def test_photos_made_on_threads_equal_those_made_on_one_core(tmp_path, monkeypatch):
  from cropjax import threads
  config = photos.PhotosConfig(name='tiny_demo', procedural=9, procedural_size=64, skimage=False,
                               max_size=48, validation_fraction=0.3)

  def build(where):
    builder = photos.Photos(data_dir=tmp_path / where, config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(**SKIP_STATS))
    return {split: [(ex['id'], ex['image'].tobytes()) for ex in items]
            for split, items in _split_examples(builder).items()}
  on_threads = build('threads')
  monkeypatch.setattr(threads, 'workers', lambda: 1)
  assert build('one') == on_threads
  assert sum(len(v) for v in on_threads.values()) == 9


def test_photos_folder_skips_broken_files(tmp_path, caplog):
  folder = tmp_path / 'photos'
  for i in range(4):
    write(folder / f'sub/p{i}.jpg', image_bytes(seed=300 + i, orientation=6 if i == 0 else 1))
  write(folder / 'text.jpg', 'not an image')
  write(folder / 'cut.jpg', image_bytes(seed=9)[:2000])
  builder = photos.Photos(data_dir=tmp_path / 'tfds', config='folder')
  with caplog.at_level(logging.WARNING):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(folder), **SKIP_STATS))
  warnings = [r.getMessage() for r in caplog.records if 'do not decode' in r.getMessage()]
  assert len(warnings) == 1 and 'text.jpg' in warnings[0] and 'cut.jpg' in warnings[0]
  examples = {ex['id'].decode(): ex for items in _split_examples(builder).values() for ex in items}
  assert sorted(examples) == [f'sub/p{i}.jpg' for i in range(4)]
  assert examples['sub/p0.jpg']['image'].shape == (300, 200, 3)  # turned upright
