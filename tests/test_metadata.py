"""XMP crops: geometry, orientation, sources and precedence, bad input, writing."""

import io
import math
import struct
import zlib
import base64

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from cropjax import metadata
from cropjax.metadata import Crop
from library import (BILLION_LAUGHS, EXAMPLE, EXTERNAL_ENTITY, crs_xmp, exif_bytes, image_bytes,
                     write)


def assert_crop(crop, expected, tol=1e-5):
  assert crop is not None
  assert np.allclose(crop.as_tuple(), expected, atol=tol), (crop, expected)


# ----------------------------------------------------------------------------- geometry

def test_lightroom_example_with_angle():
  crop = metadata.lightroom_to_crop(0.374857, 0.368916, 0.925143, 0.731084, -10, 300, 200)
  assert_crop(crop, (0.4, 0.3, 0.9, 0.8, -10))
  lr = metadata.crop_to_lightroom(Crop(0.4, 0.3, 0.9, 0.8, -10), 300, 200)
  assert np.allclose(lr, (0.374857, 0.368916, 0.925143, 0.731084, -10), atol=1e-6)
  # Lightroom's two numbers pairs are the turned rectangle's top-left and bottom-right corners.
  tl, _, br, _ = metadata.corners(Crop(0.4, 0.3, 0.9, 0.8, -10), 300, 200)
  assert np.allclose(tl, (0.374857 * 300, 0.368916 * 200), atol=1e-3)
  assert np.allclose(br, (0.925143 * 300, 0.731084 * 200), atol=1e-3)


def test_positive_angle_turns_clockwise_on_screen():
  # The top edge of a crop turned +10 degrees goes down to the right (y down).
  tl, tr, _, _ = metadata.corners(Crop(0.2, 0.2, 0.8, 0.8, 10), 100, 100)
  assert tr[1] > tl[1]


# Stored crop (0.1, 0.2, 0.5, 0.6) at +5 degrees, worked out by hand per orientation:
# where the stored rectangle appears once the photo is turned / mirrored upright.
HAND = {
    1: (0.1, 0.2, 0.5, 0.6, 5),
    2: (0.5, 0.2, 0.9, 0.6, -5),   # mirrored left-right: x -> 1 - x, angle negated
    3: (0.5, 0.4, 0.9, 0.8, 5),    # turned 180: both flipped, angle kept
    4: (0.1, 0.4, 0.5, 0.8, -5),   # mirrored top-bottom
    5: (0.2, 0.1, 0.6, 0.5, -5),   # transposed: x <-> y
    6: (0.4, 0.1, 0.8, 0.5, 5),    # displayed turned 90 clockwise: x = 1 - y, y = x
    7: (0.4, 0.5, 0.8, 0.9, -5),   # transversed
    8: (0.2, 0.5, 0.6, 0.9, 5),    # displayed turned 90 counter-clockwise: x = y, y = 1 - x
}


@pytest.mark.parametrize('orientation', range(1, 9))
def test_orientation_hand_values(orientation):
  stored = Crop(0.1, 0.2, 0.5, 0.6, 5)
  upright = metadata.orient_crop(stored, orientation)
  assert_crop(upright, HAND[orientation], 1e-12)
  assert_crop(metadata.unorient_crop(upright, orientation), stored.as_tuple(), 1e-12)
  assert metadata.upright_size((300, 200), orientation) == ((200, 300) if orientation >= 5 else (300, 200))


def _mask(size, polygon):
  im = Image.new('L', size, 0)
  ImageDraw.Draw(im).polygon(polygon, fill=255)
  return np.asarray(im) > 127


