"""Small photos and hand-written XMP for the metadata, annotator and dataset tests.

The XMP here is written by hand (not by cropjax.metadata), so that reading is
checked against text a photo editor would write.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from cropjax import demo_library

CRS = 'http://ns.adobe.com/camera-raw-settings/1.0/'
RDF = 'http://www.w3.org/1999/02/22-rdf-syntax-ns#'

# Lightroom's numbers for the rectangle (0.4, 0.3, 0.9, 0.8) turned by -10 degrees on 300x200.
EXAMPLE = {'CropLeft': '0.374857', 'CropTop': '0.368916', 'CropRight': '0.925143',
           'CropBottom': '0.731084', 'CropAngle': '-10'}

# Entity expansion (a 'billion laughs'): the same hostile text the demo library plants.
BILLION_LAUGHS = demo_library.BILLION_LAUGHS.decode()

EXTERNAL_ENTITY = '''<?xml version="1.0"?>
<!DOCTYPE x [ <!ENTITY secret SYSTEM "file:///etc/passwd"> ]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
 crs:HasCrop="True" crs:CropLeft="0.1" crs:CropTop="0.1" crs:CropRight="0.9" crs:CropBottom="0.9">
<crs:Label>&secret;</crs:Label></rdf:Description></rdf:RDF></x:xmpmeta>
'''


def crs_xmp(fields: dict[str, str] | None = None, form: str = 'attribute', extra: str = '',
            has_crop: str | None = 'True', packet: bool = False) -> str:
  """An XMP packet with crs fields (CropLeft=..., without prefix) in attribute or element form."""
  fields = dict(fields or {})
  if has_crop is not None:
    fields = {'HasCrop': has_crop, **fields}
  qualified = {(k if ':' in k else f'crs:{k}'): v for k, v in fields.items()}
  namespaces = (f'xmlns:crs="{CRS}" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
                'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" '
                'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"')
  if form == 'attribute':
    attrs = ' '.join(f'{k}="{v}"' for k, v in qualified.items())
    desc = f'<rdf:Description rdf:about="" {namespaces} {attrs}>{extra}</rdf:Description>'
  else:
    children = ''.join(f'<{k}>{v}</{k}>' for k, v in qualified.items())
    desc = f'<rdf:Description rdf:about="" {namespaces}>{children}{extra}</rdf:Description>'
  text = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{RDF}">{desc}'
          '</rdf:RDF></x:xmpmeta>')
  if packet:
    text = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>' + text + '<?xpacket end="w"?>'
  return text


def pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
  """A smooth random picture with a red marker block in the stored top-left corner."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
  a = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)).copy()
  a[:height // 5, :width // 5] = (255, 0, 0)
  return a


def exif_bytes(orientation: int = 1, when: str | None = None, tiff_xmp: bytes | None = None) -> bytes:
  exif = Image.Exif()
  if orientation != 1:
    exif[0x0112] = orientation
  if when:
    exif.get_ifd(0x8769)[0x9003] = when
  if tiff_xmp is not None:  # TIFF: XMP is tag 700 of IFD0 (Pillow's `tiffinfo` would drop the EXIF)
    exif[700] = tiff_xmp
  return exif.tobytes()


def image_bytes(fmt: str = 'JPEG', size: tuple[int, int] = (300, 200), orientation: int = 1,
                xmp: str | bytes | None = None, when: str | None = None, seed: int = 0) -> bytes:
  """An encoded image with EXIF orientation / capture time and embedded XMP."""
  im = Image.fromarray(pixels(*size, seed=seed))
  kwargs = {'exif': exif_bytes(orientation, when)}
  if isinstance(xmp, str):
    xmp = xmp.encode('utf-8')
  if xmp is not None:
    if fmt == 'PNG':
      info = PngImagePlugin.PngInfo()
      info.add_itxt('XML:com.adobe.xmp', xmp.decode('utf-8'))
      kwargs['pnginfo'] = info
    elif fmt == 'TIFF':
      kwargs['exif'] = exif_bytes(orientation, when, tiff_xmp=xmp)
    else:
      kwargs['xmp'] = xmp
  buf = io.BytesIO()
  im.save(buf, fmt, **kwargs)
  return buf.getvalue()


def write(path: Path, data: bytes | str) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(data, str):
    path.write_text(data, encoding='utf-8')
  else:
    path.write_bytes(data)
  return path


def snapshot(root: Path) -> dict[str, bytes]:
  """Every file under `root` and its bytes."""
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}
