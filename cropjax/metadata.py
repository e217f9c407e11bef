"""Crops recorded by photo editors in XMP metadata: read, convert, write.

    photo = read_photo('IMG_0042.jpg')     # PhotoMetadata
    photo.status                            # 'cropped', 'no crop' or 'already applied'
    photo.crop                              # Crop(left, top, right, bottom, angle), upright frame
    write_sidecar('IMG_0042.jpg', Crop(0.1, 0.1, 0.9, 0.8, angle=2.5))

The canonical label, used everywhere in cropjax, is the crop's own rectangle as
it would be at angle 0 (same centre, same width and height in pixels), as left,
top, right, bottom fractions of the *upright* image (EXIF Orientation applied),
plus the angle in degrees with Lightroom's sign: positive turns the crop
rectangle clockwise on screen. To cut the crop out of the upright image, turn
that rectangle by `angle` about its centre in pixel space (x right, y down); see
`corners`.

Adobe Camera Raw / Lightroom (`crs`) store CropLeft/Top/Right/Bottom as fractions
of the stored (unrotated) pixel array; with a CropAngle, (CropLeft, CropTop) and
(CropRight, CropBottom) are two opposite corners of the turned rectangle.
`lightroom_to_crop` and `crop_to_lightroom` convert; `orient_crop` maps the
stored frame to the upright one (rotations keep the angle, mirrors negate it).

Where the crop is read from, in order of precedence (the first source holding
crop information wins; every source of the photo must parse, otherwise the photo
is refused with 'bad XML'):

1. `photo.ext.xmp` (darktable, digiKam): it names exactly one file.
2. `photo.xmp` (Adobe): a raw file and a JPEG of the same shot share this name,
   so it is used for `photo.ext` only if its `photoshop:SidecarForExtension` is
   `ext`, or, when it names no extension, if no other photo or raw file in the
   folder has the stem `photo`.
3. XMP embedded in the file (JPEG APP1 including extended XMP, PNG iTXt, TIFF
   tag 700, WebP 'XMP ' chunk, tag 700 of a DNG's or other raw file's IFD0).

A sidecar wins over embedded XMP because a sidecar is written by an editor that
leaves the original alone, after the camera or an export wrote the embedded one.
darktable's `crop` module (in `photo.ext.xmp`) is read when no `crs` crop is there.

The orientation is the image's EXIF Orientation (what viewers show; the Metadata
Working Group's rule when EXIF and XMP disagree), else the `tiff:Orientation` of
the packet that gave the crop (a raw file's sidecar), else of any other packet,
else 1. Raw files (RAW_EXTENSIONS, read with rawpy through `cropjax.library.raw`)
are never rewritten, so an editor records a rotation in their XMP: for them the
`tiff:Orientation` of the packet that gave the crop comes first, then of any
other packet, then the file's own orientation (LibRaw's). Their stored frame is
the one `cropjax.library.raw` describes (the sensor's visible area, narrowed to
a DNG's default crop): the frame Camera Raw's crop fractions refer to.

All XML is parsed with defusedxml with DTDs forbidden: entity expansion and
external entities are refused ('bad XML'), never expanded.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import os
import re
import struct
import tempfile
import xml.etree.ElementTree as ET  # building and serializing only; parsing goes through defusedxml
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import defusedxml
import defusedxml.ElementTree as SafeET
from PIL import Image

NAMESPACES: dict[str, str] = {
    'x': 'adobe:ns:meta/',
    'rdf': 'http://www.w3.org/1999/02/22-rdf-syntax-ns#',
    'crs': 'http://ns.adobe.com/camera-raw-settings/1.0/',
    'tiff': 'http://ns.adobe.com/tiff/1.0/',
    'exif': 'http://ns.adobe.com/exif/1.0/',
    'xmp': 'http://ns.adobe.com/xap/1.0/',
    'photoshop': 'http://ns.adobe.com/photoshop/1.0/',
    'xmpNote': 'http://ns.adobe.com/xmp/note/',
    'darktable': 'http://darktable.sf.net/',
    'dc': 'http://purl.org/dc/elements/1.1/',
    'xmpMM': 'http://ns.adobe.com/xap/1.0/mm/',
    'aux': 'http://ns.adobe.com/exif/1.0/aux/',
}
_RDF = '{%s}' % NAMESPACES['rdf']

IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.jpe', '.jfif', '.tif', '.tiff', '.png', '.webp'})
# Photos Pillow cannot decode (raw, HEIF, ...): they count as siblings for the
# shared `photo.xmp` rule. Raw files (RAW_EXTENSIONS) are read through rawpy
# (`cropjax.library.raw`, the optional extra `.[raw]`); the others are reported
# as 'unsupported format'.
OTHER_PHOTO_EXTENSIONS = frozenset({
    '.3fr', '.arw', '.cr2', '.cr3', '.crw', '.dcr', '.dng', '.erf', '.heic', '.heif', '.avif',
    '.iiq', '.kdc', '.mef', '.mos', '.mrw', '.nef', '.nrw', '.orf', '.pef', '.psd', '.raf',
    '.raw', '.rw2', '.rwl', '.sr2', '.srf', '.srw', '.x3f', '.jxl'})
PHOTO_EXTENSIONS = IMAGE_EXTENSIONS | OTHER_PHOTO_EXTENSIONS
# The raw formats LibRaw decodes (not Sigma's X3F, which LibRaw dropped).
RAW_EXTENSIONS = frozenset({
    '.3fr', '.arw', '.cr2', '.cr3', '.crw', '.dcr', '.dng', '.erf', '.iiq', '.kdc', '.mef', '.mos',
    '.mrw', '.nef', '.nrw', '.orf', '.pef', '.raf', '.raw', '.rw2', '.rwl', '.sr2', '.srf', '.srw'})

EPSILON = 1e-6          # rounding noise clipped off a crop's edges
CORNER_TOLERANCE = 2e-3  # how far (fraction of the side) a turned crop's corner may leave the frame
MAX_ANGLE = 45.0


# ----------------------------------------------------------------------------- errors

class MetadataError(ValueError):
  """A photo's metadata cannot be used; `reason` is the annotator's skip reason."""
  reason = 'metadata'

  def __init__(self, path: str | os.PathLike, problem: str):
    self.path, self.problem = os.fspath(path), problem
    super().__init__(f'{self.path}: {problem}')


class XMPError(MetadataError):
  """Malformed or hostile XML."""
  reason = 'bad XML'


class CropValueError(MetadataError):
  """Crop values that are missing, out of range, inverted or not finite."""
  reason = 'invalid crop values'


class ImageReadError(MetadataError):
  """Not an image Pillow can read, or a truncated / corrupt one."""
  reason = 'unreadable image'


# ----------------------------------------------------------------------------- field table

def _parse_bool(text: str) -> bool:
  t = text.strip().lower()
  if t in ('true', '1'):
    return True
  if t in ('false', '0'):
    return False
  raise ValueError(f'not a boolean: {text!r}')


def _parse_float(text: str) -> float:
  value = float(text.strip())
  if not math.isfinite(value):
    raise ValueError(f'not finite: {text!r}')
  return value


def _parse_int(text: str) -> int:
  return int(text.strip())


def _parse_str(text: str) -> str:
  return text.strip()


@dataclasses.dataclass(frozen=True)
class Field:
  """One XMP property cropjax extracts.

  `role` is 'crop' (makes up the crop label), 'meta' (orientation, time, ...) or
  'edit' (recorded as is in the annotator's manifest under `edits`).
  """
  name: str
  tag: str                 # 'prefix:LocalName', prefix from NAMESPACES
  parse: Callable[[str], Any]
  valid: tuple[float, float] | None = None
  role: str = 'meta'

  @property
  def qname(self) -> str:
    prefix, local = self.tag.split(':')
    return '{%s}%s' % (NAMESPACES[prefix], local)

  def value(self, text: str) -> Any:
    """The parsed value; ValueError when unparsable or outside `valid`."""
    value = self.parse(text)
    if self.valid is not None and not (self.valid[0] - EPSILON <= value <= self.valid[1] + EPSILON):
      raise ValueError(f'{self.tag}={text.strip()!r} outside [{self.valid[0]:g}, {self.valid[1]:g}]')
    return value


# Adding another edit to the dataset is one line here (role='edit').
FIELDS: tuple[Field, ...] = (
    Field('has_crop', 'crs:HasCrop', _parse_bool, role='crop'),
    Field('crop_left', 'crs:CropLeft', _parse_float, (0.0, 1.0), role='crop'),
    Field('crop_top', 'crs:CropTop', _parse_float, (0.0, 1.0), role='crop'),
    Field('crop_right', 'crs:CropRight', _parse_float, (0.0, 1.0), role='crop'),
    Field('crop_bottom', 'crs:CropBottom', _parse_float, (0.0, 1.0), role='crop'),
    Field('crop_angle', 'crs:CropAngle', _parse_float, (-MAX_ANGLE, MAX_ANGLE), role='crop'),
    Field('already_applied', 'crs:AlreadyApplied', _parse_bool),
    Field('orientation', 'tiff:Orientation', _parse_int, (1, 8)),
    Field('sidecar_for', 'photoshop:SidecarForExtension', _parse_str),
    Field('date_time_original', 'exif:DateTimeOriginal', _parse_str),
    Field('create_date', 'xmp:CreateDate', _parse_str),
    Field('date_created', 'photoshop:DateCreated', _parse_str),
    Field('has_extended_xmp', 'xmpNote:HasExtendedXMP', _parse_str),
    Field('exposure', 'crs:Exposure2012', _parse_float, (-10.0, 10.0), role='edit'),
)
FIELDS_BY_NAME = {f.name: f for f in FIELDS}
_FIELDS_BY_QNAME = {f.qname: f for f in FIELDS}


# ----------------------------------------------------------------------------- geometry

@dataclasses.dataclass(frozen=True)
class Crop:
  """The canonical crop: the unturned rectangle (fractions) and the angle (degrees)."""
  left: float
  top: float
  right: float
  bottom: float
  angle: float = 0.0

  def as_tuple(self) -> tuple[float, float, float, float, float]:
    return (self.left, self.top, self.right, self.bottom, self.angle)

  def to_json(self) -> dict[str, float]:
    return {k: round(float(v), 8) for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_json(cls, record: Mapping[str, float]) -> Crop:
    return cls(*(float(record[k]) for k in ('left', 'top', 'right', 'bottom')),
               angle=float(record.get('angle', 0.0)))

  def is_full_frame(self) -> bool:
    return (abs(self.angle) < EPSILON and self.left <= EPSILON and self.top <= EPSILON
            and self.right >= 1 - EPSILON and self.bottom >= 1 - EPSILON)


def _rotate(x: float, y: float, degrees: float) -> tuple[float, float]:
  """Turns (x, y) by `degrees` in pixel space (y down): positive is clockwise on screen."""
  a = math.radians(degrees)
  c, s = math.cos(a), math.sin(a)
  return c * x - s * y, s * x + c * y


def lightroom_to_crop(left: float, top: float, right: float, bottom: float, angle: float,
                      width: int, height: int) -> Crop:
  """Lightroom's corner form -> canonical crop, both in the same frame of `width`x`height` px."""
  x1, y1, x2, y2 = left * width, top * height, right * width, bottom * height
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  hw, hh = _rotate((x2 - x1) / 2, (y2 - y1) / 2, -angle)  # half-diagonal turned back
  return Crop((cx - hw) / width, (cy - hh) / height, (cx + hw) / width, (cy + hh) / height, angle)


def crop_to_lightroom(crop: Crop, width: int, height: int) -> tuple[float, float, float, float, float]:
  """Canonical crop -> Lightroom's (CropLeft, CropTop, CropRight, CropBottom, CropAngle)."""
  cx, cy = (crop.left + crop.right) / 2 * width, (crop.top + crop.bottom) / 2 * height
  dx, dy = _rotate((crop.right - crop.left) / 2 * width, (crop.bottom - crop.top) / 2 * height,
                   crop.angle)
  return ((cx - dx) / width, (cy - dy) / height, (cx + dx) / width, (cy + dy) / height, crop.angle)


def corners(crop: Crop, width: int, height: int) -> list[tuple[float, float]]:
  """The turned crop's corners in pixels: top-left, top-right, bottom-right, bottom-left."""
  cx, cy = (crop.left + crop.right) / 2 * width, (crop.top + crop.bottom) / 2 * height
  hw, hh = (crop.right - crop.left) / 2 * width, (crop.bottom - crop.top) / 2 * height
  out = []
  for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
    dx, dy = _rotate(sx * hw, sy * hh, crop.angle)
    out.append((cx + dx, cy + dy))
  return out


def fit_in_frame(crop: Crop, width: int, height: int) -> Crop:
  """`crop` shrunk about its centre, its shape kept, just enough that the turned rectangle
  stays inside the width x height frame (what Lightroom's "constrain to image" does as a
  crop is turned); unchanged where it already does. The centre must lie inside the frame."""
  cx, cy = (crop.left + crop.right) / 2 * width, (crop.top + crop.bottom) / 2 * height
  if not (0 <= cx <= width and 0 <= cy <= height):
    raise CropValueError('', f'crop centre ({cx:g}, {cy:g}) px is outside the {width}x{height} frame')
  scale = 1.0
  for x, y in corners(crop, width, height):
    for offset, room in ((x - cx, (width - cx) if x > cx else cx),
                         (y - cy, (height - cy) if y > cy else cy)):
      if abs(offset) > 1e-12:
        scale = min(scale, room / abs(offset))
  if scale >= 1.0:
    return crop
  scale *= 1 - 1e-9  # rounding never puts a corner a hair outside
  hw, hh = (crop.right - crop.left) / 2 * scale, (crop.bottom - crop.top) / 2 * scale
  u, v = cx / width, cy / height
  return Crop(u - hw, v - hh, u + hw, v + hh, crop.angle)


# EXIF Orientation: where a stored point (u, v) (fractions) appears in the upright image.
_ORIENT: dict[int, Callable[[float, float], tuple[float, float]]] = {
    1: lambda u, v: (u, v),
    2: lambda u, v: (1 - u, v),          # mirrored left-right
    3: lambda u, v: (1 - u, 1 - v),      # turned 180
    4: lambda u, v: (u, 1 - v),          # mirrored top-bottom
    5: lambda u, v: (v, u),              # transposed
    6: lambda u, v: (1 - v, u),          # turned 90 clockwise to display
    7: lambda u, v: (1 - v, 1 - u),      # transversed
    8: lambda u, v: (v, 1 - u),          # turned 90 counter-clockwise to display
}
INVERSE_ORIENTATION = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}
MIRRORING = frozenset({2, 4, 5, 7})
TRANSPOSING = frozenset({5, 6, 7, 8})
PIL_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def _check_orientation(orientation: int) -> int:
  if orientation not in _ORIENT:
    raise ValueError(f'EXIF orientation must be 1 to 8, got {orientation!r}')
  return orientation


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
  """(width, height) after applying `orientation` to a stored image of `size`."""
  return (size[1], size[0]) if _check_orientation(orientation) in TRANSPOSING else tuple(size)