@pytest.mark.parametrize('orientation', range(1, 9))
def test_orientation_matches_a_rendering(orientation):
  # Draw the turned crop on the stored pixels, let Pillow apply the EXIF
  # orientation, and check it lands where orient_crop says (angle sign included).
  w, h = 300, 200
  stored = Crop(0.15, 0.2, 0.55, 0.7, 12)
  drawing = Image.fromarray(_mask((w, h), metadata.corners(stored, w, h)).astype(np.uint8) * 255)
  buf = io.BytesIO()
  drawing.save(buf, 'PNG', exif=exif_bytes(orientation))
  upright_pixels = np.asarray(ImageOps.exif_transpose(Image.open(buf))) > 127
  assert np.array_equal(upright_pixels, np.asarray(metadata.orient_image(drawing, orientation)) > 127)
  up_w, up_h = metadata.upright_size((w, h), orientation)
  expected = _mask((up_w, up_h), metadata.corners(metadata.orient_crop(stored, orientation), up_w, up_h))
  iou = (upright_pixels & expected).sum() / (upright_pixels | expected).sum()
  assert iou > 0.98, iou
  # The wrong angle sign would be visibly off.
  flipped = metadata.orient_crop(stored, orientation)
  flipped = Crop(flipped.left, flipped.top, flipped.right, flipped.bottom, -flipped.angle)
  wrong = _mask((up_w, up_h), metadata.corners(flipped, up_w, up_h))
  assert (upright_pixels & wrong).sum() / (upright_pixels | wrong).sum() < 0.9


def test_check_crop():
  assert metadata.check_crop(Crop(-1e-7, 0, 1 + 1e-7, 1), 10, 10) == Crop(0, 0, 1, 1)
  for bad in (Crop(0.5, 0.1, 0.4, 0.9), Crop(0.1, 0.1, 0.9, 0.9, 50), Crop(math.nan, 0, 1, 1),
              Crop(-0.1, 0, 0.5, 0.5), Crop(0.05, 0.05, 0.95, 0.95, 20)):
    with pytest.raises(metadata.CropValueError):
      metadata.check_crop(bad, 300, 200)


# ----------------------------------------------------------------------------- reading

def _photo(tmp_path, name='IMG_1.jpg', xmp=None, orientation=1, size=(300, 200), when=None):
  fmt = {'.jpg': 'JPEG', '.png': 'PNG', '.tif': 'TIFF', '.webp': 'WEBP'}[name[name.rindex('.'):].lower()]
  return write(tmp_path / name, image_bytes(fmt, size, orientation, xmp, when))


@pytest.mark.parametrize('form', ['attribute', 'element'])
def test_sidecar_forms(tmp_path, form):
  photo = _photo(tmp_path)
  write(tmp_path / 'IMG_1.xmp', crs_xmp(EXAMPLE, form=form))
  info = metadata.read_photo(photo)
  assert info.status == 'cropped' and info.source == str(tmp_path / 'IMG_1.xmp')
  assert_crop(info.crop, (0.4, 0.3, 0.9, 0.8, -10))


@pytest.mark.parametrize('name', ['IMG_1.jpg', 'IMG_1.png', 'IMG_1.tif', 'IMG_1.webp'])
def test_embedded_xmp(tmp_path, name):
  photo = _photo(tmp_path, name, xmp=crs_xmp(EXAMPLE, packet=True))
  info = metadata.read_photo(photo)
  assert info.status == 'cropped' and info.source == 'embedded'
  assert_crop(info.crop, (0.4, 0.3, 0.9, 0.8, -10))


@pytest.mark.parametrize('name', ['IMG_1.jpg', 'IMG_1.tif', 'IMG_1.png', 'IMG_1.webp'])
def test_embedded_xmp_with_orientation_6(tmp_path, name):
  # The photo is stored 300x200 and shown turned 90 degrees clockwise (200x300).
  photo = _photo(tmp_path, name, xmp=crs_xmp(EXAMPLE), orientation=6)
  info = metadata.read_photo(photo)
  assert info.orientation == 6 and info.size == (200, 300) and info.stored_size == (300, 200)
  assert_crop(info.crop, (0.2, 0.4, 0.7, 0.9, -10))


