"""Raw camera files (CR2, CR3, NEF, ARW, DNG, RAF, ORF, RW2, ...) through rawpy (LibRaw).

    info = raw.probe('IMG_0001.CR2')        # RawInfo: stored_size, orientation, time, XMP
    picture = raw.read('IMG_0001.CR2', 512)  # RawImage: upright, long side >= 512 if possible
    picture.image, picture.source             # PIL image (RGB); 'preview' or 'demosaic'

rawpy is an optional extra (`pip install -e '.[raw]'`); without it every
function here raises RawSupportError ("<file>: RAW files need rawpy: ..."), a
MetadataError whose reason is the annotator's 'unsupported format'. Files are
only read, never written.

Frames. The *stored* frame is the picture as it lies on the sensor, before any
rotation: LibRaw's visible area (`sizes.width` x `sizes.height`), narrowed to
its inset crop (`sizes.crop_*`: a DNG's DefaultCropOrigin/Size, or the maker's
crop) when it has one. That is the frame Adobe Camera Raw shows before
rotating, so `crs:CropLeft/Top/Right/Bottom` are fractions of it, exactly as
for a JPEG's pixel array (`cropjax.metadata`); `metadata.orient_crop` then
turns the crop upright. `RawInfo.orientation` is the EXIF Orientation LibRaw
read from the file (`sizes.flip`, see FLIP_TO_ORIENTATION); `metadata.read_photo`
prefers the `tiff:Orientation` of the raw's XMP (Lightroom records a rotation
made in the editor there, the raw itself being read-only), and `read` turns
the picture by whichever orientation it is given.

Pixels. `read` uses the embedded preview (`extract_thumb()`, JPEG or bitmap)
when its long side is at least the requested size and it shows the same
framing, else a demosaic (`postprocess()`: camera white balance, 8-bit sRGB,
half size when that is still large enough). Both are brought to the stored
frame first and then turned by the orientation, so the result is always the
upright picture: LibRaw's own rotation is switched off (`user_flip=0`), and a
preview is turned by its own EXIF Orientation, else the raw's, unless its shape
says it is upright already (some cameras store it turned; `preview_to_stored`).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cropjax import metadata

RAW_EXTENSIONS = metadata.RAW_EXTENSIONS
INSTALL_HINT = "RAW files need rawpy: pip install -e '.[raw]'"

# LibRaw's `sizes.flip` is dcraw's bit field (4: transpose, 2: mirror top to
# bottom, 1: mirror left to right; LibRaw docs, libraw_image_sizes_t: "0 if does
# not require rotation; 3 if requires 180-deg rotation; 5 if 90 deg
# counterclockwise, 6 if 90 deg clockwise"). LibRaw fills it from the EXIF
# Orientation with `flip = "50132467"[orientation & 7] - '0'`
# (LibRaw src/metadata/tiff.cpp, tag 0x0112); this table is that one inverted.
FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}

ASPECT_TOLERANCE = 0.03  # relative difference of aspect ratios still taken as the same framing


class RawSupportError(metadata.MetadataError):
  """rawpy is not installed: raw files cannot be read."""
  reason = 'unsupported format'

  def __init__(self, path: str | os.PathLike):
    super().__init__(path, INSTALL_HINT)


def is_raw(path: str | os.PathLike) -> bool:
  """Whether `path`'s extension is one of the raw formats read here."""
  return Path(path).suffix.lower() in RAW_EXTENSIONS


def available() -> bool:
  """Whether rawpy can be imported."""
  try:
    import rawpy  # noqa: F401
  except ImportError:
    return False
  return True


def _rawpy(path: str | os.PathLike):
  try:
    import rawpy
  except ImportError:
    raise RawSupportError(path) from None
  return rawpy


@dataclasses.dataclass(frozen=True)
class RawInfo:
  """What a raw file says about its picture, without decoding it."""
  stored_size: tuple[int, int]     # (width, height) of the stored frame (see the module doc)
  orientation: int                 # EXIF Orientation, from LibRaw's sizes.flip
  capture_time: str | None         # ISO 8601, local time as recorded
  xmp: bytes | None                # XMP embedded in the file (TIFF tag 700 of IFD0: DNG, ...)

  @property
  def size(self) -> tuple[int, int]:
    """(width, height) of the upright picture."""
    return metadata.upright_size(self.stored_size, self.orientation)


@dataclasses.dataclass(frozen=True)
class RawImage:
  """A decoded raw file: the upright picture and where it came from."""
  image: Image.Image               # 8-bit RGB, upright by `orientation`
  info: RawInfo
  orientation: int                 # the orientation applied
  source: str                      # 'preview' or 'demosaic'