def orient_crop(crop: Crop, orientation: int) -> Crop:
  """A crop of the stored pixel array -> the same crop in the upright image."""
  f = _ORIENT[_check_orientation(orientation)]
  (u1, v1), (u2, v2) = f(crop.left, crop.top), f(crop.right, crop.bottom)
  angle = -crop.angle if orientation in MIRRORING else crop.angle
  return Crop(min(u1, u2), min(v1, v2), max(u1, u2), max(v1, v2), angle + 0.0)


def unorient_crop(crop: Crop, orientation: int) -> Crop:
  """A crop of the upright image -> the same crop in the stored pixel array."""
  return orient_crop(crop, INVERSE_ORIENTATION[_check_orientation(orientation)])


def orient_image(image: Image.Image, orientation: int) -> Image.Image:
  """The stored pixels turned/mirrored to the upright image."""
  method = PIL_TRANSPOSE.get(_check_orientation(orientation))
  return image if method is None else image.transpose(method)


def check_crop(crop: Crop, width: int, height: int, where: str | os.PathLike = '') -> Crop:
  """`crop` with rounding noise clipped; CropValueError if it is not a valid crop.

  Valid: finite, |angle| <= 45, 0 <= left < right <= 1 and 0 <= top < bottom <= 1,
  and, with an angle, every corner of the turned rectangle inside the frame
  within CORNER_TOLERANCE (Lightroom never makes a crop that leaves the photo).
  """
  values = crop.as_tuple()
  if not all(math.isfinite(v) for v in values):
    raise CropValueError(where, f'crop values are not finite: {values}')
  if abs(crop.angle) > MAX_ANGLE + EPSILON:
    raise CropValueError(where, f'crop angle {crop.angle:g} outside [-45, 45]')
  l, t, r, b = values[:4]
  if min(l, t) < -EPSILON or max(r, b) > 1 + EPSILON:
    raise CropValueError(where, f'crop (left {l:.6g}, top {t:.6g}, right {r:.6g}, bottom {b:.6g}) '
                         'leaves the frame')
  l, t, r, b = max(l, 0.0), max(t, 0.0), min(r, 1.0), min(b, 1.0)
  if not (l < r and t < b):
    raise CropValueError(where, f'crop is empty or inverted (left {l:.6g}, top {t:.6g}, '
                         f'right {r:.6g}, bottom {b:.6g})')
  crop = Crop(l, t, r, b, crop.angle)
  if crop.angle:
    for x, y in corners(crop, width, height):
      if not (-CORNER_TOLERANCE <= x / width <= 1 + CORNER_TOLERANCE
              and -CORNER_TOLERANCE <= y / height <= 1 + CORNER_TOLERANCE):
        raise CropValueError(where, f'crop turned by {crop.angle:g} degrees has a corner outside '
                             f'the frame ({x / width:.4f}, {y / height:.4f})')
  return crop


