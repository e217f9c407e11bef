"""Lightroom Classic catalogs: crops read from a catalog the tests write with sqlite3.

The catalogs use Lightroom Classic's own table and column names (a subset of
the columns of a 2024 catalog; see cropjax/library/catalog.py for the sources).
"""

import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cropjax import annotate, metadata
from cropjax.library import catalog as lrcat
from library import EXAMPLE, crs_xmp, image_bytes, snapshot, write
from scripts import annotate as annotate_script

SCHEMA = '''
CREATE TABLE Adobe_images (
    id_local INTEGER PRIMARY KEY, id_global UNIQUE NOT NULL, captureTime, copyName,
    fileFormat NOT NULL DEFAULT 'unset', fileHeight, fileWidth, masterImage INTEGER, orientation,
    pick NOT NULL DEFAULT 0, rating, rootFile INTEGER NOT NULL DEFAULT 0,
    touchCount NOT NULL DEFAULT 0, touchTime NOT NULL DEFAULT 0);
CREATE TABLE AgLibraryFile (
    id_local INTEGER PRIMARY KEY, id_global UNIQUE NOT NULL, baseName NOT NULL DEFAULT '',
    extension NOT NULL DEFAULT '', folder INTEGER NOT NULL DEFAULT 0,
    idx_filename NOT NULL DEFAULT '', lc_idx_filename NOT NULL DEFAULT '',
    originalFilename NOT NULL DEFAULT '', sidecarExtensions);
CREATE TABLE AgLibraryFolder (
    id_local INTEGER PRIMARY KEY, id_global UNIQUE NOT NULL, parentId INTEGER,
    pathFromRoot NOT NULL DEFAULT '', rootFolder INTEGER NOT NULL DEFAULT 0, visibility INTEGER);
CREATE TABLE AgLibraryRootFolder (
    id_local INTEGER PRIMARY KEY, id_global UNIQUE NOT NULL, absolutePath UNIQUE NOT NULL DEFAULT '',
    name NOT NULL DEFAULT '', relativePathFromCatalog);
CREATE TABLE Adobe_imageDevelopSettings (
    id_local INTEGER PRIMARY KEY, croppedHeight, croppedWidth, digest, fileHeight, fileWidth,
    hasDevelopAdjustments INTEGER, image INTEGER, processVersion, text, whiteBalance);
CREATE INDEX index_Adobe_imageDevelopSettings_image ON Adobe_imageDevelopSettings( image );
'''

# Lightroom's numbers of EXAMPLE (tests/library.py), as develop settings.
CROP = {k: float(v) for k, v in EXAMPLE.items()}
SIDE = {'CropLeft': 0.1, 'CropTop': 0.2, 'CropRight': 0.6, 'CropBottom': 0.7, 'CropAngle': 0.0}
SIDE_XMP = {k: str(v) for k, v in SIDE.items()}


def settings(crop=None, has_crop=True, **extra):
  """Develop-settings text as Lightroom stores it, with nested tables that must be skipped."""
  lines = ['s = {', '\tAutoLateralCA = 0,', '\tCameraProfile = "Adobe Standard",']
  if has_crop is not None:
    lines.append(f'\tHasCrop = {"true" if has_crop else "false"},')
  for key, value in {**(crop or {}), **extra}.items():
    lines.append(f'\t{key} = {value},')
  lines += ['\tLook = {', '\t\tName = "Adobe Color { not a table",',
            '\t\tParameters = { CropLeft = 0.99, ToneCurvePV2012 = { 0, 0, 255, 255, }, },', '\t},',
            '\tProcessVersion = "11.0",', '\tToneCurveName2012 = "Linear",', '}']
  return '\n'.join(lines)


def insert(db, table, **values):
  db.execute(f'INSERT INTO {table} ({", ".join(values)}) VALUES ({", ".join("?" * len(values))})',
             tuple(values.values()))


