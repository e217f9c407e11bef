"""The annotator on a small hand-made library: crops, bad files, re-runs, and the demo library."""

import json
import os

import numpy as np
from PIL import Image

from cropjax import annotate
from library import (BILLION_LAUGHS, EXAMPLE, crs_xmp, image_bytes, snapshot, write)
from scripts import annotate as annotate_script
from scripts import make_demo_library

# Upright-frame crops worked out by hand (see test_metadata for the orientation table).
EXPECTED = {
    'a/IMG_side.jpg': (0.1, 0.2, 0.6, 0.7, 0.0),
    'a/IMG_emb6.jpg': (0.2, 0.4, 0.7, 0.9, -10.0),   # EXAMPLE (0.4, 0.3, 0.9, 0.8) turned by orientation 6
    'a/IMG_angle.jpg': (0.4, 0.3, 0.9, 0.8, -10.0),
    'b/IMG_tif8.tif': (0.3, 0.1, 0.8, 0.6, -10.0),  # EXAMPLE turned by orientation 8
}
PROBLEMS = {
    'bad/laughs.jpg': 'bad XML',
    'bad/malformed.jpg': 'bad XML',
    'bad/truncated.jpg': 'unreadable image',
    'bad/text.jpg': 'unreadable image',
    'bad/nan.jpg': 'invalid crop values',
    'bad/inverted.jpg': 'invalid crop values',
    'bad/orphan.xmp': 'bad XML',
}


def make_library(root):
  side = {'CropLeft': '0.1', 'CropTop': '0.2', 'CropRight': '0.6', 'CropBottom': '0.7', 'CropAngle': '0'}
  write(root / 'a/IMG_side.jpg', image_bytes(when='2020:06:01 10:00:00', seed=1))
  write(root / 'a/IMG_side.xmp', crs_xmp({**side, 'photoshop:SidecarForExtension': 'JPG'}))
  write(root / 'a/IMG_emb6.jpg', image_bytes(orientation=6, xmp=crs_xmp(EXAMPLE, packet=True), seed=2))
  write(root / 'a/IMG_angle.jpg', image_bytes(seed=3))
  write(root / 'a/IMG_angle.jpg.xmp', crs_xmp(EXAMPLE, form='element'))
  write(root / 'b/IMG_tif8.tif', image_bytes('TIFF', orientation=8, seed=4, xmp=crs_xmp(EXAMPLE)))
  write(root / 'b/applied.jpg', image_bytes(xmp=crs_xmp({**EXAMPLE, 'AlreadyApplied': 'True'}), seed=5))
  write(root / 'b/plain.jpg', image_bytes(seed=6))
  jpeg = image_bytes(seed=7)
  write(root / 'bad/laughs.jpg', jpeg)
  write(root / 'bad/laughs.xmp', BILLION_LAUGHS)
  write(root / 'bad/malformed.jpg', jpeg)
  write(root / 'bad/malformed.xmp', crs_xmp(side)[:-30])
  write(root / 'bad/truncated.jpg', image_bytes(seed=8)[:3000])
  write(root / 'bad/truncated.xmp', crs_xmp(side))
  write(root / 'bad/text.jpg', 'just some text\n')
  write(root / 'bad/nan.jpg', jpeg)
  write(root / 'bad/nan.xmp', crs_xmp({**side, 'CropLeft': 'NaN'}))
  write(root / 'bad/inverted.jpg', image_bytes(xmp=crs_xmp({**side, 'CropLeft': '0.8', 'CropRight': '0.3'}), seed=9))
  write(root / 'bad/photo.heic', b'not decoded by cropjax')  # raw files: test_raw
  write(root / 'bad/photo.xmp', crs_xmp(side))
  write(root / 'bad/orphan.xmp', BILLION_LAUGHS)
  write(root / 'notes.txt', 'not a photo')


def manifest(out):
  return {r['source']: r for r in annotate.read_manifest(out)}