# ----------------------------------------------------------------------------- XMP packets

@dataclasses.dataclass
class Packet:
  """The FIELDS values (raw text) found in one XMP packet, and where it came from."""
  source: str
  embedded: bool = False
  values: dict[str, str] = dataclasses.field(default_factory=dict)
  darktable: list[dict[str, str]] = dataclasses.field(default_factory=list)
  darktable_history_end: int | None = None

  def get(self, name: str, where: str | os.PathLike = '') -> Any:
    """The parsed value of field `name`, None when absent; CropValueError for bad crop fields.

    An unparsable value of a field that is not part of the crop is treated as absent.
    """
    text = self.values.get(name)
    if text is None:
      return None
    field = FIELDS_BY_NAME[name]
    try:
      return field.value(text)
    except ValueError as e:
      if field.role == 'crop':
        raise CropValueError(where or self.source, str(e)) from None
      return None

  def has_crop_info(self) -> bool:
    return (any(FIELDS_BY_NAME[n].role == 'crop' for n in self.values)
            or self.get('already_applied') is True or _darktable_op(self, 'crop') is not None)


def parse_xmp(data: bytes | str, source: str = '<xmp>') -> Packet:
  """Reads the FIELDS (attribute or element form) of one XMP packet; XMPError if bad."""
  if isinstance(data, str):
    data = data.encode('utf-8')
  data = data.strip(b'\x00 \t\r\n')
  try:
    root = SafeET.fromstring(data, forbid_dtd=True)
  except defusedxml.DTDForbidden as e:
    raise XMPError(source, f'hostile XML refused: a document type declaration ({e.name!r}); '
                   'XMP has none, and its entities could expand without bound') from None
  except defusedxml.DefusedXmlException as e:
    raise XMPError(source, f'hostile XML refused ({type(e).__name__}: {e})') from None
  except (ET.ParseError, ValueError, UnicodeError) as e:
    raise XMPError(source, f'malformed XML ({e})') from None
  packet = Packet(source)
  rdfs = [root] if root.tag == _RDF + 'RDF' else list(root.iter(_RDF + 'RDF'))
  for rdf in rdfs:
    for desc in rdf.findall(_RDF + 'Description'):
      _read_description(desc, packet)
  return packet