def test_jpeg_extended_xmp(tmp_path):
  guid = b'0123456789ABCDEF0123456789ABCDEF'
  main = crs_xmp({}, has_crop=None, extra='').replace(
      '<rdf:Description rdf:about=""',
      '<rdf:Description rdf:about="" xmlns:xmpNote="http://ns.adobe.com/xmp/note/" '
      f'xmpNote:HasExtendedXMP="{guid.decode()}"').encode()
  extended = crs_xmp({'CropLeft': '0.1', 'CropTop': '0.2', 'CropRight': '0.5', 'CropBottom': '0.6'}).encode()
  half = len(extended) // 2
  segments = b''
  for payload in (b'http://ns.adobe.com/xap/1.0/\x00' + main,
                  *(b'http://ns.adobe.com/xmp/extension/\x00' + guid + struct.pack('>II', len(extended), off)
                    + extended[off:off + n] for off, n in ((half, len(extended) - half), (0, half)))):
    segments += b'\xff\xe1' + struct.pack('>H', len(payload) + 2) + payload
  plain = image_bytes('JPEG')
  photo = write(tmp_path / 'ext.jpg', plain[:2] + segments + plain[2:])
  assert_crop(metadata.read_photo(photo).crop, (0.1, 0.2, 0.5, 0.6, 0))


def test_sidecar_precedence(tmp_path):
  photo = _photo(tmp_path, xmp=crs_xmp({'CropLeft': '0.1', 'CropRight': '0.2'}))
  assert_crop(metadata.read_photo(photo).crop, (0.1, 0, 0.2, 1, 0))
  write(tmp_path / 'IMG_1.xmp', crs_xmp({'CropLeft': '0.3', 'CropRight': '0.4'}))
  assert_crop(metadata.read_photo(photo).crop, (0.3, 0, 0.4, 1, 0))   # sidecar over embedded
  write(tmp_path / 'IMG_1.jpg.xmp', crs_xmp({'CropLeft': '0.5', 'CropRight': '0.6'}))
  assert_crop(metadata.read_photo(photo).crop, (0.5, 0, 0.6, 1, 0))   # photo.ext.xmp over photo.xmp
  # A sidecar without crop information (e.g. darktable's, no crop module) does not hide the next one.
  write(tmp_path / 'IMG_1.jpg.xmp', crs_xmp({'tiff:Orientation': '1'}, has_crop=None))
  assert_crop(metadata.read_photo(photo).crop, (0.3, 0, 0.4, 1, 0))


def test_sidecar_names_are_case_insensitive(tmp_path):
  photo = _photo(tmp_path, 'IMG_2.JPG')
  write(tmp_path / 'IMG_2.XMP', crs_xmp({'CropLeft': '0.3', 'CropRight': '0.4'}))
  assert_crop(metadata.read_photo(photo).crop, (0.3, 0, 0.4, 1, 0))


def test_shared_basename_sidecar(tmp_path):
  # IMG_1.xmp next to IMG_1.jpg and IMG_1.cr2: it belongs to the one it names.
  photo = _photo(tmp_path)
  write(tmp_path / 'IMG_1.cr2', b'raw')
  write(tmp_path / 'IMG_1.xmp', crs_xmp({'CropLeft': '0.3', 'CropRight': '0.4'}))
  assert metadata.read_photo(photo).status == 'no crop'  # ambiguous: not used
  write(tmp_path / 'IMG_1.xmp', crs_xmp({'CropLeft': '0.3', 'CropRight': '0.4',
                                         'photoshop:SidecarForExtension': 'CR2'}))
  assert metadata.read_photo(photo).status == 'no crop'
  write(tmp_path / 'IMG_1.xmp', crs_xmp({'CropLeft': '0.3', 'CropRight': '0.4',
                                         'photoshop:SidecarForExtension': 'JPG'}))
  assert_crop(metadata.read_photo(photo).crop, (0.3, 0, 0.4, 1, 0))


