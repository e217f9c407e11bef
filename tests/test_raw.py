"""Raw files through rawpy (cropjax.library.raw), on DNGs written here from known pictures.

The DNGs are real ones (a Bayer mosaic in a sub-IFD, the preview in IFD0, the
DNG colour tags) written by `dng` below with tifffile, and LibRaw reads them
back: no raw file is downloaded. The camera's colour matrix makes camera RGB
linear sRGB, so the demosaic looks like the picture it was made from.
"""

import io
import json
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cropjax import annotate, inference, metadata
from cropjax.library import raw
from library import EXAMPLE, crs_xmp, exif_bytes, image_bytes, pixels, snapshot, write

try:
  import rawpy
except ImportError:  # only the test of what happens without it runs
  rawpy = None
needs_rawpy = pytest.mark.skipif(rawpy is None,
                                 reason="rawpy is not installed (pip install -e '.[raw]')")

W, H = 180, 120  # the stored frame of every DNG here (3:2, like EXAMPLE's 300x200)
# EXAMPLE's crop, (0.4, 0.3, 0.9, 0.8) turned by -10 degrees, in the upright frame.
UPRIGHT_EXAMPLE = {1: (0.4, 0.3, 0.9, 0.8, -10.0), 6: (0.2, 0.4, 0.7, 0.9, -10.0),
                   8: (0.3, 0.1, 0.8, 0.6, -10.0)}
NO_RAWPY = "RAW files need rawpy: pip install -e '.[raw]'"


# ----------------------------------------------------------------------------- writing DNGs

# XYZ (D65) -> linear sRGB, as DNG's ColorMatrix1 (XYZ -> camera): camera RGB is linear sRGB.
XYZ_TO_SRGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))