def _read_description(desc: ET.Element, packet: Packet) -> None:
  for qname, text in desc.attrib.items():
    field = _FIELDS_BY_QNAME.get(qname)
    if field is not None:
      packet.values.setdefault(field.name, text)
  dt = '{%s}' % NAMESPACES['darktable']
  if dt + 'history_end' in desc.attrib:
    try:
      packet.darktable_history_end = int(desc.attrib[dt + 'history_end'])
    except ValueError:
      pass
  for child in desc:
    field = _FIELDS_BY_QNAME.get(child.tag)
    if field is not None and len(child) == 0:
      packet.values.setdefault(field.name, child.text or '')
    elif child.tag == dt + 'history_end':
      try:
        packet.darktable_history_end = int((child.text or '').strip())
      except ValueError:
        pass
    elif child.tag == dt + 'history':
      for li in child.iter(_RDF + 'li'):
        entry = {k[len(dt):]: v for k, v in li.attrib.items() if k.startswith(dt)}
        for sub in li:  # element form of the entry's fields
          if sub.tag.startswith(dt) and len(sub) == 0:
            entry.setdefault(sub.tag[len(dt):], (sub.text or '').strip())
        packet.darktable.append(entry)


# ----------------------------------------------------------------------------- darktable

def _darktable_op(packet: Packet, operation: str) -> dict[str, str] | None:
  """The last applied history entry of `operation` (num below history_end), or None."""
  found, found_num = None, -1
  for i, entry in enumerate(packet.darktable):
    try:
      num = int(entry.get('num', i))
    except ValueError:
      num = i
    if packet.darktable_history_end is not None and num >= packet.darktable_history_end:
      continue
    if entry.get('operation') == operation and num >= found_num:
      found, found_num = entry, num
  return found


def decode_darktable_params(text: str) -> bytes:
  """darktable's params: hex, or 'gz' + two digits + base64 of zlib-compressed bytes."""
  text = text.strip()
  if text.startswith('gz'):
    return zlib.decompress(base64.b64decode(text[4:]))
  return bytes.fromhex(text)