def test_exif_orientation_wins_over_xmp(tmp_path):
  photo = _photo(tmp_path, orientation=6)
  write(tmp_path / 'IMG_1.xmp', crs_xmp({'CropLeft': '0.1', 'CropRight': '0.5', 'tiff:Orientation': '8'}))
  info = metadata.read_photo(photo)
  assert info.orientation == 6
  assert_crop(info.crop, (0, 0.1, 1, 0.5, 0))
  plain = _photo(tmp_path, 'IMG_2.jpg')  # no EXIF orientation: the crop's packet says
  write(tmp_path / 'IMG_2.xmp', crs_xmp({'CropLeft': '0.1', 'CropRight': '0.5', 'tiff:Orientation': '8'}))
  info = metadata.read_photo(plain)
  assert info.orientation == 8
  assert_crop(info.crop, (0, 0.5, 1, 0.9, 0))
  # Pillow's fallback to the embedded XMP orientation does not hide the sidecar's.
  embedded = _photo(tmp_path, 'IMG_3.jpg', xmp=crs_xmp({'tiff:Orientation': '3'}, has_crop=None))
  write(tmp_path / 'IMG_3.xmp', crs_xmp({'CropLeft': '0.1', 'CropRight': '0.5', 'tiff:Orientation': '8'}))
  assert metadata.read_photo(embedded).orientation == 8


def test_no_crop_and_already_applied(tmp_path):
  assert metadata.read_photo(_photo(tmp_path, 'a.jpg')).status == 'no crop'
  assert metadata.read_photo(_photo(tmp_path, 'b.jpg', xmp=crs_xmp(EXAMPLE, has_crop='False'))).status == 'no crop'
  full = {'CropLeft': '0', 'CropTop': '0', 'CropRight': '1', 'CropBottom': '1', 'CropAngle': '0'}
  assert metadata.read_photo(_photo(tmp_path, 'c.jpg', xmp=crs_xmp(full))).status == 'no crop'
  applied = _photo(tmp_path, 'd.jpg', xmp=crs_xmp({**EXAMPLE, 'AlreadyApplied': 'True'}))
  info = metadata.read_photo(applied)
  assert info.status == 'already applied' and info.crop is None


def test_capture_time_and_edits(tmp_path):
  photo = _photo(tmp_path, 'a.jpg', xmp=crs_xmp({**EXAMPLE, 'Exposure2012': '+0.35'}),
                 when='2020:06:01 12:34:56')
  info = metadata.read_photo(photo)
  assert info.capture_time == '2020-06-01T12:34:56' and info.edits == {'exposure': 0.35}
  photo = _photo(tmp_path, 'b.jpg', xmp=crs_xmp({**EXAMPLE, 'exif:DateTimeOriginal': '2019-05-04T03:02:01+02:00'}))
  assert metadata.read_photo(photo).capture_time == '2019-05-04T03:02:01+02:00'


@pytest.mark.parametrize('text', ['<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF', BILLION_LAUGHS,
                                  EXTERNAL_ENTITY, 'not xml at all'])
def test_bad_xml_sidecar(tmp_path, text):
  photo = _photo(tmp_path)
  write(tmp_path / 'IMG_1.xmp', text)
  with pytest.raises(metadata.XMPError) as e:
    metadata.read_photo(photo)
  assert e.value.reason == 'bad XML' and e.value.path == str(tmp_path / 'IMG_1.xmp')


def test_bad_embedded_xml_names_the_photo(tmp_path):
  photo = _photo(tmp_path, xmp=BILLION_LAUGHS)
  with pytest.raises(metadata.XMPError, match='IMG_1.jpg'):
    metadata.read_photo(photo)


@pytest.mark.parametrize('fields', [
    {'CropLeft': 'NaN', 'CropRight': '0.5'},
    {'CropLeft': 'nan', 'CropRight': '0.5'},
    {'CropLeft': '0.1', 'CropRight': '1.5'},
    {'CropLeft': '-0.2', 'CropRight': '0.5'},
    {'CropLeft': '0.8', 'CropRight': '0.2'},             # inverted
    {'CropTop': '0.6', 'CropBottom': '0.6'},             # empty
    {'CropLeft': 'abc'},
    {'CropLeft': 'inf'},
    {'CropLeft': '0.1', 'CropAngle': '60'},
    {'CropLeft': '0.02', 'CropTop': '0.02', 'CropRight': '0.98', 'CropBottom': '0.98', 'CropAngle': '20'},
])
def test_invalid_crop_values(tmp_path, fields):
  photo = _photo(tmp_path)
  write(tmp_path / 'IMG_1.xmp', crs_xmp(fields))
  with pytest.raises(metadata.CropValueError) as e:
    metadata.read_photo(photo)
  assert e.value.reason == 'invalid crop values' and e.value.path == str(photo)


