"""A demo photo library with Lightroom-style XMP crops, no user data needed.

    python scripts/make_demo_library.py /tmp/demo-library --count 60 --seed 0
    python scripts/annotate.py /tmp/demo-library --out /tmp/demo-dataset

Every photo is an "intended picture" (a scikit-image photo or a procedural
image) placed inside distracting margins (noise, stripes, flat bars, a blurred
copy, a gradient), and its crop is the intended picture, so the crops can be
learnt. The mix is what a real library holds: sidecars `photo.xmp` (with
photoshop:SidecarForExtension) and `photo.jpg.xmp`, XMP embedded in JPEG, PNG,
TIFF and WebP, attribute and element forms, EXIF orientations (pixels stored
turned, so the upright photo is the intended one), small CropAngles, bursts
(same capture minute), uncropped photos, Lightroom exports marked
crs:AlreadyApplied, a darktable sidecar, and broken files (truncated JPEG, a
text file named .jpg, malformed XML, a billion-laughs sidecar, NaN and inverted
crops). `EXPECTED.jsonl` lists, per photo, what the annotator should find.
Deterministic by --seed. `ensure_dataset` builds a library and annotates it
once into a cache folder: the embedded default ('demo') of auto-crop training. Refuses a non-empty OUT unless --force (which
overwrites the files it writes and leaves other files alone).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import struct
import sys
from pathlib import Path


import numpy as np
from PIL import Image, ImageFilter, PngImagePlugin

from cropjax import metadata
from cropjax import procedural

CRS = metadata.NAMESPACES['crs']
MARGINS = ('noise', 'stripes', 'flat', 'blur', 'gradient')


def _margin(rng: np.random.Generator, style: str, width: int, height: int,
            content: Image.Image) -> Image.Image:
  if style == 'noise':
    base = rng.uniform(0, 255, 3)
    a = np.clip(base + rng.normal(0, 60, (height, width, 3)), 0, 255)
  elif style == 'stripes':
    period = rng.integers(6, 24)
    theta = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:height, 0:width]
    on = (((np.cos(theta) * x + np.sin(theta) * y) // period) % 2).astype(bool)
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = np.where(on[..., None], c1, c2)
  elif style == 'flat':
    a = np.broadcast_to(rng.uniform(0, 255, 3), (height, width, 3)) + rng.normal(0, 4, (height, width, 3))
  elif style == 'blur':
    blurred = content.resize((width, height)).filter(ImageFilter.GaussianBlur(radius=max(4, width // 25)))
    a = np.asarray(blurred, dtype=np.float64) * 0.5 + 40
  else:
    a = procedural.gradient(rng, height, width) * 255
  return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), 'RGB')


def compose(rng: np.random.Generator, content: Image.Image, long_side: int,
            angle: float = 0.0) -> tuple[Image.Image, metadata.Crop]:
  """The content inside distracting margins, turned by `angle`; and its canonical crop."""
  aspect = rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3])
  if aspect >= 1:
    width, height = long_side, round(long_side / aspect)
  else:
    width, height = round(long_side * aspect), long_side
  for _ in range(100):
    fill = rng.uniform(0.45, 0.8)
    cw = fill * width
    ch = cw * content.height / content.width
    if ch > 0.85 * height:
      ch = rng.uniform(0.45, 0.85) * height
      cw = ch * content.width / content.height
    cx, cy = rng.uniform(cw / 2, width - cw / 2), rng.uniform(ch / 2, height - ch / 2)
    crop = metadata.Crop((cx - cw / 2) / width, (cy - ch / 2) / height, (cx + cw / 2) / width,
                         (cy + ch / 2) / height, angle)
    try:
      crop = metadata.check_crop(crop, width, height)
    except metadata.CropValueError:
      continue
    if all(2 <= x <= width - 2 and 2 <= y <= height - 2 for x, y in metadata.corners(crop, width, height)):
      break
  else:
    raise RuntimeError('could not place the content')
  canvas = _margin(rng, str(rng.choice(MARGINS)), width, height, content)
  cw_px, ch_px = round(cw), round(ch)
  sub = content.resize((cw_px, ch_px), Image.Resampling.LANCZOS).convert('RGBA')
  # Output pixel q -> content pixel R(-angle) (q - centre) + half size.
  c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
  coeffs = (c, s, -c * cx - s * cy + cw_px / 2, -s, c, s * cx - c * cy + ch_px / 2)
  layer = sub.transform((width, height), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC)
  canvas.paste(layer, (0, 0), layer)
  return canvas, crop


def _exif(orientation: int, when: str | None, tiff_xmp: bytes | None = None) -> bytes:
  exif = Image.Exif()
  if orientation != 1:
    exif[0x0112] = orientation
  if when:
    exif.get_ifd(0x8769)[0x9003] = when
  if tiff_xmp is not None:  # TIFF keeps XMP in tag 700 of IFD0 (`tiffinfo` would drop the EXIF)
    exif[700] = tiff_xmp
  return exif.tobytes()


def _element_form(values: dict) -> bytes:
  """An XMP packet with the crs values as child elements (the other form Lightroom writes)."""
  lines = []
  for name, value in values.items():
    prefix, local = metadata.FIELDS_BY_NAME[name].tag.split(':')
    lines.append(f'   <{prefix}:{local}>{metadata.format_value(value)}</{prefix}:{local}>')
  return ('<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
          ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
          '  <rdf:Description rdf:about=""\n'
          f'    xmlns:crs="{CRS}" xmlns:tiff="{metadata.NAMESPACES["tiff"]}"\n'
          f'    xmlns:photoshop="{metadata.NAMESPACES["photoshop"]}">\n'
          + '\n'.join(lines) + '\n  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n').encode()


BILLION_LAUGHS = b'''<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/" crs:HasCrop="True"
 crs:CropLeft="0.1" crs:CropTop="0.1" crs:CropRight="0.9" crs:CropBottom="0.9"><crs:Label>&lol9;</crs:Label>
</rdf:Description></rdf:RDF></x:xmpmeta>
'''


def _save(image: Image.Image, path: Path, orientation: int, when: str | None, xmp: bytes | None) -> None:
  fmt = {'.jpg': 'JPEG', '.png': 'PNG', '.tif': 'TIFF', '.webp': 'WEBP'}[path.suffix.lower()]
  kwargs = {'exif': _exif(orientation, when)}
  if xmp is not None:
    if fmt == 'PNG':
      info = PngImagePlugin.PngInfo()
      info.add_itxt('XML:com.adobe.xmp', xmp.decode('utf-8'))
      kwargs['pnginfo'] = info
    elif fmt == 'TIFF':
      kwargs['exif'] = _exif(orientation, when, xmp)
    else:
      kwargs['xmp'] = xmp
  if fmt == 'JPEG':
    kwargs['quality'] = 90
  elif fmt == 'WEBP':
    kwargs.update(quality=90, method=0)
  buf = io.BytesIO()
  image.save(buf, fmt, **kwargs)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())


def make_library(out: str | os.PathLike, count: int = 60, seed: int = 0, long_side: int = 400) -> list[dict]:
  """Writes the demo library into `out`; returns the EXPECTED records (also written)."""
  out = Path(out)
  rng = np.random.default_rng(seed)
  sources = list(procedural.skimage_photos())
  expected = []

  def content_for(i: int) -> Image.Image:
    if sources and i % 2 == 0:
      return Image.fromarray(sources[(i // 2) % len(sources)][1])
    side = int(rng.integers(200, 300))
    return Image.fromarray(procedural.image(seed, i, (side, int(side * rng.uniform(0.6, 1.2)))))

  burst_time = previous_content = None
  for i in range(count):
    folder = out / ('2019' if i < count // 2 else '2020') / f'roll{(i // 8) + 1:02d}'
    r = rng.uniform()
    status = 'no crop' if r < 0.12 else 'already applied' if r < 0.2 else 'cropped'
    angle = float(np.round(rng.uniform(-8, 8), 3)) if status == 'cropped' and rng.uniform() < 0.25 else 0.0
    orientation = int(rng.choice([6, 8, 3, 2, 5])) if rng.uniform() < 0.3 else 1
    ext = str(rng.choice(['.jpg'] * 8 + ['.png', '.tif', '.webp']))
    storage = str(rng.choice(['sidecar', 'ext_sidecar', 'embedded', 'embedded']))
    if ext != '.jpg' and storage != 'embedded':
      storage = 'embedded'
    form = 'element' if rng.uniform() < 0.3 else 'attribute'
    # Bursts: every fifth photo repeats the previous one's content and minute.
    if i % 5 == 4 and expected:
      when = burst_time
      content = previous_content
    else:
      day, minute = 1 + i // 10, int(rng.integers(0, 24 * 60))
      when = f'2020:06:{day:02d} {minute // 60:02d}:{minute % 60:02d}:{int(rng.integers(0, 50)):02d}'
      content = content_for(i)
    burst_time, previous_content = when, content

    name = f'IMG_{1000 + i:04d}{ext}'
    path = folder / name
    if status == 'already applied':
      upright = content.resize((long_side, round(long_side * content.height / content.width)))
      crop = metadata.Crop(0.1, 0.1, 0.9, 0.9)
    else:
      upright, crop = compose(rng, content, long_side, angle)
    stored = metadata.orient_image(upright, metadata.INVERSE_ORIENTATION[orientation])
    values = metadata.crop_fields(crop, stored.size, orientation)
    if status == 'no crop':
      values = {'has_crop': False} if rng.uniform() < 0.5 else None
    elif status == 'already applied':
      values['already_applied'] = True
    if values is not None:
      values['orientation'] = orientation
      if rng.uniform() < 0.3:
        values['exposure'] = float(np.round(rng.uniform(-1, 1), 2))
    if values is not None and storage == 'sidecar':
      values['sidecar_for'] = ext.lstrip('.').upper()
    xmp = None
    if values is not None:
      xmp = _element_form(values) if form == 'element' else metadata.xmp_packet(values, wrap=False)
    _save(stored, path, orientation, when, xmp if storage == 'embedded' else None)
    if xmp is not None and storage == 'sidecar':
      (folder / f'IMG_{1000 + i:04d}.xmp').write_bytes(xmp)
    elif xmp is not None and storage == 'ext_sidecar':
      (folder / f'{name}.xmp').write_bytes(xmp)
    expected.append({'path': str(path.relative_to(out)), 'status': status,
                     'crop': crop.to_json() if status == 'cropped' else None,
                     'orientation': orientation, 'xmp': storage if values is not None else None,
                     'capture_time': when})

  # A darktable sidecar: the crop module's cx, cy, cw, ch (gz-compressed params).
  content = content_for(1)
  upright, crop = compose(rng, content, long_side, 0.0)
  folder = out / 'darktable'
  _save(upright, folder / 'DSC_0001.jpg', 1, None, None)
  params = metadata.encode_darktable_params(
      struct.pack('<4f2i', crop.left, crop.top, crop.right, crop.bottom, 0, 0), compress=True)
  flip = metadata.encode_darktable_params(struct.pack('<i', -1))
  (folder / 'DSC_0001.jpg.xmp').write_text(
      '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
      '<rdf:Description rdf:about="" xmlns:darktable="http://darktable.sf.net/" darktable:history_end="2">'
      '<darktable:history><rdf:Seq>'
      f'<rdf:li darktable:num="0" darktable:operation="flip" darktable:enabled="1" darktable:params="{flip}"/>'
      f'<rdf:li darktable:num="1" darktable:operation="crop" darktable:enabled="1" darktable:params="{params}"/>'
      '</rdf:Seq></darktable:history></rdf:Description></rdf:RDF></x:xmpmeta>\n')
  # float32 params: the expected crop is what float32 holds.
  f32 = [float(np.float32(v)) for v in (crop.left, crop.top, crop.right, crop.bottom)]
  expected.append({'path': 'darktable/DSC_0001.jpg', 'status': 'cropped',
                   'crop': metadata.Crop(*f32).to_json(), 'orientation': 1, 'xmp': 'darktable',
                   'capture_time': None})

  # Broken files: each must be reported and skipped, and the run must go on.
  broken = out / 'broken'
  good, crop = compose(rng, content_for(3), long_side, 0.0)
  values = {**metadata.crop_fields(crop, good.size, 1), 'sidecar_for': 'JPG'}
  buf = io.BytesIO()
  good.save(buf, 'JPEG', quality=90)
  broken.mkdir(parents=True, exist_ok=True)
  (broken / 'truncated.jpg').write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
  (broken / 'truncated.xmp').write_bytes(metadata.xmp_packet(values, wrap=False))
  (broken / 'notes.jpg').write_text('This is a text file with a .jpg name.\n')
  for stem, xmp in (('malformed', metadata.xmp_packet(values, wrap=False)[:-40]),
                    ('laughs', BILLION_LAUGHS),
                    ('nan', metadata.xmp_packet({**values, 'crop_left': float('nan')}, wrap=False)),
                    ('inverted', metadata.xmp_packet({**values, 'crop_left': 0.8, 'crop_right': 0.2},
                                                     wrap=False))):
    (broken / f'{stem}.jpg').write_bytes(buf.getvalue())
    (broken / f'{stem}.xmp').write_bytes(xmp.replace(b'"nan"', b'"NaN"') if stem == 'nan' else xmp)
  reasons = {'truncated': 'unreadable image', 'notes': 'unreadable image', 'malformed': 'bad XML',
             'laughs': 'bad XML', 'nan': 'invalid crop values', 'inverted': 'invalid crop values'}
  for stem, reason in reasons.items():
    expected.append({'path': f'broken/{stem}.jpg', 'status': reason, 'crop': None, 'orientation': 1,
                     'xmp': 'sidecar', 'capture_time': None})

  with open(out / 'EXPECTED.jsonl', 'w', encoding='utf-8') as f:
    for record in expected:
      f.write(json.dumps(record, sort_keys=True) + '\n')
  return expected


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('out', metavar='OUT', help='folder to write the library into')
  parser.add_argument('--count', type=int, default=60, help='photos besides the broken ones (default 60)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--size', type=int, default=400, help='long side of the photos (default 400)')
  parser.add_argument('--force', action='store_true', help='write into a non-empty OUT')
  args = parser.parse_args(argv)
  out = Path(args.out)
  if out.exists() and not out.is_dir():
    print(f'error: {out}: not a folder', file=sys.stderr)
    return 2
  if out.is_dir() and any(out.iterdir()) and not args.force:
    print(f'error: {out}: not empty (use --force to write into it anyway)', file=sys.stderr)
    return 2
  if args.count < 1 or args.size < 64:
    print('error: --count must be at least 1 and --size at least 64', file=sys.stderr)
    return 2
  expected = make_library(out, args.count, args.seed, args.size)
  counts: dict[str, int] = {}
  for record in expected:
    counts[record['status']] = counts.get(record['status'], 0) + 1
  print(f'wrote {len(expected)} photos to {out}: '
        + ', '.join(f'{n} {s}' for s, n in sorted(counts.items())))
  return 0


def ensure_dataset(cache_dir: str | os.PathLike, count: int = 400, seed: int = 0,
                   size: int = 256) -> Path:
  """The annotated DATASET folder of a demo library, built once under `cache_dir`.

  Built in a temporary folder and renamed when complete, so an interrupted
  build is never mistaken for a finished one.
  """
  import shutil
  import tempfile

  from cropjax import annotate

  cache = Path(cache_dir)
  final = cache / f'cropjax_demo_autocrop-{count}-{seed}-{size}'
  if (final / 'DONE').exists():
    return final / 'dataset'
  cache.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=final.name + '.tmp-', dir=cache))
  try:
    make_library(tmp / 'library', count, seed, long_side=size)
    annotate.annotate([tmp / 'library'], tmp / 'dataset', size=size,
                      report=lambda problem: None)  # its broken files are on purpose
    shutil.rmtree(tmp / 'library')
    (tmp / 'DONE').touch()
    try:
      os.rename(tmp, final)
    except OSError:  # built meanwhile by another process
      if not (final / 'DONE').exists():
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return final / 'dataset'


if __name__ == '__main__':
  sys.exit(main())