def test_annotate_library(tmp_path, capsys):
  lib, out = tmp_path / 'library', tmp_path / 'dataset'
  make_library(lib)
  before = snapshot(lib)
  assert annotate_script.main([str(lib), '--out', str(out), '--size', '64',
                               '--report', str(tmp_path / 'report.json')]) == 0
  assert snapshot(lib) == before  # nothing written, changed or added in the library

  records = manifest(out)
  assert set(records) == {os.path.abspath(lib / p) for p in EXPECTED}
  for rel, crop in EXPECTED.items():
    r = records[os.path.abspath(lib / rel)]
    got = [r['crop'][k] for k in ('left', 'top', 'right', 'bottom', 'angle')]
    assert np.allclose(got, crop, atol=1e-4), (rel, got, crop)
    image = Image.open(out / r['image'])
    assert max(image.size) == 64 and (image.width, image.height) == (r['width'], r['height'])
    w, h = r['original_size']
    assert abs(image.width / image.height - w / h) < 0.05  # upright, aspect kept
    assert len(r['id']) == 16 and len(r['sha256']) == 64
  side = records[os.path.abspath(lib / 'a/IMG_side.jpg')]
  assert side['capture_time'] == '2020-06-01T10:00:00' and side['original_size'] == [300, 200]
  emb6 = records[os.path.abspath(lib / 'a/IMG_emb6.jpg')]
  assert emb6['original_size'] == [200, 300] and emb6['stored_size'] == [300, 200] and emb6['orientation'] == 6
  tif8 = records[os.path.abspath(lib / 'b/IMG_tif8.tif')]
  assert tif8['original_size'] == [200, 300] and tif8['stored_size'] == [300, 200]

  # The written images are upright: the red block of the stored top-left corner
  # is at the top right after orientation 6 and at the bottom left after 8.
  def red_corner(record):
    a = np.asarray(Image.open(out / record['image']).convert('RGB')).astype(int)
    h, w = a.shape[:2]
    corners = {'tl': a[:h // 8, :w // 8], 'tr': a[:h // 8, -w // 8:], 'bl': a[-h // 8:, :w // 8],
               'br': a[-h // 8:, -w // 8:]}
    return max(corners, key=lambda k: (corners[k][..., 0] - corners[k][..., 1:].mean(-1)).mean())
  assert red_corner(emb6) == 'tr'
  assert red_corner(records[os.path.abspath(lib / 'b/IMG_tif8.tif')]) == 'bl'
  assert red_corner(side) == 'tl'

  report = json.loads((tmp_path / 'report.json').read_text())
  problems = {p['path']: p['reason'] for p in report['problems']}
  assert problems == {str(lib / p): reason for p, reason in PROBLEMS.items()}
  assert report['scanned'] == 13 and report['added'] == 4
  assert report['skipped'] == {'no crop': 1, 'already applied': 1, 'unreadable image': 2,
                               'invalid crop values': 2, 'bad XML': 2, 'unsupported format': 1}
  err = capsys.readouterr().err
  for p in PROBLEMS:
    assert str(lib / p) in err


def test_rerun_is_incremental(tmp_path):
  lib, out = tmp_path / 'library', tmp_path / 'dataset'
  make_library(lib)
  first = annotate.annotate([lib], out, 64)
  assert first.added == 4
  again = annotate.annotate([lib, lib / 'a', lib], out, 64)  # nested and repeated: walked once
  assert again.added == 0 and again.known == 4 and again.records == 4 and again.scanned == 13
  more = tmp_path / 'more'
  write(more / 'new.jpg', image_bytes(seed=20, xmp=crs_xmp({'CropLeft': '0.25', 'CropRight': '0.75'})))
  write(more / 'copy.jpg', (lib / 'a/IMG_emb6.jpg').read_bytes())  # same content: already there
  third = annotate.annotate([more], out, 64)
  assert third.added == 1 and third.known == 1 and third.records == 5
  lines = (out / annotate.MANIFEST).read_text().splitlines()
  assert len(lines) == 5 and json.loads(lines[-1])['source'] == os.path.abspath(more / 'new.jpg')
  # A run killed in the middle of a line: that record is redone, the rest kept.
  text = (out / annotate.MANIFEST).read_text()
  (out / annotate.MANIFEST).write_text(text[:-40])
  fourth = annotate.annotate([more], out, 64)
  assert fourth.added == 1 and fourth.records == 5
  assert len(annotate.read_manifest(out)) == 5


def test_exit_status(tmp_path, capsys):
  bad = tmp_path / 'bad'
  write(bad / 'text.jpg', 'text')
  write(bad / 'cut.jpg', image_bytes()[:500])
  assert annotate_script.main([str(bad), '--out', str(tmp_path / 'out'), '--quiet']) == 1
  assert 'none of the 2 photos could be read' in capsys.readouterr().err
  empty = tmp_path / 'empty'
  empty.mkdir()
  assert annotate_script.main([str(empty), '--out', str(tmp_path / 'out')]) == 1
  assert annotate_script.main([str(tmp_path / 'missing'), '--out', str(tmp_path / 'out')]) == 2
  assert annotate_script.main([str(bad), '--out', str(bad / 'dataset')]) == 2
  assert not (bad / 'dataset').exists()


def test_demo_library_end_to_end(tmp_path, capsys):
  lib, out = tmp_path / 'demo', tmp_path / 'dataset'
  assert make_demo_library.main([str(lib), '--count', '14', '--size', '160', '--seed', '3']) == 0
  assert make_demo_library.main([str(lib), '--count', '14']) == 2  # not empty: refused
  first = snapshot(lib)
  other = tmp_path / 'again'
  make_demo_library.main([str(other), '--count', '14', '--size', '160', '--seed', '3'])
  assert snapshot(other) == first  # deterministic by seed
  assert annotate_script.main([str(lib), '--out', str(out), '--size', '96', '--quiet']) == 0
  assert snapshot(lib) == first
  expected = [json.loads(line) for line in (lib / 'EXPECTED.jsonl').read_text().splitlines()]
  records = manifest(out)
  err = capsys.readouterr().err
  statuses = set()
  for e in expected:
    source = os.path.abspath(lib / e['path'])
    statuses.add(e['status'])
    if e['status'] == 'cropped':
      got, want = records[source]['crop'], e['crop']
      assert max(abs(got[k] - want[k]) for k in want) < 1e-4, (e, got)
    else:
      assert source not in records
      if e['status'] in annotate.PROBLEMS:
        assert f'skipped {lib / e["path"]}: {e["status"]}' in err
  assert {'cropped', 'unreadable image', 'bad XML', 'invalid crop values'} <= statuses


def test_identical_files_with_other_metadata(tmp_path):
  # Byte-identical photos: one with a good crop, one with another crop, one with a
  # hostile sidecar, one with a NaN. The copy with the same crop is the only one skipped
  # as known; every bad one is still reported.
  lib, out = tmp_path / 'library', tmp_path / 'dataset'
  jpeg = image_bytes(seed=11)
  good = crs_xmp({'CropLeft': '0.1', 'CropRight': '0.6'})
  for name, xmp in (('a', good), ('b', good), ('c', crs_xmp({'CropLeft': '0.3', 'CropRight': '0.9'})),
                    ('d', BILLION_LAUGHS), ('e', crs_xmp({'CropLeft': 'NaN'}))):
    write(lib / f'{name}.jpg', jpeg)
    write(lib / f'{name}.xmp', xmp)
  summary = annotate.annotate([lib], out, 32)
  assert summary.added == 2 and summary.known == 1
  assert {(p.path, p.reason) for p in summary.problems} == {
      (str(lib / 'd.jpg'), 'bad XML'), (str(lib / 'e.jpg'), 'invalid crop values')}
  crops = sorted(r['crop']['left'] for r in annotate.read_manifest(out))
  assert crops == [0.1, 0.3]