def test_darktable_crop(tmp_path):
  photo = _photo(tmp_path)
  params = struct.pack('<4f2i', 0.1, 0.2, 0.7, 0.9, 0, 0)
  gz = 'gz12' + base64.b64encode(zlib.compress(params)).decode()
  later = struct.pack('<4f2i', 0.3, 0.3, 0.4, 0.4, 0, 0).hex()

  def sidecar(crop_params, history_end=2, enabled='1'):
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:darktable="http://darktable.sf.net/" '
        f'darktable:history_end="{history_end}"><darktable:history><rdf:Seq>'
        '<rdf:li darktable:num="0" darktable:operation="flip" darktable:enabled="1" darktable:params="ffffffff"/>'
        f'<rdf:li darktable:num="1" darktable:operation="crop" darktable:enabled="{enabled}" '
        f'darktable:params="{crop_params}"/>'
        f'<rdf:li darktable:num="2" darktable:operation="crop" darktable:enabled="1" darktable:params="{later}"/>'
        '</rdf:Seq></darktable:history></rdf:Description></rdf:RDF></x:xmpmeta>')

  for p in (params.hex(), gz):
    write(tmp_path / 'IMG_1.jpg.xmp', sidecar(p))
    assert_crop(metadata.read_photo(photo).crop, (0.1, 0.2, 0.7, 0.9, 0), 1e-6)
  write(tmp_path / 'IMG_1.jpg.xmp', sidecar(gz, history_end=3))  # the later entry applies
  assert_crop(metadata.read_photo(photo).crop, (0.3, 0.3, 0.4, 0.4, 0), 1e-6)
  write(tmp_path / 'IMG_1.jpg.xmp', sidecar(gz, enabled='0'))
  assert metadata.read_photo(photo).status == 'no crop'


# ----------------------------------------------------------------------------- writing

@pytest.mark.parametrize('orientation,angle', [(1, 0.0), (1, -10.0), (6, 7.5), (8, -3.0), (3, 12.0),
                                               (2, 4.0), (5, -6.0), (7, 1.0)])
@pytest.mark.parametrize('in_exif', [True, False])
def test_write_read_round_trip(tmp_path, orientation, angle, in_exif):
  photo = _photo(tmp_path, orientation=orientation if in_exif else 1, size=(320, 180))
  crop = Crop(0.25, 0.2, 0.7, 0.75, angle)
  path = metadata.write_sidecar(photo, crop, orientation=None if in_exif else orientation)
  assert path == tmp_path / 'IMG_1.xmp'
  info = metadata.read_photo(photo)
  assert info.status == 'cropped' and info.orientation == orientation
  assert_crop(info.crop, crop.as_tuple(), 2e-6)


def test_write_keeps_other_fields(tmp_path):
  photo = _photo(tmp_path)
  write(tmp_path / 'IMG_1.xmp', crs_xmp(
      {'crs:Exposure2012': '+0.50', 'CropLeft': '0.9'}, form='element', has_crop=None,
      extra='<dc:title xmlns:dc="http://purl.org/dc/elements/1.1/"><rdf:Alt><rdf:li xml:lang="x-default">'
            'Harbour</rdf:li></rdf:Alt></dc:title><my:Rating xmlns:my="urn:example:mine">4</my:Rating>'))
  metadata.write_sidecar(photo, Crop(0.1, 0.2, 0.6, 0.7))
  text = (tmp_path / 'IMG_1.xmp').read_text()
  assert 'Harbour' in text and '<my:Rating' in text and 'dc:title' in text
  assert text.count('CropLeft') == 1
  info = metadata.read_photo(photo)
  assert info.edits == {'exposure': 0.5}
  assert_crop(info.crop, (0.1, 0.2, 0.6, 0.7, 0))
  metadata.write_sidecar(photo, None)
  assert metadata.read_photo(photo).status == 'no crop'