def encode_darktable_params(params: bytes, compress: bool = False) -> str:
  """The inverse of `decode_darktable_params` (for tests and the demo library)."""
  if compress:
    packed = zlib.compress(params)
    factor = min(99, len(params) // max(1, len(packed)))
    return f'gz{factor:02d}' + base64.b64encode(packed).decode('ascii')
  return params.hex()


def darktable_crop(packet: Packet, where: str | os.PathLike = '') -> Crop | None:
  """The crop of darktable's `crop` module, in the upright frame (it runs after `flip`).

  Its params start with cx, cy, cw, ch (floats: left, top, right, bottom). A
  manual `flip` or an enabled rotation (`ashift`, `clipping`) is not supported:
  CropValueError, rather than a wrong label.
  """
  entry = _darktable_op(packet, 'crop')
  if entry is None or entry.get('enabled', '1').strip() != '1':
    return None
  for op in ('clipping', 'ashift'):
    other = _darktable_op(packet, op)
    if other is not None and other.get('enabled', '1').strip() == '1':
      raise CropValueError(where or packet.source,
                           f"darktable '{op}' (rotation / perspective) is not supported")
  flip = _darktable_op(packet, 'flip')
  if flip is not None and flip.get('enabled', '1').strip() == '1':
    try:
      (orientation,) = struct.unpack('<i', decode_darktable_params(flip.get('params', ''))[:4])
    except (ValueError, struct.error, zlib.error):
      orientation = None
    if orientation != -1:  # -1: automatic, from the EXIF Orientation
      raise CropValueError(where or packet.source, "darktable manual 'flip' is not supported")
  try:
    cx, cy, cw, ch = struct.unpack('<4f', decode_darktable_params(entry.get('params', ''))[:16])
  except (ValueError, struct.error, zlib.error) as e:
    raise CropValueError(where or packet.source, f'darktable crop params unreadable ({e})') from None
  return Crop(float(cx), float(cy), float(cw), float(ch), 0.0)


# ----------------------------------------------------------------------------- embedded XMP

_JPEG_XMP = b'http://ns.adobe.com/xap/1.0/\x00'
_JPEG_XMP_EXT = b'http://ns.adobe.com/xmp/extension/\x00'


def _jpeg_xmp(data: bytes) -> tuple[bytes | None, dict[bytes, bytes]]:
  """Main XMP packet and extended XMP (GUID -> bytes) from a JPEG's APP1 segments."""
  main, chunks = None, {}
  i, n = 2, len(data)
  while i + 4 <= n:
    if data[i] != 0xFF:
      break
    marker = data[i + 1]
    if marker == 0xFF:  # fill byte
      i += 1
      continue
    if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
      i += 2
      continue
    if marker in (0xD9, 0xDA):  # end of image, start of scan: no more metadata
      break
    length = int.from_bytes(data[i + 2:i + 4], 'big')
    if length < 2:
      break
    segment = data[i + 4:i + 2 + length]
    if marker == 0xE1:
      if segment.startswith(_JPEG_XMP) and main is None:
        main = segment[len(_JPEG_XMP):]
      elif segment.startswith(_JPEG_XMP_EXT) and len(segment) >= 75:
        body = segment[len(_JPEG_XMP_EXT):]
        guid = body[:32]
        total, offset = int.from_bytes(body[32:36], 'big'), int.from_bytes(body[36:40], 'big')
        buf = chunks.setdefault(guid, bytearray(min(total, 1 << 26)))
        part = body[40:]
        buf[offset:offset + len(part)] = part
    i += 2 + length
  return main, {k: bytes(v) for k, v in chunks.items()}


def _png_xmp(data: bytes) -> bytes | None:
  i = 8
  while i + 12 <= len(data):
    length = int.from_bytes(data[i:i + 4], 'big')
    kind = data[i + 4:i + 8]
    body = data[i + 8:i + 8 + length]
    if kind == b'iTXt' and body.startswith(b'XML:com.adobe.xmp\x00'):
      rest = body[len(b'XML:com.adobe.xmp\x00'):]
      compressed = rest[:1] == b'\x01'
      rest = rest[2:]
      rest = rest[rest.index(b'\x00') + 1:]  # language tag
      rest = rest[rest.index(b'\x00') + 1:]  # translated keyword
      return zlib.decompress(rest) if compressed else rest
    if kind == b'IEND':
      break
    i += 12 + length
  return None


def _webp_xmp(data: bytes) -> bytes | None:
  i = 12
  while i + 8 <= len(data):
    kind, length = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], 'little')
    if kind == b'XMP ':
      return data[i + 8:i + 8 + length]
    i += 8 + length + (length & 1)
  return None


def embedded_xmp(data: bytes, image: Image.Image | None = None) -> list[bytes]:
  """The raw XMP packets inside an image file's bytes (main packet first)."""
  try:
    if data[:2] == b'\xff\xd8':
      main, extended = _jpeg_xmp(data)
      if main is None:
        return []
      guid = re.search(rb'HasExtendedXMP\s*(?:=\s*["\']|>)\s*([0-9A-Fa-f]{32})', main)
      ext = extended.get(guid.group(1).upper()) or extended.get(guid.group(1)) if guid else None
      return [main] + ([ext] if ext else [])
    if data[:8] == b'\x89PNG\r\n\x1a\n':
      found = _png_xmp(data)
    elif data[:4] == b'RIFF' and data[8:12] == b'WEBP':
      found = _webp_xmp(data)
    elif data[:4] in (b'II*\x00', b'MM\x00*'):
      im = image if image is not None else Image.open(io.BytesIO(data))
      found = getattr(im, 'tag_v2', {}).get(700)
      if isinstance(found, str):
        found = found.encode('utf-8')
    else:
      found = None
  except (ValueError, IndexError, zlib.error, OSError, SyntaxError):
    return []
  return [bytes(found)] if found else []


# ----------------------------------------------------------------------------- sidecars

class FolderIndex:
  """A folder's file names, indexed once for the sidecar lookups of all its photos."""

  def __init__(self, names: Iterable[str]):
    self.by_lower: dict[str, str] = {}
    self.stems: dict[str, int] = {}
    for n in sorted(names):
      self.by_lower.setdefault(n.lower(), n)
      p = Path(n)
      if p.suffix.lower() in PHOTO_EXTENSIONS:
        self.stems[p.stem.lower()] = self.stems.get(p.stem.lower(), 0) + 1

  @classmethod
  def of(cls, folder: str | os.PathLike, names: FolderIndex | Iterable[str] | None = None) -> FolderIndex:
    if isinstance(names, FolderIndex):
      return names
    if names is None:
      try:
        names = os.listdir(folder)
      except OSError:
        names = ()
    return cls(names)