def make_catalog(path, photos, roots):
  """Writes a catalog: `roots` {id: absolutePath}; `photos` dicts with id, root, folder (pathFromRoot),
  name, and optionally orientation, text, master, copy, touch, capture."""
  db = sqlite3.connect(path)
  db.executescript(SCHEMA)
  for rid, absolute in roots.items():
    insert(db, 'AgLibraryRootFolder', id_local=rid, id_global=f'R{rid}', absolutePath=absolute,
           name=absolute.rstrip('/\\').split('/')[-1])
  folders, files = {}, {}
  for p in photos:
    key = (p['root'], p['folder'])
    if key not in folders:
      folders[key] = 1000 + len(folders)
      insert(db, 'AgLibraryFolder', id_local=folders[key], id_global=f'F{folders[key]}',
             pathFromRoot=p['folder'], rootFolder=p['root'])
    fkey = (key, p['name'])
    if fkey not in files:
      files[fkey] = 2000 + len(files)
      base, _, ext = p['name'].rpartition('.')
      insert(db, 'AgLibraryFile', id_local=files[fkey], id_global=f'L{files[fkey]}', baseName=base,
             extension=ext, folder=folders[key], idx_filename=p['name'], lc_idx_filename=p['name'].lower(),
             originalFilename=p['name'])
    insert(db, 'Adobe_images', id_local=p['id'], id_global=f'I{p["id"]}', captureTime=p.get('capture'),
           copyName=p.get('copy'), fileFormat='JPG', masterImage=p.get('master'),
           orientation=p.get('orientation', 'AB'), rootFile=files[fkey], touchTime=p.get('touch', 0))
    if p.get('text') is not None:
      insert(db, 'Adobe_imageDevelopSettings', id_local=5000 + p['id'], image=p['id'], text=p['text'],
             processVersion='11.0')
  db.commit()
  db.close()
  return path


def execute(path, *statements):
  """Runs (sql, parameters) statements on a catalog and closes it."""
  db = sqlite3.connect(path)
  for sql, *parameters in statements:
    db.execute(sql, *parameters)
  db.commit()
  db.close()


def crop_of(record):
  return [record['crop'][k] for k in ('left', 'top', 'right', 'bottom', 'angle')]


def by_image(out):
  return {r['catalog_image']: r for r in annotate.read_manifest(out)}