# ----------------------------------------------------------------------------- reading

def _open(path: str | os.PathLike, data: bytes | None) -> tuple[Any, Any, bytes]:
  """(rawpy, the file opened with LibRaw, its bytes)."""
  rawpy = _rawpy(path)
  if data is None:
    try:
      data = Path(path).read_bytes()
    except OSError as e:
      raise metadata.ImageReadError(path, f'cannot read file ({e.strerror or e})') from None
  try:
    return rawpy, rawpy.imread(io.BytesIO(data)), data
  except (rawpy.LibRawError, OSError, ValueError, MemoryError) as e:
    raise metadata.ImageReadError(
        path, f'not a raw file LibRaw can read ({_describe(e)})') from None


def _describe(e: BaseException) -> str:
  text = ' '.join(a.decode('utf-8', 'replace') if isinstance(a, bytes) else str(a)
                  for a in e.args).strip()
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


def _frame(sizes: Any) -> tuple[float, float, float, float]:
  """The stored frame as fractions (left, top, right, bottom) of LibRaw's visible area."""
  width, height = sizes.width, sizes.height
  # crop_*_margin count from the full raw frame, the visible area from left/top_margin.
  left, top = sizes.crop_left_margin - sizes.left_margin, sizes.crop_top_margin - sizes.top_margin
  cw, ch = sizes.crop_width, sizes.crop_height
  if (cw > 0 and ch > 0 and left >= 0 and top >= 0 and left + cw <= width and top + ch <= height
      and (cw, ch) != (width, height)):
    return left / width, top / height, (left + cw) / width, (top + ch) / height
  return 0.0, 0.0, 1.0, 1.0


def _info(raw: Any, data: bytes, path: str | os.PathLike) -> RawInfo:
  sizes = raw.sizes
  if sizes.width < 1 or sizes.height < 1:
    raise metadata.ImageReadError(
        path, f'raw file with an empty picture ({sizes.width}x{sizes.height})')
  left, top, right, bottom = _frame(sizes)
  stored = (round((right - left) * sizes.width), round((bottom - top) * sizes.height))
  orientation = FLIP_TO_ORIENTATION.get(sizes.flip, 1)
  capture_time = None
  try:
    when = raw.other.timestamp  # LibRaw's time_t made with mktime (local), rawpy's fromtimestamp
    if isinstance(when, datetime) and when.year > 1970:
      capture_time = when.replace(microsecond=0).isoformat()
  except Exception:  # noqa: BLE001 -- metadata that cannot be read is only absent
    pass
  return RawInfo(stored, orientation, capture_time, tiff_xmp(data))


def probe(path: str | os.PathLike, data: bytes | None = None) -> RawInfo:
  """Stored size, orientation, capture time and embedded XMP of a raw file (no pixels decoded).

  `data` (the file's bytes) avoids reading it again. Raises RawSupportError
  without rawpy, ImageReadError for a file LibRaw cannot read.
  """
  _, raw, data = _open(path, data)
  with raw:
    return _info(raw, data, path)


def read(path: str | os.PathLike, size: int, *, data: bytes | None = None,
         orientation: int | None = None) -> RawImage:
  """The upright picture of a raw file, its long side at least `size` where the file allows.

  The embedded preview when it is large enough, else a demosaic (half size when
  that is still large enough). It is not resized to `size`. `orientation`
  (default: the file's own) is the EXIF orientation to turn the stored frame by.
  """
  if size < 1:
    raise ValueError(f'size must be positive, got {size}')
  rawpy, raw, data = _open(path, data)
  with raw:
    info = _info(raw, data, path)
    orientation = info.orientation if orientation is None else orientation
    metadata.upright_size(info.stored_size, orientation)  # checks it is 1 to 8
    stored = _preview(rawpy, raw, info, size)
    source = 'preview'
    if stored is None:
      stored, source = _demosaic(rawpy, raw, info, size, path), 'demosaic'
  return RawImage(metadata.orient_image(stored, orientation), info, orientation, source)


# ----------------------------------------------------------------------------- preview

def same_shape(size: tuple[int, int], other: tuple[int, int]) -> bool:
  """Whether two (width, height) have the same aspect ratio, within ASPECT_TOLERANCE."""
  return abs(math.log((size[0] / size[1]) / (other[0] / other[1]))) <= math.log1p(ASPECT_TOLERANCE)