def sidecars(photo: str | os.PathLike, names: FolderIndex | Iterable[str] | None = None
             ) -> tuple[Path | None, Path | None]:
  """(`photo.ext.xmp`, `photo.xmp`) next to `photo` (case-insensitive), None where missing.

  `names`, the folder's file names (or their FolderIndex), saves a directory listing.
  """
  photo = Path(photo)
  index = FolderIndex.of(photo.parent, names)
  ext_name = index.by_lower.get((photo.name + '.xmp').lower())
  base_name = index.by_lower.get((photo.stem + '.xmp').lower())
  return (photo.parent / ext_name if ext_name else None,
          photo.parent / base_name if base_name else None)


def _shares_stem(photo: Path, index: FolderIndex) -> bool:
  """Whether another photo or raw file in the folder has `photo`'s stem."""
  own = 1 if photo.suffix.lower() in PHOTO_EXTENSIONS else 0
  return index.stems.get(photo.stem.lower(), 0) > own


def read_xmp_file(path: str | os.PathLike, limit: int = 64 << 20) -> bytes:
  """The bytes of a sidecar (XMPError beyond `limit`, OSError if unreadable)."""
  with open(path, 'rb') as f:
    data = f.read(limit + 1)
  if len(data) > limit:
    raise XMPError(path, f'sidecar larger than {limit >> 20} MiB')
  return data


# ----------------------------------------------------------------------------- photos

@dataclasses.dataclass(frozen=True)
class PhotoMetadata:
  """What `read_photo` found for one photo."""
  path: str
  status: str                      # 'cropped', 'no crop' or 'already applied'
  crop: Crop | None                # upright frame; set when status == 'cropped'
  orientation: int
  stored_size: tuple[int, int]     # (width, height) of the pixel array in the file
  source: str | None               # the file the crop was read from, or 'embedded'
  capture_time: str | None         # ISO 8601, local time as recorded
  edits: dict[str, Any]            # role='edit' FIELDS found next to the crop

  @property
  def size(self) -> tuple[int, int]:
    """(width, height) of the upright image."""
    return upright_size(self.stored_size, self.orientation)


_EXIF_TIME = re.compile(r'^(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?(.*)$')


def normalize_time(text: Any) -> str | None:
  """EXIF ('2020:06:01 12:34:56') or XMP date-time -> '2020-06-01T12:34:56[+zone]', else None."""
  if not isinstance(text, str):
    return None
  m = _EXIF_TIME.match(text.strip().rstrip('\x00'))
  if not m:
    return None
  y, mo, d, h, mi, s, rest = m.groups()
  if y == '0000' or not (1 <= int(mo) <= 12 and 1 <= int(d) <= 31 and int(h) < 24 and int(mi) < 60):
    return None
  zone = ''
  z = re.match(r'^(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?$', rest.strip())
  if z and z.group(1):
    zone = z.group(1)
  return f'{y}-{mo}-{d}T{h}:{mi}:{s or "00"}{zone}'


def exif_info(image: Image.Image) -> tuple[int | None, str | None]:
  """(Orientation, DateTimeOriginal) from the image's EXIF, None where absent.

  Only EXIF proper (JPEG APP1, PNG eXIf, WebP EXIF, TIFF tags) counts, not the
  XMP `tiff:Orientation` Pillow falls back to. Call it before the image is
  loaded: Pillow turns TIFFs upright on load and drops their tag.
  """
  try:
    if image.format == 'TIFF':
      exif = image.getexif()
      orientation = getattr(image, 'tag_v2', {}).get(0x0112)
    else:
      exif = Image.Exif()
      raw = image.info.get('exif')
      if raw:
        exif.load(raw)
      orientation = exif.get(0x0112)
    ifd = exif.get_ifd(0x8769)
    when = ifd.get(0x9003) or ifd.get(0x9004) or exif.get(0x0132)
    offset = ifd.get(0x9011)
  except Exception:  # noqa: BLE001 -- malformed EXIF must not stop the run
    return None, None
  if isinstance(when, bytes):
    when = when.decode('ascii', 'replace')
  when = normalize_time(when)
  if when and isinstance(offset, str) and re.match(r'^[+-]\d{2}:\d{2}$', offset.strip()):
    when += offset.strip()
  if not isinstance(orientation, int) or orientation not in _ORIENT:
    orientation = None
  return orientation, when


def pixel_array_size(image: Image.Image) -> tuple[int, int]:
  """(width, height) of the pixel array in the file.

  Not always `image.size`: Pillow reports TIFFs with Orientation 5 to 8 at their
  upright size (and turns them upright on load).
  """
  if image.format == 'TIFF':
    tags = getattr(image, 'tag_v2', {})
    if isinstance(tags.get(256), int) and isinstance(tags.get(257), int):
      return int(tags[256]), int(tags[257])
  return int(image.size[0]), int(image.size[1])


def open_image(path: str | os.PathLike, data: bytes | None = None) -> Image.Image:
  """Opens (without decoding) an image; ImageReadError when it is not one."""
  try:
    if data is None:
      data = Path(path).read_bytes()
    return Image.open(io.BytesIO(data))
  except Image.UnidentifiedImageError:
    raise ImageReadError(path, 'not an image Pillow can identify (wrong extension, or corrupt)') from None
  except Image.DecompressionBombError as e:
    raise ImageReadError(path, f'refused as a decompression bomb ({e})') from None
  except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
    raise ImageReadError(path, f'cannot open image ({type(e).__name__}: {e})') from None


