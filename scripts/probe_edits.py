"""Crops an editor has also shaded or toned, on the real-photo yardstick, beside SIFT.

    python scripts/probe_edits.py --workdir workdirs/demo [--kinds vignette,graduated]

For each of the yardstick's photos and each kind of edit, one window of 15-85 % of
the area, resized to 0.5-1x, edited, each side JPEG-encoded at quality 30-95 and
half of the pairs given crop first (as `cropjax.datasets.yardstick.user_pairs`
makes its positives). Prints, per kind, the share found (a crop, the right image
named the original) and the top-left error median (of the original's width) for
cropjax with alignment and for OpenCV SIFT. Edits: `bw` (black and white),
`contrast` (x1.4-1.8), `exposure` (gamma 0.6 or 1.6), `saturation` (x1.5-2),
`warm` (white balance), `vignette` (corners at 40 %), `vignette30` (corners at
70 %), `graduated` (the top at 55 %, easing off over the next two fifths),
`export` (contrast and saturation x1.3, vignette30, unsharp mask). Crops only:
the yardstick's negatives are `scripts/eval.py --data real`'s.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KINDS = ('bw', 'contrast', 'exposure', 'saturation', 'warm', 'vignette', 'vignette30',
         'graduated', 'export')


def _gain(img: Image.Image, gain: np.ndarray) -> Image.Image:
  a = np.asarray(img, np.float32) * gain[..., None]
  return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def _vignette(img: Image.Image, amount: float) -> Image.Image:
  h, w = img.height, img.width
  y, x = np.mgrid[:h, :w]
  return _gain(img, 1 - amount * ((x / w - .5) ** 2 + (y / h - .5) ** 2) / 0.5)


def edit(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
  """`img` with the edit `kind` (see the module docstring)."""
  if kind == 'bw':
    return ImageOps.grayscale(img).convert('RGB')
  if kind == 'contrast':
    return ImageEnhance.Contrast(img).enhance(rng.uniform(1.4, 1.8))
  if kind == 'exposure':
    a = np.asarray(img, np.float32) / 255
    return Image.fromarray((255 * a ** rng.choice([0.6, 1.6])).clip(0, 255).astype(np.uint8))
  if kind == 'saturation':
    return ImageEnhance.Color(img).enhance(rng.uniform(1.5, 2.0))
  if kind == 'warm':
    a = np.asarray(img, np.float32) * np.array([1.15, 1.0, 0.8])
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))
  if kind == 'vignette':
    return _vignette(img, 0.6)
  if kind == 'vignette30':
    return _vignette(img, 0.3)
  if kind == 'graduated':
    t = np.clip((np.arange(img.height) / img.height - 0.1) / 0.4, 0, 1)[:, None]
    return _gain(img, np.broadcast_to(0.55 + 0.45 * t, (img.height, img.width)))
  if kind == 'export':
    img = ImageEnhance.Color(ImageEnhance.Contrast(img).enhance(1.3)).enhance(1.3)
    return _vignette(img, 0.3).filter(ImageFilter.UnsharpMask(2, 80, 2))
  raise ValueError(f'unknown edit {kind!r}; choose from {KINDS}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='a trained crop-pair workdir')
  parser.add_argument('--kinds', default=','.join(KINDS))
  parser.add_argument('--seed', type=int, default=7)
  parser.add_argument('--photos', nargs='*', metavar='FILE',
                      help="photos to cut the crops from instead of the yardstick's (upright, "
                           "the long side capped at the yardstick's MAX_SIDE): development "
                           'photos, so that a choice is not made on the yardstick')
  args = parser.parse_args()
  import cropjax
  from cropjax import sift
  from cropjax.datasets import yardstick
  kinds = args.kinds.split(',')
  for k in kinds:
    if k not in KINDS:
      parser.error(f'unknown edit {k!r}; choose from {", ".join(KINDS)}')
  model = cropjax.load_model(args.workdir)
  if args.photos:
    photos = []
    for path in args.photos:
      image = ImageOps.exif_transpose(Image.open(path)).convert('RGB')
      image.thumbnail((yardstick.MAX_SIDE, yardstick.MAX_SIDE), Image.Resampling.LANCZOS)
      photos.append((path, image))
  else:
    photos = yardstick.photos()
  rows = []
  for i, (_, photo) in enumerate(photos):
    for kind in kinds:
      rng = np.random.default_rng([args.seed, i, KINDS.index(kind)])
      box = yardstick._window(rng, photo.size, (0.15, 0.85))
      crop = edit(yardstick._cut(photo, box, rng.uniform(0.5, 1.0)), kind, rng)
      q1, q2 = rng.integers(30, 96, 2)
      a, b = np.asarray(yardstick._jpeg(photo, q1)), np.asarray(yardstick._jpeg(crop, q2))
      original = 'a'
      if rng.uniform() < 0.5:
        a, b, original = b, a, 'b'
      rows.append((kind, a, b, original, box, photo.width))
  results = cropjax.predict_pairs([(r[1], r[2]) for r in rows], model=model)
  table: dict = {}
  for (kind, a, b, original, box, width), p in zip(rows, results):
    s = sift.match_pair(a, b)
    size = (a if original == 'a' else b).shape[1::-1]
    mine = p.is_crop and p.original == original
    theirs = s.is_pair and s.original == original
    table.setdefault(kind, []).append((
        mine, np.hypot(*(np.asarray(p.box[:2]) - box[:2])) / width if mine else np.nan,
        theirs, np.hypot(*(np.asarray(s.box[:2]) * size - box[:2])) / width if theirs else np.nan))
  source = f'{len(photos)} photos given' if args.photos else "the yardstick's photos"
  print(f'{len(results) // len(kinds)} crops of each edit, {source} (seed {args.seed})')
  print(f'{"edit":12s} {"cropjax found":>14s} {"top-left":>9s} {"SIFT found":>11s} {"top-left":>9s}')
  for kind in kinds:
    v = np.array(table[kind], float)
    med = lambda c: np.nanmedian(v[:, c]) if np.isfinite(v[:, c]).any() else float('nan')
    print(f'{kind:12s} {v[:, 0].mean():14.3f} {med(1):9.4f} {v[:, 2].mean():11.3f} {med(3):9.4f}')


if __name__ == '__main__':
  main()