def test_write_refuses_another_files_sidecar(tmp_path):
  photo = _photo(tmp_path)
  write(tmp_path / 'IMG_1.xmp', crs_xmp({'photoshop:SidecarForExtension': 'CR2'}, has_crop=None))
  before = (tmp_path / 'IMG_1.xmp').read_bytes()
  with pytest.raises(metadata.MetadataError, match='CR2'):
    metadata.write_sidecar(photo, Crop(0.1, 0.1, 0.9, 0.9))
  assert (tmp_path / 'IMG_1.xmp').read_bytes() == before
  path = metadata.write_sidecar(photo, Crop(0.1, 0.1, 0.9, 0.9), style='ext')
  assert path.name == 'IMG_1.jpg.xmp'
  assert_crop(metadata.read_photo(photo).crop, (0.1, 0.1, 0.9, 0.9, 0))


def test_field_table_is_the_one_place():
  names = [f.name for f in metadata.FIELDS]
  assert len(names) == len(set(names))
  assert {f.tag for f in metadata.FIELDS if f.role == 'crop'} == {
      'crs:HasCrop', 'crs:CropLeft', 'crs:CropTop', 'crs:CropRight', 'crs:CropBottom', 'crs:CropAngle'}
  assert metadata.FIELDS_BY_NAME['exposure'].value(' +1.25 ') == 1.25
  with pytest.raises(ValueError):
    metadata.FIELDS_BY_NAME['crop_angle'].value('46')


def test_write_sidecar_of_a_raw_file(tmp_path):
  raw = write(tmp_path / 'DSC_1.NEF', b'not decodable here')
  with pytest.raises(metadata.MetadataError, match='stored_size'):
    metadata.write_sidecar(raw, Crop(0.1, 0.1, 0.9, 0.9))
  path = metadata.write_sidecar(raw, Crop(0.1, 0.2, 0.9, 0.8, 5), stored_size=(600, 400), orientation=6)
  packet = metadata.parse_xmp(path.read_bytes(), str(path))
  assert packet.get('orientation') == 6 and packet.get('sidecar_for') == 'NEF'
  l, t, r, b, a = (packet.get(n) for n in ('crop_left', 'crop_top', 'crop_right', 'crop_bottom', 'crop_angle'))
  stored = metadata.lightroom_to_crop(l, t, r, b, a, 600, 400)
  assert_crop(metadata.orient_crop(stored, 6), (0.1, 0.2, 0.9, 0.8, 5), 2e-6)


def test_fit_in_frame_shrinks_a_turned_crop_just_enough_about_its_centre():
  rng = np.random.default_rng(7)
  shrunk = 0
  for _ in range(300):
    w, h = int(rng.integers(50, 400)), int(rng.integers(50, 400))
    l, t = rng.uniform(0, 0.5, 2)
    r, b = l + rng.uniform(0.05, 1 - l), t + rng.uniform(0.05, 1 - t)
    crop = metadata.Crop(l, t, r, b, float(rng.uniform(-45, 45)))
    fitted = metadata.fit_in_frame(crop, w, h)
    metadata.check_crop(fitted, w, h)  # inside the frame: no error
    centre = lambda c: ((c.left + c.right) / 2, (c.top + c.bottom) / 2)
    np.testing.assert_allclose(centre(fitted), centre(crop), atol=1e-12)
    ratio = (fitted.right - fitted.left) / (crop.right - crop.left)
    assert ratio == pytest.approx((fitted.bottom - fitted.top) / (crop.bottom - crop.top))
    assert fitted.angle == crop.angle and ratio <= 1
    if ratio < 1:  # just enough: a corner touches the frame
      shrunk += 1
      xy = np.array(metadata.corners(fitted, w, h)) / [w, h]
      assert min(xy.min(), 1 - xy.max()) == pytest.approx(0, abs=1e-6)
    else:
      assert fitted == crop
  assert 50 < shrunk < 300
  with pytest.raises(metadata.CropValueError, match='centre'):
    metadata.fit_in_frame(metadata.Crop(1.2, 0.1, 1.4, 0.3, 5.0), 100, 100)