def dng(picture: np.ndarray, *, orientation: int = 1, preview: str | None = None,
        preview_image: np.ndarray | None = None, preview_exif: bytes | None = None,
        xmp: str | None = None, default_crop: tuple[int, int, int, int] | None = None,
        order: str = '<') -> bytes:
  """A DNG whose RGGB mosaic is `picture` (HxWx3 uint8, gamma 2.2), with an optional preview
  in IFD0: 'rgb' (8-bit, uncompressed) or 'jpeg' (`preview_image`, default `picture` at half
  size, stored as given; `preview_exif` goes into the JPEG)."""
  h, w = picture.shape[:2]
  linear = (picture.astype(np.float64) / 255.0) ** 2.2
  cfa = np.empty((h, w))
  cfa[0::2, 0::2] = linear[0::2, 0::2, 0]
  cfa[0::2, 1::2] = linear[0::2, 1::2, 1]
  cfa[1::2, 0::2] = linear[1::2, 0::2, 1]
  cfa[1::2, 1::2] = linear[1::2, 1::2, 2]
  mosaic = (64 + cfa * (4095 - 64) + 0.5).astype(np.uint16)
  # extratags: (tag, TIFF type, count, value, write once); rationals as flat numerator,
  # denominator lists.
  raw_tags = [(33421, 3, 2, (2, 2), False), (33422, 1, 4, bytes([0, 1, 1, 2]), False),
              (50714, 3, 1, 64, False), (50717, 3, 1, 4095, False)]
  if default_crop is not None:
    raw_tags += [(50719, 4, 2, default_crop[:2], False), (50720, 4, 2, default_crop[2:], False)]
  matrix = [n for row in XYZ_TO_SRGB for v in row for n in (round(v * 10000), 10000)]
  main_tags = [(271, 2, 0, 'cropjax', False), (272, 2, 0, 'test DNG', False),
               (274, 3, 1, orientation, False), (306, 2, 0, '2021:07:04 12:34:56', False),
               (50706, 1, 4, bytes([1, 4, 0, 0]), False), (50707, 1, 4, bytes([1, 1, 0, 0]), False),
               (50708, 2, 0, 'cropjax test DNG', False), (50721, 10, 9, matrix, False),
               (50728, 5, 3, [1, 1] * 3, False), (50778, 3, 1, 21, False)]
  if xmp is not None:
    main_tags.append((700, 1, 0, xmp.encode('utf-8'), False))
  # No ImageDescription (metadata=None) nor Software; tifffile always adds X/YResolution and
  # ResolutionUnit (1/1, none), which DNG readers ignore.
  plain = {'metadata': None, 'software': False}
  out = io.BytesIO()
  jpeg = None
  with tifffile.TiffWriter(out, byteorder=order) as tif:
    if preview is not None:
      if preview_image is None:
        preview_image = np.asarray(Image.fromarray(picture).resize((w // 2, h // 2),
                                                                   Image.Resampling.BOX))
      preview_image = np.ascontiguousarray(preview_image, np.uint8)
      ifd0 = {'subfiletype': 1, 'subifds': 1, 'photometric': 'rgb', 'extratags': main_tags,
              **plain}
      if preview == 'rgb':
        tif.write(preview_image, **ifd0)
      else:
        buf = io.BytesIO()
        Image.fromarray(preview_image).save(buf, 'JPEG', quality=95,
                                            **({'exif': preview_exif} if preview_exif else {}))
        jpeg = buf.getvalue()
        if preview_exif and jpeg[2:4] == b'\xff\xe0':  # a camera's: EXIF right after SOI, no JFIF
          jpeg = jpeg[:2] + jpeg[4 + int.from_bytes(jpeg[4:6], 'big'):]
        # The encoded JPEG is the one strip, stored as given. tifffile writes pre-encoded
        # strips without encoding them, but still looks up the named compression's codec,
        # and JPEG's is in imagecodecs (not a dependency): the strip goes in under deflate
        # (zlib, always there), and Compression and Photometric are set to JPEG and YCbCr
        # below with TiffTag.overwrite (in place, same size).
        tif.write(iter([jpeg]), shape=preview_image.shape, dtype=np.uint8, compression='zlib',
                  **ifd0)
      main_tags = []
    tif.write(mosaic, photometric='cfa', subfiletype=0, extratags=raw_tags + main_tags, **plain)
  if jpeg is not None:
    out.seek(0)
    with tifffile.TiffFile(out, mode='r+') as tif:
      tags = tif.pages[0].tags
      tags['Compression'].overwrite(7)  # JPEG
      tags['PhotometricInterpretation'].overwrite(6)  # YCbCr, as the JPEG (4:2:0) is stored
  return out.getvalue()


def picture(seed: int = 0) -> np.ndarray:
  """The test picture: smooth colours, a red block in the stored top-left corner."""
  return pixels(W, H, seed=seed)


def red_corner(image: Image.Image) -> str:
  a = np.asarray(image.convert('RGB')).astype(int)
  h, w = a.shape[:2]
  corners = {'tl': a[:h // 8, :w // 8], 'tr': a[:h // 8, -w // 8:], 'bl': a[-h // 8:, :w // 8],
             'br': a[-h // 8:, -w // 8:]}
  return max(corners, key=lambda k: (corners[k][..., 0] - corners[k][..., 1:].mean(-1)).mean())


def correlation(image: Image.Image, reference: np.ndarray) -> float:
  """Correlation of the grey levels at 45x30 (or 30x45), after a blur of the demosaic's noise."""
  size = (45, 30) if reference.shape[1] > reference.shape[0] else (30, 45)
  a = np.asarray(image.convert('L').resize(size, Image.Resampling.BOX), np.float64).ravel()
  b = np.asarray(Image.fromarray(reference).convert('L').resize(size, Image.Resampling.BOX),
                 np.float64).ravel()
  return float(np.corrcoef(a, b)[0, 1])


def assert_crop(crop, expected, tol=1e-4):
  assert crop is not None
  assert np.allclose(crop.as_tuple(), expected, atol=tol), (crop.as_tuple(), expected)


def stored_to_upright(a: np.ndarray, orientation: int) -> np.ndarray:
  return np.asarray(metadata.orient_image(Image.fromarray(a), orientation))


# ----------------------------------------------------------------------------- decoding

@needs_rawpy
def test_orientation_is_libraw_flip_for_every_exif_value(tmp_path):
  # LibRaw's own rotation of its demosaic (postprocess's default flip) is the
  # reference: our stored-frame demosaic turned by FLIP_TO_ORIENTATION must equal it.
  src = picture()
  for orientation in range(1, 9):
    path = write(tmp_path / f'o{orientation}.dng', dng(src, orientation=orientation))
    info = raw.probe(path)
    assert info.orientation == orientation and info.stored_size == (W, H)
    assert info.size == metadata.upright_size((W, H), orientation)
    got = raw.read(path, max(W, H))  # too large for half size: a full demosaic
    assert got.source == 'demosaic' and got.image.size == info.size
    with rawpy.imread(str(path)) as r:
      theirs = r.postprocess(use_camera_wb=True, output_bps=8, gamma=(2.4, 12.92))
    np.testing.assert_array_equal(np.asarray(got.image), theirs)


@needs_rawpy
def test_demosaic_resembles_the_picture_upright(tmp_path):
  src = picture(seed=3)
  for orientation, corner in ((1, 'tl'), (6, 'tr'), (8, 'bl'), (3, 'br')):
    path = write(tmp_path / f'o{orientation}.dng', dng(src, orientation=orientation))
    image = raw.read(path, 150).image
    assert red_corner(image) == corner, orientation
    assert correlation(image, stored_to_upright(src, orientation)) > 0.9
  # Another orientation than the file's (an editor's rotation): the stored frame turned by it.
  image = raw.read(tmp_path / 'o6.dng', 150, orientation=8).image
  assert image.size == (H, W) and red_corner(image) == 'bl'
  with pytest.raises(ValueError):
    raw.read(tmp_path / 'o6.dng', 150, orientation=9)


@needs_rawpy
def test_preview_when_large_enough_else_demosaic(tmp_path):
  src = picture(seed=4)
  with_preview = write(tmp_path / 'p.dng', dng(src, preview='rgb'))  # a 90x60 preview
  got = raw.read(with_preview, 64)
  assert got.source == 'preview' and got.image.size == (90, 60)
  assert correlation(got.image, src) > 0.95
  assert raw.read(with_preview, 90).source == 'preview'
  got = raw.read(with_preview, 91)  # 180 // 2 < 91: a full demosaic
  assert got.source == 'demosaic' and got.image.size == (W, H)
  no_preview = write(tmp_path / 'n.dng', dng(src))
  got = raw.read(no_preview, 64)  # half size is still large enough
  assert got.source == 'demosaic' and got.image.size == (W // 2, H // 2)
  assert correlation(got.image, src) > 0.9
  jpeg = write(tmp_path / 'j.dng', dng(src, preview='jpeg'))
  got = raw.read(jpeg, 80)
  assert got.source == 'preview' and got.image.size == (90, 60)
  assert correlation(got.image, src) > 0.95


@needs_rawpy
def test_preview_orientation(tmp_path):
  src = picture(seed=5)
  small = np.asarray(Image.fromarray(src).resize((W // 2, H // 2), Image.Resampling.BOX))
  # Stored in the sensor's frame (what most cameras do): turned by the raw's orientation.
  got = raw.read(write(tmp_path / 'a.dng', dng(src, orientation=6, preview='rgb')), 64)
  assert got.source == 'preview' and got.image.size == (60, 90) and red_corner(got.image) == 'tr'
  # Stored upright already (some cameras; LibRaw gives such a JPEG an EXIF saying 6): not
  # turned twice.
  for kind in ('rgb', 'jpeg'):
    upright = stored_to_upright(small, 6)
    got = raw.read(write(tmp_path / f'b{kind}.dng', dng(src, orientation=6, preview=kind,
                                                        preview_image=upright)), 64)
    assert got.source == 'preview' and got.image.size == (60, 90) and red_corner(got.image) == 'tr'
  # A JPEG with its own EXIF Orientation is shown by it.
  got = raw.read(write(tmp_path / 'c.dng', dng(src, orientation=6, preview='jpeg',
                                                preview_exif=exif_bytes(6))), 64)
  assert got.source == 'preview' and got.image.size == (60, 90) and red_corner(got.image) == 'tr'
  # The camera turned it upright and says so: shown as it is, not turned again.
  exif = Image.Exif()
  exif[0x0112] = 1
  got = raw.read(write(tmp_path / 'e.dng', dng(src, orientation=3, preview='jpeg',
                                                preview_image=stored_to_upright(small, 3),
                                                preview_exif=exif.tobytes())), 64)
  assert got.source == 'preview' and red_corner(got.image) == 'br'
  assert red_corner(raw.read(tmp_path / 'e.dng', 64, orientation=1).image) == 'tl'
  # Another framing (a square preview of a 3:2 photo): the demosaic instead.
  square = np.asarray(Image.fromarray(src).resize((60, 60)))
  got = raw.read(write(tmp_path / 'd.dng', dng(src, orientation=6, preview='rgb',
                                                preview_image=square)), 50)
  assert got.source == 'demosaic' and got.image.size == (H // 2, W // 2)
  assert red_corner(got.image) == 'tr'


@needs_rawpy
def test_default_crop_is_the_stored_frame(tmp_path):
  src = picture(seed=6)
  path = write(tmp_path / 'c.dng', dng(src, default_crop=(10, 6, 150, 100), orientation=6))
  info = raw.probe(path)
  assert info.stored_size == (150, 100) and info.size == (100, 150)
  got = raw.read(path, 150)
  assert got.source == 'demosaic' and got.image.size == (100, 150)
  assert correlation(got.image, stored_to_upright(src[6:106, 10:160], 6)) > 0.9


@needs_rawpy
def test_tiff_xmp_both_byte_orders(tmp_path):
  packet = crs_xmp(EXAMPLE)
  for order in '<>':
    data = dng(picture(), xmp=packet, order=order, preview='rgb')
    assert raw.tiff_xmp(data) == packet.encode()
    path = write(tmp_path / f'x{order == "<"}.dng', data)
    assert raw.probe(path).xmp == packet.encode() and raw.probe(path).stored_size == (W, H)
  assert raw.tiff_xmp(dng(picture())) is None
  assert raw.tiff_xmp(b'II*\x00\xff\xff\xff\x00') is None  # an IFD past the end
  assert raw.tiff_xmp(b'\xff\xd8\xff') is None


@needs_rawpy
def test_not_a_raw_file(tmp_path):
  for name, data in (('fake.cr2', b'II*\x00 not really raw'), ('text.nef', b'hello'),
                     ('cut.dng', dng(picture())[:200])):
    path = write(tmp_path / name, data)
    with pytest.raises(metadata.ImageReadError, match=name):
      raw.read(path, 64)
  with pytest.raises(metadata.ImageReadError, match='cannot read file'):
    raw.probe(tmp_path / 'missing.dng')


# ----------------------------------------------------------------------------- crops

@needs_rawpy
def test_read_photo_with_a_sidecar(tmp_path):
  path = write(tmp_path / 'IMG_0001.dng', dng(picture(), orientation=6))
  write(tmp_path / 'IMG_0001.xmp', crs_xmp({**EXAMPLE, 'photoshop:SidecarForExtension': 'DNG'}))
  info = metadata.read_photo(path)
  assert info.status == 'cropped' and info.source == str(tmp_path / 'IMG_0001.xmp')
  assert info.stored_size == (W, H) and info.orientation == 6 and info.size == (H, W)
  assert info.capture_time == '2021-07-04T12:34:56'  # the raw's DateTime, read by LibRaw
  assert_crop(info.crop, UPRIGHT_EXAMPLE[6])
  # A rotation made in the editor is recorded in the sidecar: it wins over the raw's own.
  write(tmp_path / 'IMG_0001.xmp', crs_xmp({**EXAMPLE, 'tiff:Orientation': '8'}))
  info = metadata.read_photo(path)
  assert info.orientation == 8
  assert_crop(info.crop, UPRIGHT_EXAMPLE[8])


@needs_rawpy
def test_read_photo_with_embedded_xmp(tmp_path):
  path = write(tmp_path / 'e.dng', dng(picture(), orientation=8, preview='rgb',
                                       xmp=crs_xmp(EXAMPLE, packet=True)))
  info = metadata.read_photo(path)
  assert info.source == 'embedded' and info.orientation == 8
  assert_crop(info.crop, UPRIGHT_EXAMPLE[8])
  # A sidecar wins over the embedded XMP.
  write(tmp_path / 'e.dng.xmp', crs_xmp({'CropLeft': '0.5'}))
  info = metadata.read_photo(path)
  assert info.source == str(tmp_path / 'e.dng.xmp')
  assert_crop(info.crop, metadata.orient_crop(metadata.Crop(0.5, 0, 1, 1), 8).as_tuple())


@needs_rawpy
def test_write_sidecar_reads_the_raw(tmp_path):
  path = write(tmp_path / 'w.dng', dng(picture(), orientation=6))
  crop = metadata.Crop(0.1, 0.2, 0.7, 0.9, 4.0)
  sidecar = metadata.write_sidecar(path, crop)
  packet = metadata.parse_xmp(sidecar.read_bytes())
  assert packet.get('orientation') == 6 and packet.get('sidecar_for') == 'DNG'
  assert_crop(metadata.read_photo(path).crop, crop.as_tuple(), 2e-6)
  with pytest.raises(metadata.MetadataError, match='stored_size'):
    metadata.write_sidecar(write(tmp_path / 'fake.cr2', b'II*\x00 not raw'), crop)


# ----------------------------------------------------------------------------- annotator, inference

@needs_rawpy
def test_annotate_raw_files(tmp_path):
  lib, out = tmp_path / 'library', tmp_path / 'dataset'
  write(lib / 'a/IMG_0001.dng', dng(picture(seed=1), orientation=6))
  write(lib / 'a/IMG_0001.xmp', crs_xmp({**EXAMPLE, 'photoshop:SidecarForExtension': 'DNG'}))
  write(lib / 'a/IMG_0002.DNG', dng(picture(seed=2), orientation=8, preview='jpeg',
                                    xmp=crs_xmp(EXAMPLE)))
  write(lib / 'a/IMG_0003.dng', dng(picture(seed=3)))  # no crop
  write(lib / 'bad/fake.cr2', b'II*\x00 not really raw')
  write(lib / 'bad/fake.xmp', crs_xmp(EXAMPLE))
  write(lib / 'bad/photo.heic', b'heic')
  before = snapshot(lib)
  summary = annotate.annotate([lib], out, 48)
  assert snapshot(lib) == before  # raw files and sidecars only read
  assert summary.added == 2 and summary.scanned == 5
  assert summary.skipped['no crop'] == 1 and summary.skipped['unsupported format'] == 1
  assert [(p.path, p.reason) for p in summary.problems] == [(str(lib / 'bad/fake.cr2'),
                                                              'unreadable image')]
  records = {os.path.basename(r['source']): r for r in annotate.read_manifest(out)}
  for name, orientation, corner in (('IMG_0001.dng', 6, 'tr'), ('IMG_0002.DNG', 8, 'bl')):
    r = records[name]
    assert r['orientation'] == orientation and r['stored_size'] == [W, H]
    assert r['original_size'] == [H, W] and (r['width'], r['height']) == (32, 48)
    got = [r['crop'][k] for k in ('left', 'top', 'right', 'bottom', 'angle')]
    assert np.allclose(got, UPRIGHT_EXAMPLE[orientation], atol=1e-4)
    image = Image.open(out / r['image'])
    assert image.size == (32, 48) and red_corner(image) == corner
  assert records['IMG_0002.DNG']['xmp'] == 'embedded'


class _StubModel:
  """What predict_crops uses of a model: a crop from the middle of the letterboxed square."""
  image_size = 32
  config = types.SimpleNamespace(data=types.SimpleNamespace(autocrop_options={}))

  def forward(self, images, batch_size):
    n = len(images)
    self.seen = images
    return {'crop': np.tile([[0.25, 0.25, 0.75, 0.75]], (n, 1)), 'angle': np.zeros(n)}


@needs_rawpy
def test_predict_crop_reads_raw_files(tmp_path, monkeypatch):
  stub = _StubModel()
  monkeypatch.setattr(inference, '_checked', lambda model, task: stub)
  path = write(tmp_path / 'IMG_1.dng', dng(picture(), orientation=6, preview='rgb'))
  assert inference.load_image(path).size == (H, W)  # 2048 is more than it has: full demosaic
  r = inference.predict_crop(path)
  assert r.size == (H, W) and stub.seen.shape == (1, 32, 32, 3)
  # The sidecar's orientation (the editor's rotation) is the one the picture is shown in.
  write(tmp_path / 'IMG_1.xmp', crs_xmp({'tiff:Orientation': '1'}, has_crop=None))
  assert inference.load_image(path).size == (W, H)
  with pytest.raises(inference.InputError, match='fake.nef'):
    inference.load_image(write(tmp_path / 'fake.nef', b'MM\x00* not raw'))


@needs_rawpy
def test_library_search_reads_raw_files_and_names_what_it_cannot(tmp_path, match_model,
                                                                 monkeypatch):
  """A library's raw files are indexed as `cropjax.predict` reads them (upright, the decoded
  picture's size), a GIF too; a HEIF file, a broken raw file and, without rawpy, every raw
  file are skipped and listed with what they are, never left out unsaid."""
  from cropjax import search
  from cropjax.search import descriptors
  from cropjax.search import index as index_lib
  lib = tmp_path / 'library'
  dng_path = write(lib / 'IMG_1.dng', dng(picture(seed=1), orientation=6, preview='rgb'))
  write(lib / 'IMG_2.nef', b'II*\x00 a raw file')
  write(lib / 'phone.heic', b'\x00\x00\x00\x18ftypheic not decodable here')
  write(lib / 'photo.jpg', image_bytes(seed=2))
  Image.fromarray(pixels(90, 60, seed=3)).save(lib / 'web.gif')
  write(lib / 'notes.txt', 'not a photo')
  assert [p.name for p in index_lib.library_files([lib])] == [
      'IMG_1.dng', 'IMG_2.nef', 'phone.heic', 'photo.jpg', 'web.gif']
  image, size = descriptors.read_photo(dng_path, 64)
  assert size == image.size == inference.load_image(dng_path).size == (H, W)
  idx = search.update_index([lib], tmp_path / 'idx', model=match_model)
  assert sorted(os.path.basename(p.path) for p in idx.photos) == [
      'IMG_1.dng', 'photo.jpg', 'web.gif']
  assert next(p for p in idx.photos if p.path.endswith('.dng')).width == H
  skipped = {os.path.basename(p): why for p, why in idx.skipped}
  assert sorted(skipped) == ['IMG_2.nef', 'phone.heic']
  assert skipped['phone.heic'] == 'ValueError: unsupported format (.heic files cannot be read here)'
  # what is wrong, without the path the list already gives
  assert skipped['IMG_2.nef'].startswith('InputError: not a raw file LibRaw can read')
  monkeypatch.setitem(sys.modules, 'rawpy', None)  # `import rawpy` raises ImportError
  with pytest.raises(inference.InputError, match=re.escape(NO_RAWPY)):
    descriptors.read_photo(dng_path, 64)
  # Without rawpy a build lists the raw files unread: neither hashed nor decoded on each run.
  hashed = []
  real = index_lib._sha256_file
  monkeypatch.setattr(index_lib, '_sha256_file', lambda f: hashed.append(Path(f)) or real(f))
  idx = search.update_index([lib], tmp_path / 'idx2', model=match_model)
  assert sorted(os.path.basename(p.path) for p in idx.photos) == ['photo.jpg', 'web.gif']
  skipped = {os.path.basename(p): why for p, why in idx.skipped}
  assert skipped['IMG_1.dng'] == skipped['IMG_2.nef'] == f'RawSupportError: {NO_RAWPY}'
  assert sorted(f.name for f in hashed if f.parent == lib) == ['phone.heic', 'photo.jpg',
                                                                 'web.gif']


# ----------------------------------------------------------------------------- without rawpy

def test_without_rawpy(tmp_path, monkeypatch, capsys):
  lib, out = tmp_path / 'library', tmp_path / 'dataset'
  write(lib / 'IMG_1.dng', dng(picture(seed=1)))
  write(lib / 'IMG_1.xmp', crs_xmp(EXAMPLE))
  write(lib / 'IMG_2.nef', b'II*\x00 a raw file')
  write(lib / 'IMG_3.jpg', image_bytes(xmp=crs_xmp(EXAMPLE)))
  monkeypatch.setitem(sys.modules, 'rawpy', None)  # `import rawpy` raises ImportError
  assert not raw.available()

  with pytest.raises(raw.RawSupportError) as e:
    metadata.read_photo(lib / 'IMG_1.dng')
  assert str(e.value) == f'{lib / "IMG_1.dng"}: {NO_RAWPY}'
  assert e.value.reason == annotate.UNSUPPORTED

  from scripts import annotate as annotate_script
  assert annotate_script.main([str(lib), '--out', str(out), '--size', '32', '--quiet',
                               '--report', str(tmp_path / 'report.json')]) == 0
  report = json.loads((tmp_path / 'report.json').read_text())
  assert report['added'] == 1 and report['skipped']['unsupported format'] == 2
  assert report['problems'] == [{'path': str(lib / 'IMG_1.dng'), 'reason': 'unsupported format',
                                 'detail': NO_RAWPY}]  # said once, not once per file
  err = capsys.readouterr().err
  assert err.count(NO_RAWPY) == 1 and 'Traceback' not in err

  with pytest.raises(inference.InputError) as e:
    inference.load_image(lib / 'IMG_1.dng')
  assert str(e.value) == f'{lib / "IMG_1.dng"}: {NO_RAWPY}'
  monkeypatch.setattr(inference, '_checked', lambda model, task: _StubModel())
  with pytest.raises(inference.InputError, match=r"pip install -e '\.\[raw\]'"):
    inference.predict_crop(lib / 'IMG_2.nef')
  with pytest.raises(metadata.MetadataError, match='rawpy.*stored_size'):
    metadata.write_sidecar(lib / 'IMG_1.dng', metadata.Crop(0.1, 0.1, 0.9, 0.9))