def red_corner(path):
  a = np.asarray(Image.open(path).convert('RGB')).astype(int)
  h, w = a.shape[:2]
  corners = {'tl': a[:h // 8, :w // 8], 'tr': a[:h // 8, -w // 8:], 'bl': a[-h // 8:, :w // 8],
             'br': a[-h // 8:, -w // 8:]}
  return max(corners, key=lambda k: (corners[k][..., 0] - corners[k][..., 1:].mean(-1)).mean())


# ----------------------------------------------------------------------------- develop settings


def test_parse_settings_reads_flat_entries_only():
  text = settings(CROP, Exposure2012=0.35) + '\n'
  found = lrcat.parse_settings(text, (*lrcat.CROP_KEYS, 'Exposure2012', 'CameraProfile', 'Look'))
  assert found == {'HasCrop': True, **{k: pytest.approx(v) for k, v in CROP.items()}, 'Exposure2012': 0.35,
                   'CameraProfile': 'Adobe Standard', 'Look': {}}  # nested CropLeft = 0.99 ignored
  assert lrcat.parse_settings('s = { A = "x\\"}{y", ["odd key"] = 1, B = ZSTR "z", C = [==[ ]] ]==], '
                              'D = { "}", { } }, E = -1.5e-3, F = nil; G = false, }') == {
      'A': 'x"}{y', 'B': 'z', 'C': ' ]] ', 'D': {}, 'E': -0.0015, 'F': None, 'G': False}
  for bad in ('s = { CropLeft = os.execute("touch pwned") }', 'return { CropLeft = 0.1 }',
              's = { CropLeft = 0.1', 's = { CropLeft = 0.1 } extra', 's = { A = "open }',
              's = {' + '{' * 200000, 'CropLeft = 0.1'):
    with pytest.raises(lrcat.SettingsError):
      lrcat.parse_settings(bad)
  with pytest.raises(lrcat.SettingsError, match='more than'):
    lrcat.parse_settings('s = { A = 1 }' + ' ' * 100, limit=50)


def test_remap_paths():
  remap = lrcat.parse_remap(['C:\\Users\\x\\Pictures\\=/data/pictures', '/Volumes/Old=/mnt/new',
                             '/Volumes/Old/2019=/mnt/2019'])
  assert lrcat.remap_path('C:/Users/x/Pictures/2019/a.jpg', remap) == Path('/data/pictures/2019/a.jpg')
  assert lrcat.remap_path('c:\\users\\X\\pictures\\b.jpg', remap) == Path('/data/pictures/b.jpg')
  assert lrcat.remap_path('/Volumes/Old/2019/c.jpg', remap) == Path('/mnt/2019/c.jpg')  # longest
  assert lrcat.remap_path('/Volumes/Old/2020/d.jpg', remap) == Path('/mnt/new/2020/d.jpg')
  assert lrcat.remap_path('/Volumes/Older/e.jpg', remap) == Path('/Volumes/Older/e.jpg')  # whole names
  for bad in ('no-equals', '=/x', 'C:/x='):
    with pytest.raises(ValueError):
      lrcat.parse_remap([bad])


# ----------------------------------------------------------------------------- crops


def test_crops_and_orientation_match_the_xmp_path(tmp_path):
  lib, out = tmp_path / 'Pictures', tmp_path / 'dataset'
  # upright; stored turned with EXIF 6 (Lightroom: BC); turned in Lightroom only (DA);
  # mirrored in Lightroom (BA); no crop; HasCrop false with values left behind; no settings.
  files = {'upright.jpg': image_bytes(seed=1), 'exif6.jpg': image_bytes(orientation=6, seed=2),
           'turned.jpg': image_bytes(seed=3), 'mirror.jpg': image_bytes(seed=4),
           'plain.jpg': image_bytes(seed=5), 'off.jpg': image_bytes(seed=6),
           'none.jpg': image_bytes(seed=7),
           'side.jpg': image_bytes(seed=8, when='2020:06:01 10:00:00')}
  for name, data in files.items():
    write(lib / '2020' / name, data)
  photos = [
      {'id': 1, 'name': 'upright.jpg', 'text': settings(CROP, Exposure2012=0.35)},
      {'id': 2, 'name': 'exif6.jpg', 'orientation': 'BC', 'text': settings(CROP)},
      {'id': 3, 'name': 'turned.jpg', 'orientation': 'DA', 'text': settings(CROP)},
      {'id': 4, 'name': 'mirror.jpg', 'orientation': 'BA', 'text': settings(CROP)},
      {'id': 5, 'name': 'plain.jpg', 'text': settings(None, has_crop=None)},
      {'id': 6, 'name': 'off.jpg', 'text': settings(CROP, has_crop=False)},
      {'id': 7, 'name': 'none.jpg'},
      {'id': 8, 'name': 'side.jpg', 'text': settings(SIDE), 'capture': '2021-03-04T05:06:07.89'},
  ]
  cat = make_catalog(tmp_path / 'Catalog.lrcat', [{**p, 'root': 1, 'folder': '2020/'} for p in photos],
                     {1: f'{lib}/'})
  summary = annotate.annotate([], out, 64, catalog=cat)
  assert summary.scanned == 8 and summary.added == 5 and summary.skipped['no crop'] == 3
  assert not summary.problems
  records = by_image(out)
  assert set(records) == {1, 2, 3, 4, 8}

  expected = {1: (0.4, 0.3, 0.9, 0.8, -10.0), 2: (0.2, 0.4, 0.7, 0.9, -10.0),
              3: (0.3, 0.1, 0.8, 0.6, -10.0),
              4: (0.1, 0.3, 0.6, 0.8, 10.0), 8: (0.1, 0.2, 0.6, 0.7, 0.0)}
  for image, crop in expected.items():
    assert np.allclose(crop_of(records[image]), crop, atol=1e-4), (image, crop_of(records[image]))
  # The same numbers in sidecars read by the XMP path give the same crops.
  twin = tmp_path / 'twin'
  for image, name, orientation in ((1, 'upright.jpg', None), (2, 'exif6.jpg', None), (3, 'turned.jpg', 8),
                                   (4, 'mirror.jpg', 2)):
    write(twin / name, files[name])
    fields = {**EXAMPLE, **({'tiff:Orientation': str(orientation)} if orientation else {})}
    write(twin / (name + '.xmp'), crs_xmp(fields))
    via_xmp = metadata.read_photo(twin / name)
    assert np.allclose(via_xmp.crop.as_tuple(), crop_of(records[image]), atol=1e-6)
    assert via_xmp.orientation == records[image]['orientation']

  r = records[1]
  assert r['catalog'] == str(cat) and 'xmp' not in r and 'virtual_copy' not in r
  assert r['source'] == str(lib / '2020/upright.jpg') and r['edits'] == {'exposure': 0.35}
  assert records[2]['orientation'] == 6 and records[2]['original_size'] == [200, 300]
  assert records[2]['stored_size'] == [300, 200]
  assert records[3]['orientation'] == 8 and records[4]['orientation'] == 2
  assert records[8]['capture_time'] == '2021-03-04T05:06:07'
  # Written upright: the stored top-left red block is top right after 6, bottom left after 8,
  # top right after a left-right mirror.
  corners = {i: red_corner(out / records[i]['image']) for i in (1, 2, 3, 4)}
  assert corners == {1: 'tl', 2: 'tr', 3: 'bl', 4: 'tr'}

  again = annotate.annotate([], out, 64, catalog=cat)  # incremental, as for libraries
  assert again.added == 0 and again.known == 5 and again.records == 5


def test_virtual_copies(tmp_path):
  lib, out = tmp_path / 'lib', tmp_path / 'dataset'
  write(lib / 'IMG_1.jpg', image_bytes(seed=11))
  photos = [{'id': 10, 'name': 'IMG_1.jpg', 'text': settings(CROP)},
            {'id': 11, 'name': 'IMG_1.jpg', 'master': 10, 'copy': 'Square', 'text': settings(SIDE)},
            {'id': 12, 'name': 'IMG_1.jpg', 'master': 10, 'copy': 'Same', 'text': settings(CROP)},
            {'id': 13, 'name': 'IMG_1.jpg', 'master': 10, 'copy': 'Uncropped',
             'text': settings(None, False)}]
  cat = make_catalog(tmp_path / 'c.lrcat', [{**p, 'root': 1, 'folder': ''} for p in photos], {1: f'{lib}/'})
  summary = annotate.annotate([], out, 48, catalog=cat)
  assert summary.scanned == 4 and summary.added == 3 and summary.skipped['no crop'] == 1
  records = by_image(out)
  assert {r['source'] for r in records.values()} == {str(lib / 'IMG_1.jpg')}
  assert 'virtual_copy' not in records[10]
  assert records[11]['virtual_copy'] == 'Square' and records[12]['virtual_copy'] == 'Same'
  assert len({r['id'] for r in records.values()}) == 3  # the copy with the master's crop is its own example
  assert np.allclose(crop_of(records[11]), (0.1, 0.2, 0.6, 0.7, 0.0))
  assert crop_of(records[12]) == crop_of(records[10])
  # The dataset keeps each copy as its own example (the master's file, another crop).
  from cropjax.datasets import annotated
  loaded = annotated.load_records(out)
  assert len(loaded) == 3
  assert sorted(r.get('virtual_copy') or '' for r in loaded) == ['', 'Same', 'Square']


def test_moved_roots_and_missing_files(tmp_path, capsys):
  new_home, out = tmp_path / 'photos', tmp_path / 'dataset'
  write(new_home / 'win/2019/a.jpg', image_bytes(seed=21))
  write(new_home / 'mac/b.jpg', image_bytes(seed=22))
  photos = [{'id': 1, 'root': 1, 'folder': '2019/', 'name': 'a.jpg', 'text': settings(CROP)},
            {'id': 2, 'root': 2, 'folder': '', 'name': 'b.jpg', 'text': settings(SIDE)},
            {'id': 3, 'root': 2, 'folder': 'gone/', 'name': 'c.jpg', 'text': settings(SIDE)},
            {'id': 4, 'root': 2, 'folder': '', 'name': 'clip.mp4', 'text': settings(SIDE)}]  # not a photo
  cat = make_catalog(tmp_path / 'cat.lrcat', photos,
                     {1: 'C:/Users/Ann/Pictures/', 2: '/Volumes/Disk/Photos/'})

  # Not remapped: every photo is missing, named by both paths; nothing could be read.
  report = tmp_path / 'report.json'
  args = ['--catalog', str(cat), '--out', str(out), '--quiet', '--report', str(report)]
  assert annotate_script.main(args) == 1
  err = capsys.readouterr().err
  assert 'C:/Users/Ann/Pictures/2019/a.jpg' in err and '/Volumes/Disk/Photos/gone/c.jpg' in err
  problems = json.loads(report.read_text())['problems']
  assert {p['reason'] for p in problems} == {'missing file'} and len(problems) == 3
  assert all(str(cat) in p['detail'] for p in problems)

  # Remapped (a Windows root, given with backslashes and another case, and a macOS volume).
  assert annotate_script.main([*args, '--remap', f'c:\\users\\ann\\pictures={new_home / "win"}',
                               '--remap', f'/Volumes/Disk/Photos/={new_home / "mac"}']) == 0
  summary = json.loads(report.read_text())
  assert summary['added'] == 2 and summary['scanned'] == 3 and summary['skipped']['missing file'] == 1
  (missing,) = summary['problems']
  assert missing['path'] == str(new_home / 'mac/gone/c.jpg')
  assert '/Volumes/Disk/Photos/gone/c.jpg' in missing['detail'] and 'image 3' in missing['detail']
  records = by_image(out)
  assert records[1]['source'] == str(new_home / 'win/2019/a.jpg')
  assert records[2]['source'] == str(new_home / 'mac/b.jpg')


def test_the_newer_of_sidecar_and_catalog_wins(tmp_path):
  lib, out = tmp_path / 'lib', tmp_path / 'dataset'
  now = time.time()
  photos = []
  for i, (sidecar_age, touch_age) in enumerate(((100, 1000), (1000, 100), (100, None)), 1):
    write(lib / f'p{i}.jpg', image_bytes(seed=30 + i))
    sidecar = write(lib / f'p{i}.xmp', crs_xmp(SIDE_XMP))
    os.utime(sidecar, (now - sidecar_age, now - sidecar_age))
    touch = 0 if touch_age is None else now - touch_age - lrcat.APPLE_EPOCH
    photos.append({'id': i, 'root': 1, 'folder': '', 'name': f'p{i}.jpg', 'text': settings(CROP),
                   'touch': touch})
  # p4: sidecar and catalog agree; p5: a virtual copy has no sidecar of its own.
  write(lib / 'p4.jpg', image_bytes(seed=34))
  write(lib / 'p4.xmp', crs_xmp(EXAMPLE))
  photos += [{'id': 4, 'root': 1, 'folder': '', 'name': 'p4.jpg', 'text': settings(CROP), 'touch': 1.0},
             {'id': 5, 'root': 1, 'folder': '', 'name': 'p1.jpg', 'master': 1, 'copy': 'v',
              'text': settings(CROP), 'touch': 1.0}]
  cat = make_catalog(tmp_path / 'c.lrcat', photos, {1: f'{lib}/'})
  summary = annotate.annotate([lib], out, 48, catalog=cat)
  assert summary.scanned == 5 and summary.added == 5  # the library's files are read through the catalog
  assert summary.conflicts == {'sidecar': 1, 'catalog': 2}
  assert 'sidecar and catalog disagreed: 3 (the newer won: sidecar 1, catalog 2)' in summary.format()
  assert summary.to_json()['catalog']['sidecar_and_catalog_disagreed'] == {'sidecar_newer': 1,
                                                                            'catalog_newer': 2}
  records = by_image(out)
  side, example = (0.1, 0.2, 0.6, 0.7, 0.0), (0.4, 0.3, 0.9, 0.8, -10.0)
  assert np.allclose(crop_of(records[1]), side)  # sidecar newer
  assert records[1]['xmp'] == str(lib / 'p1.xmp') and records[1]['catalog'] == str(cat)
  assert np.allclose(crop_of(records[2]), example) and 'xmp' not in records[2]  # catalog newer
  assert np.allclose(crop_of(records[3]), example)  # no touch time: the catalog
  assert np.allclose(crop_of(records[4]), example) and np.allclose(crop_of(records[5]), example)


# ----------------------------------------------------------------------------- read only


def test_catalog_is_only_read_even_while_lightroom_writes(tmp_path):
  lib, out = tmp_path / 'lib', tmp_path / 'dataset'
  write(lib / 'a.jpg', image_bytes(seed=41))
  write(lib / 'b.jpg', image_bytes(seed=42))
  (tmp_path / 'cat').mkdir()
  cat = make_catalog(tmp_path / 'cat' / 'c.lrcat',
                     [{'id': 1, 'root': 1, 'folder': '', 'name': 'a.jpg', 'text': settings(CROP)},
                      {'id': 2, 'root': 1, 'folder': '', 'name': 'b.jpg', 'text': settings(SIDE)}],
                     {1: f'{lib}/'})
  old = time.time() - 3600
  os.utime(cat, (old, old))
  before, stat = snapshot(cat.parent), cat.stat()
  library_before = snapshot(lib)

  # Lightroom's side: a write transaction, begun and not committed.
  writer = sqlite3.connect(cat, isolation_level=None)
  writer.execute('BEGIN IMMEDIATE')
  writer.execute("UPDATE Adobe_images SET rating = 5 WHERE id_local = 1")
  try:
    summary = annotate.annotate([], out, 48, catalog=cat)
    assert summary.added == 2 and not summary.problems
  finally:
    writer.execute('ROLLBACK')
    writer.close()
  assert snapshot(cat.parent) == before  # same bytes, no -journal / -wal / -shm left
  after = cat.stat()
  assert (after.st_mtime_ns, after.st_size) == (stat.st_mtime_ns, stat.st_size)
  assert snapshot(lib) == library_before

  # A lock held longer than the timeout (a commit in progress): a clear error, not a hang.
  writer = sqlite3.connect(cat, isolation_level=None)
  writer.execute('BEGIN EXCLUSIVE')
  try:
    with pytest.raises(lrcat.CatalogError, match=f'{cat}.*locked'):
      lrcat.read_catalog(cat, timeout=0.1)
  finally:
    writer.execute('ROLLBACK')
    writer.close()
  assert snapshot(cat.parent) == before


# ----------------------------------------------------------------------------- hostile catalogs


def test_unreadable_catalogs_are_refused_before_anything_is_written(tmp_path, capsys):
  lib = tmp_path / 'lib'
  write(lib / 'a.jpg', image_bytes(seed=51))
  good = [{'id': 1, 'root': 1, 'folder': '', 'name': 'a.jpg', 'text': settings(CROP)}]
  not_sqlite = write(tmp_path / 'text.lrcat', 'just some text, ' * 20)
  empty = write(tmp_path / 'empty.lrcat', b'')
  no_table = make_catalog(tmp_path / 'no_table.lrcat', good, {1: f'{lib}/'})
  execute(no_table, ('DROP TABLE Adobe_imageDevelopSettings',))
  no_column = make_catalog(tmp_path / 'no_column.lrcat', good, {1: f'{lib}/'})
  execute(no_column, ('ALTER TABLE AgLibraryRootFolder RENAME COLUMN absolutePath TO somethingElse',))
  truncated = make_catalog(tmp_path / 'truncated.lrcat', good, {1: f'{lib}/'})
  truncated.write_bytes(truncated.read_bytes()[:1500])
  cases = {not_sqlite: 'not an SQLite database', empty: 'not an SQLite database',
           no_table: 'no table Adobe_imageDevelopSettings',
           no_column: 'AgLibraryRootFolder has no column absolutePath',
           truncated: '', tmp_path / 'missing.lrcat': 'no such catalog file'}
  for cat, message in cases.items():
    out = tmp_path / f'out-{cat.stem}'
    with pytest.raises(annotate.AnnotateError, match=str(cat)) as e:
      annotate.annotate([], out, 32, catalog=cat)
    assert message in str(e.value)
    assert not out.exists()
    assert annotate_script.main(['--catalog', str(cat), '--out', str(out), '--quiet']) == 2
    assert str(cat) in capsys.readouterr().err and not out.exists()
  assert empty.read_bytes() == b''  # not turned into a database


def test_bad_entries_are_reported_one_by_one(tmp_path):
  lib, out = tmp_path / 'lib', tmp_path / 'dataset'
  for i in range(1, 9):
    write(lib / f'p{i}.jpg', image_bytes(seed=60 + i))
  pwned = tmp_path / 'pwned'
  photos = [
      {'id': 1, 'name': 'p1.jpg', 'text': settings(CROP)},                                   # fine
      {'id': 2, 'name': 'p2.jpg', 'orientation': 6, 'text': settings(CROP)},                 # integer code
      {'id': 3, 'name': 'p3.jpg', 'orientation': 'XY', 'text': settings(CROP)},
      {'id': 4, 'name': 'p4.jpg', 'text': settings({**CROP, 'CropLeft': '"abc"'})},          # a string
      {'id': 5, 'name': 'p5.jpg', 'text': settings(CROP).replace('HasCrop = true', 'HasCrop = 1')},
      {'id': 6, 'name': 'p6.jpg', 'text': settings(CROP) + ' ' * (lrcat.MAX_SETTINGS_BYTES + 10)},  # huge
      {'id': 7, 'name': 'p7.jpg', 'text': f's = {{ CropLeft = os.execute("touch {pwned}") }}'},
      {'id': 8, 'name': 'p8.jpg', 'text': settings({**CROP, 'CropRight': 'math.huge'})},
  ]
  cat = make_catalog(tmp_path / 'c.lrcat', [{**p, 'root': 1, 'folder': ''} for p in photos], {1: f'{lib}/'})
  # Values of the wrong type where Lightroom keeps text; image 9 shares p1.jpg with image 1.
  execute(cat, ('UPDATE Adobe_imageDevelopSettings SET text = 42 WHERE image = 1',),
          ("INSERT INTO Adobe_images (id_local, id_global, rootFile) VALUES (9, 'I9', 2000)",),
          ('INSERT INTO Adobe_imageDevelopSettings (image, text) VALUES (9, ?)', (settings(CROP),)),
          ('UPDATE AgLibraryRootFolder SET absolutePath = ? WHERE id_local = 1', (f'{lib}/'.encode(),)))
  # With the root folder's path a BLOB, no photo can be found: every entry is a bad entry.
  summary = annotate.annotate([], out, 32, catalog=cat)
  assert summary.scanned == 9 and summary.added == 0
  assert {p.reason for p in summary.problems} == {'bad catalog entry'}
  assert all(str(cat) in p.detail and 'absolutePath' in p.detail for p in summary.problems)
  execute(cat, ('UPDATE AgLibraryRootFolder SET absolutePath = ? WHERE id_local = 1', (f'{lib}/',)))

  summary = annotate.annotate([], out, 32, catalog=cat)
  problems = {int(os.path.basename(p.path)[1:-4]): p for p in summary.problems}
  assert summary.scanned == 9 and summary.added == 1 and not pwned.exists()
  assert set(problems) == {1, 2, 3, 4, 5, 6, 7, 8} and len(summary.problems) == 8
  assert problems[1].reason == 'bad catalog entry' and 'develop settings are integer' in problems[1].detail
  assert problems[2].reason == 'bad catalog entry' and 'orientation 6' in problems[2].detail
  assert problems[3].reason == 'bad catalog entry' and "'XY'" in problems[3].detail
  assert problems[4].reason == 'invalid crop values' and 'CropLeft' in problems[4].detail
  assert problems[5].reason == 'invalid crop values' and 'HasCrop' in problems[5].detail
  assert problems[6].reason == 'bad catalog entry' and 'more than' in problems[6].detail
  assert problems[7].reason == 'bad catalog entry' and 'os.execute' in problems[7].detail
  assert problems[8].reason == 'bad catalog entry' and 'math.huge' in problems[8].detail
  for i, p in problems.items():
    assert p.path == str(lib / f'p{i}.jpg') and str(cat) in p.detail and f'image {i}' in p.detail
  (record,) = annotate.read_manifest(out)
  assert record['catalog_image'] == 9 and len(list((out / 'images').iterdir())) == 1


def test_cli_usage(tmp_path, capsys):
  lib, out = tmp_path / 'lib', tmp_path / 'out'
  write(lib / 'a.jpg', image_bytes(seed=71))
  assert annotate_script.main(['--out', str(out)]) == 2
  assert 'LIBRARY, or --catalog' in capsys.readouterr().err
  assert annotate_script.main([str(lib), '--remap', 'a=b', '--out', str(out)]) == 2
  assert '--remap needs --catalog' in capsys.readouterr().err
  cat = make_catalog(tmp_path / 'c.lrcat', [{'id': 1, 'root': 1, 'folder': '', 'name': 'a.jpg',
                                             'text': settings(CROP)}], {1: f'{lib}/'})
  assert annotate_script.main(['--catalog', str(cat), '--remap', 'bad', '--out', str(out)]) == 2
  assert 'OLD=NEW' in capsys.readouterr().err and not out.exists()
  assert annotate_script.main(['--catalog', str(cat), '--out', str(lib / 'dataset')]) == 2  # inside a root
  assert 'must not be inside' in capsys.readouterr().err
  assert annotate_script.main(['--catalog', str(cat), '--out', str(out), '--quiet']) == 0
  printed = capsys.readouterr().out
  assert 'added to the dataset: 1' in printed and 'missing file: 0' in printed


def test_older_catalogs_without_optional_columns(tmp_path):
  lib, out = tmp_path / 'lib', tmp_path / 'dataset'
  write(lib / 'a.jpg', image_bytes(seed=81))
  cat = make_catalog(tmp_path / 'old.lrcat', [{'id': 1, 'root': 1, 'folder': '', 'name': 'a.jpg',
                                               'text': settings(CROP)}], {1: f'{lib}/'})
  execute(cat, *[(f'ALTER TABLE {table} DROP COLUMN {column}',) for table, column in (
      ('Adobe_images', 'touchTime'), ('Adobe_images', 'copyName'), ('Adobe_images', 'captureTime'),
      ('Adobe_images', 'masterImage'), ('AgLibraryFile', 'idx_filename'))])
  summary = annotate.annotate([], out, 32, catalog=cat)
  assert summary.added == 1 and not summary.problems