def read_photo(path: str | os.PathLike, *, data: bytes | None = None, image: Image.Image | None = None,
               names: FolderIndex | Sequence[str] | None = None) -> PhotoMetadata:
  """The crop of one photo, in the upright frame, from its sidecars or embedded XMP.

  `data` (the file's bytes), `image` (it opened with Pillow) and `names` (its
  folder's file names, or their FolderIndex) avoid reading things twice. Raises ImageReadError,
  XMPError or CropValueError (all MetadataError, with `.reason`). Pixels are not
  decoded here. Raw files (RAW_EXTENSIONS) are read with rawpy, not Pillow
  (`image` is not used): RawSupportError ('unsupported format') without it.
  """
  photo = Path(path)
  if data is None:
    try:
      data = photo.read_bytes()
    except OSError as e:
      raise ImageReadError(photo, f'cannot read file ({e.strerror or e})') from None
  raw_info = None
  if photo.suffix.lower() in RAW_EXTENSIONS:
    from cropjax.library import raw  # rawpy is optional: imported for raw files only
    raw_info = raw.probe(photo, data)
    stored = raw_info.stored_size
  else:
    if image is None:
      image = open_image(photo, data)
    stored = pixel_array_size(image)
  names = FolderIndex.of(photo.parent, names)

  # Every source, in order of precedence.
  packets: list[Packet] = []
  ext_sidecar, base_sidecar = sidecars(photo, names)
  if ext_sidecar is not None:
    packets.append(parse_xmp(read_xmp_file(ext_sidecar), str(ext_sidecar)))
  if base_sidecar is not None:
    packet = parse_xmp(read_xmp_file(base_sidecar), str(base_sidecar))
    owner = (packet.get('sidecar_for') or '').lstrip('.').lower()
    if owner == photo.suffix.lstrip('.').lower() or (not owner and not _shares_stem(photo, names)):
      packets.append(packet)
  if raw_info is not None:
    embedded = [raw_info.xmp] if raw_info.xmp else []
  else:
    embedded = embedded_xmp(data, image)
  if embedded:
    main = parse_xmp(embedded[0], f'{photo} (embedded XMP)')
    main.embedded = True
    for extra in embedded[1:]:
      for k, v in parse_xmp(extra, f'{photo} (embedded extended XMP)').values.items():
        main.values.setdefault(k, v)
    packets.append(main)

  chosen = next((p for p in packets if p.has_crop_info()), None)
  if raw_info is not None:  # XMP first: an editor records a rotation there, never in the raw
    exif_orientation, exif_time = None, raw_info.capture_time
  else:
    exif_orientation, exif_time = exif_info(image)
  orientation = exif_orientation
  for p in ([chosen] if chosen else []) + packets:
    orientation = orientation or p.get('orientation')
  orientation = orientation or (raw_info.orientation if raw_info is not None else 1)
  capture_time = exif_time
  for p in ([chosen] if chosen else []) + packets:
    for name in ('date_time_original', 'create_date', 'date_created'):
      capture_time = capture_time or normalize_time(p.get(name))
  edits = {}
  if chosen is not None:
    edits = {f.name: v for f in FIELDS if f.role == 'edit' and (v := chosen.get(f.name)) is not None}

  def result(status: str, crop: Crop | None = None) -> PhotoMetadata:
    source = None if chosen is None else 'embedded' if chosen.embedded else chosen.source
    return PhotoMetadata(str(photo), status, crop, orientation, stored, source,
                         capture_time, edits)

  if chosen is None:
    return result('no crop')
  try:
    return _crop_of(photo, chosen, stored, orientation, result)
  except CropValueError as e:
    if chosen.embedded:
      raise
    raise CropValueError(photo, f'{e.problem} (crop read from {chosen.source})') from None


def _crop_of(photo: Path, chosen: Packet, stored_size: tuple[int, int], orientation: int,
             result: Callable[..., PhotoMetadata]) -> PhotoMetadata:
  where = photo
  if chosen.get('already_applied', where):
    return result('already applied')
  width, height = stored_size
  if not any(FIELDS_BY_NAME[n].role == 'crop' for n in chosen.values):
    crop = darktable_crop(chosen, where)  # already in the upright frame
    if crop is None or crop.is_full_frame():
      return result('no crop')
    up_w, up_h = upright_size(stored_size, orientation)
    return result('cropped', check_crop(crop, up_w, up_h, where))
  has_crop = chosen.get('has_crop', where)
  if has_crop is False:  # whatever values were left behind
    return result('no crop')
  names = ('crop_left', 'crop_top', 'crop_right', 'crop_bottom', 'crop_angle')
  values = [chosen.get(n, where) for n in names]
  if has_crop is None and all(v is None for v in values):
    return result('no crop')
  defaults = (0.0, 0.0, 1.0, 1.0, 0.0)  # Adobe's values for absent fields
  l, t, r, b, a = (d if v is None else v for v, d in zip(values, defaults))
  crop = check_crop(lightroom_to_crop(l, t, r, b, a, width, height), width, height, where)
  if crop.is_full_frame():
    return result('no crop')
  return result('cropped', orient_crop(crop, orientation))


def read_crop(path: str | os.PathLike) -> Crop | None:
  """The upright-frame crop of `path`, or None when it has none (or it is already applied)."""
  return read_photo(path).crop


# ----------------------------------------------------------------------------- writing

_SIDECAR_TEMPLATE = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="cropjax">\n'
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    '  <rdf:Description rdf:about=""/>\n'
    ' </rdf:RDF>\n'
    '</x:xmpmeta>\n')


def format_value(value: Any) -> str:
  """A FIELDS value as XMP text (booleans 'True'/'False', reals with 6 decimals as Lightroom)."""
  if isinstance(value, bool):
    return 'True' if value else 'False'
  if isinstance(value, float):
    text = f'{value:.6f}'
    return '0.000000' if text == '-0.000000' else text
  return str(value)


def _namespaces_of(data: bytes) -> dict[str, str]:
  found = {}
  for _, (prefix, uri) in SafeET.iterparse(io.BytesIO(data), events=('start-ns',), forbid_dtd=True):
    found.setdefault(prefix, uri)
  return found