def preview_to_stored(image: Image.Image, own_orientation: int | None, info: RawInfo
                      ) -> Image.Image | None:
  """An embedded preview brought to the raw's stored frame; None when it shows another framing.

  The preview is shown upright by its own EXIF Orientation when it has one
  (LibRaw gives a JPEG preview that has none an EXIF block made from the raw's
  orientation), else by the raw's orientation, else as it is (a camera that
  stored it turned): the first of these that gives the upright shape.
  """
  for orientation in ([own_orientation] if own_orientation else []) + [info.orientation, 1]:
    upright = metadata.orient_image(image, orientation)
    if same_shape(upright.size, info.size):
      return metadata.orient_image(upright, metadata.INVERSE_ORIENTATION[info.orientation])
  return None


def _preview(rawpy: Any, raw: Any, info: RawInfo, size: int) -> Image.Image | None:
  """The embedded preview in the stored frame when it is large enough, else None."""
  try:
    thumb = raw.extract_thumb()
  except (rawpy.LibRawError, OSError, ValueError, MemoryError):
    return None  # no preview, or one LibRaw cannot give: demosaic
  try:
    if thumb.format == rawpy.ThumbFormat.JPEG:
      image = Image.open(io.BytesIO(thumb.data))
      if image.format != 'JPEG' or max(image.size) < size:
        return None
      own = metadata.exif_info(image)[0]
      scale = size / max(image.size)
      image.draft('RGB', (math.ceil(image.width * scale), math.ceil(image.height * scale)))
      image.load()
      image = image.convert('RGB')
    elif thumb.format == rawpy.ThumbFormat.BITMAP:
      image = _bitmap(np.asarray(thumb.data))
      own = None
      if image is None or max(image.size) < size:
        return None
    else:
      return None
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
    return None  # a broken preview: demosaic
  return preview_to_stored(image, own, info)


def _bitmap(a: np.ndarray) -> Image.Image | None:
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3) or a.size == 0:
    return None
  if a.dtype == np.uint16:
    a = (a.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
  elif a.dtype != np.uint8:
    return None
  return Image.fromarray(np.ascontiguousarray(a)).convert('RGB')


# ----------------------------------------------------------------------------- demosaic

def _demosaic(rawpy: Any, raw: Any, info: RawInfo, size: int,
              path: str | os.PathLike) -> Image.Image:
  """LibRaw's demosaic of the stored frame (not turned), 8-bit sRGB."""
  left, top, right, bottom = _frame(raw.sizes)
  half = max(info.stored_size) // 2 >= size
  try:
    rgb = raw.postprocess(use_camera_wb=True, half_size=half, output_bps=8,
                          output_color=rawpy.ColorSpace.sRGB, gamma=(2.4, 12.92), user_flip=0)
  except (rawpy.LibRawError, MemoryError, ValueError) as e:
    raise metadata.ImageReadError(path, f'cannot decode the raw data ({_describe(e)})') from None
  rgb = np.asarray(rgb)
  if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.size == 0:
    raise metadata.ImageReadError(path, f'LibRaw gave no RGB picture ({rgb.dtype}, {rgb.shape})')
  h, w = rgb.shape[:2]
  x0, x1, y0, y1 = round(left * w), round(right * w), round(top * h), round(bottom * h)
  return Image.fromarray(np.ascontiguousarray(rgb[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]))


# ----------------------------------------------------------------------------- embedded XMP

_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
                    13: 4}


def tiff_xmp(data: bytes, limit: int = 64 << 20) -> bytes | None:
  """The XMP packet of tag 700 in IFD0 of a TIFF-structured raw file (DNG, CR2, NEF, ...), or None.

  Reads the directory itself: Pillow refuses many raw files' first image.
  Also takes the TIFF variants of Olympus ('IIRO', 'IIRS') and Panasonic ('IIU').
  """
  if len(data) < 8 or data[:2] not in (b'II', b'MM'):
    return None
  order = '<' if data[:2] == b'II' else '>'
  (magic,) = struct.unpack(order + 'H', data[2:4])
  if magic not in (42, 0x4F52, 0x5352, 0x55):
    return None
  try:
    (offset,) = struct.unpack(order + 'I', data[4:8])
    (count,) = struct.unpack(order + 'H', data[offset:offset + 2])
    for i in range(count):
      entry = data[offset + 2 + 12 * i:offset + 14 + 12 * i]
      tag, kind, n = struct.unpack(order + 'HHI', entry[:8])
      if tag != 700:
        continue
      length = n * _TIFF_TYPE_SIZES.get(kind, 1)
      if length <= 4:
        value = entry[8:8 + length]
      else:
        (start,) = struct.unpack(order + 'I', entry[8:12])
        if length > limit or start + length > len(data):
          return None
        value = data[start:start + length]
      value = bytes(value).strip(b'\x00 \t\r\n')
      return value or None
  except struct.error:
    return None
  return None