def set_fields(data: bytes | None, values: Mapping[str, Any], source: str = '<xmp>') -> bytes:
  """An XMP packet (`data`, or a new one) with the FIELDS `values` set, other content kept.

  Values go in as attributes of the first rdf:Description; element forms of the
  same properties are removed so that no reader sees two values.
  """
  if data:
    parse_xmp(data, source)  # refuses hostile or malformed XML with XMPError
    prefixes = _namespaces_of(data.strip(b'\x00 \t\r\n'))
    root = SafeET.fromstring(data.strip(b'\x00 \t\r\n'), forbid_dtd=True)
  else:
    prefixes = {}
    root = SafeET.fromstring(_SIDECAR_TEMPLATE, forbid_dtd=True)
  for prefix, uri in {**prefixes, **NAMESPACES}.items():
    if prefix and not re.fullmatch(r'ns\d+', prefix):
      ET.register_namespace(prefix, uri)
  rdf = root if root.tag == _RDF + 'RDF' else root.find('.//' + _RDF + 'RDF')
  if rdf is None:
    raise XMPError(source, 'no rdf:RDF element to write into')
  descriptions = rdf.findall(_RDF + 'Description')
  if not descriptions:
    descriptions = [ET.SubElement(rdf, _RDF + 'Description', {_RDF + 'about': ''})]
  qnames = {FIELDS_BY_NAME[name].qname for name in values}
  for desc in descriptions:
    for q in qnames:
      desc.attrib.pop(q, None)
    for child in [c for c in desc if c.tag in qnames]:
      desc.remove(child)
  for name, value in values.items():
    descriptions[0].set(FIELDS_BY_NAME[name].qname, format_value(value))
  return ET.tostring(root, encoding='utf-8', xml_declaration=False) + b'\n'


def crop_fields(crop: Crop | None, stored_size: tuple[int, int], orientation: int) -> dict[str, Any]:
  """The `crs` values (FIELDS names) that record an upright-frame `crop` on a stored image."""
  if crop is None:
    return {'has_crop': False}
  width, height = stored_size
  up_w, up_h = upright_size(stored_size, orientation)
  check_crop(crop, up_w, up_h, '<crop to write>')
  l, t, r, b, a = crop_to_lightroom(unorient_crop(crop, orientation), width, height)
  return {'has_crop': True, 'crop_left': l, 'crop_top': t, 'crop_right': r, 'crop_bottom': b,
          'crop_angle': a}


def write_sidecar(photo: str | os.PathLike, crop: Crop | None, *, style: str = 'adobe',
                  stored_size: tuple[int, int] | None = None, orientation: int | None = None) -> Path:
  """Writes `crop` (upright frame; None: no crop) into the photo's XMP sidecar; returns its path.

  style 'adobe' writes `photo.xmp` (what Lightroom and Camera Raw read for raw
  files; they read embedded XMP for JPEG/TIFF), 'ext' writes `photo.ext.xmp`
  (darktable, digiKam). An existing sidecar keeps all its other fields. The
  orientation is the one `read_photo` will use: the photo's EXIF Orientation,
  else the sidecar's `tiff:Orientation`, else `orientation` (written into the
  sidecar when no EXIF one exists), else (raw files) the file's own, else 1.
  Raw files need `stored_size` (the width and height of their stored frame) and
  their own orientation, read with rawpy when `stored_size` is not given; other
  formats Pillow cannot read need `stored_size`. The file is replaced
  atomically. Refuses a `photo.xmp` that says it belongs to another extension.
  """
  photo = Path(photo)
  if style not in ('adobe', 'ext'):
    raise ValueError(f"style must be 'adobe' or 'ext', got {style!r}")
  target = photo.with_name(photo.name + '.xmp') if style == 'ext' else photo.with_suffix('.xmp')
  ext_sidecar, base_sidecar = sidecars(photo)
  existing_path = ext_sidecar if style == 'ext' else base_sidecar
  if existing_path is not None:
    target = existing_path  # keep its spelling (IMG.XMP)
  existing = read_xmp_file(target) if existing_path is not None else None
  packet = parse_xmp(existing, str(target)) if existing else Packet(str(target))
  owner = (packet.get('sidecar_for') or '').lstrip('.')
  if style == 'adobe' and owner and owner.lower() != photo.suffix.lstrip('.').lower():
    raise MetadataError(target, f'belongs to {photo.stem}.{owner} (photoshop:SidecarForExtension); '
                        f"not writing the crop of {photo.name} into it (use style='ext')")
  exif_orientation = raw_orientation = None
  if photo.suffix.lower() in OTHER_PHOTO_EXTENSIONS:
    if stored_size is None and photo.suffix.lower() in RAW_EXTENSIONS:
      from cropjax.library import raw  # rawpy is optional: imported for raw files only
      try:
        info = raw.probe(photo)
      except MetadataError as e:
        raise MetadataError(photo, f'{e.problem}; or pass stored_size (width, height of the raw '
                            'pixel array)') from None
      stored_size, raw_orientation = info.stored_size, info.orientation
    if stored_size is None:
      raise MetadataError(photo, 'pass stored_size (width, height of the raw pixel array): '
                          'Pillow cannot read it from this kind of file')
  else:
    image = open_image(photo)
    stored_size = stored_size or pixel_array_size(image)
    exif_orientation = exif_info(image)[0]
  orientation = exif_orientation or packet.get('orientation') or orientation or raw_orientation or 1
  values = crop_fields(crop, stored_size, orientation)
  if exif_orientation is None:
    values['orientation'] = orientation
  if style == 'adobe':
    values['sidecar_for'] = photo.suffix.lstrip('.').upper()
  data = set_fields(existing, values, str(target))
  fd, tmp = tempfile.mkstemp(prefix='.' + target.name + '.', dir=target.parent)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, target)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return target


def xmp_packet(values: Mapping[str, Any], *, wrap: bool = True) -> bytes:
  """A fresh XMP packet with FIELDS `values` (for embedding with Pillow's `xmp=`)."""
  body = set_fields(None, values)
  if not wrap:
    return body
  return (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n' + body
          + b'<?xpacket end="w"?>')
