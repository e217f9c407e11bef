"""An editor's tone and shading edits, as an exported crop often carries them.

    crop = edits.edit(crop, 'vignette', rng)       # a PIL image, edited
    kind = edits.draw(rng)                          # one of `KINDS`, uniformly

People crop and tone in the same sitting, so a crop is often not the original's
pixels: `bw` (black and white), `contrast` (x1.4-1.8), `exposure` (gamma 0.6 or
1.6), `saturation` (x1.5-2), `warm` (white balance), and the edits whose gain
changes across the crop: `vignette` (a post-crop vignette, corners at 40 %),
`vignette30` (corners at 70 %), `graduated` (a graduated filter, the top at 55 %
easing off over the next two fifths) and `export` (contrast and saturation x1.3,
`vignette30`, an unsharp mask). `cropjax.datasets.yardstick.user_pairs` makes
its `edited` crops with them, and `scripts/probe_edits.py` measures each.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

KINDS = ('bw', 'contrast', 'exposure', 'saturation', 'warm', 'vignette', 'vignette30',
         'graduated', 'export')
SHADED = ('vignette', 'vignette30', 'graduated', 'export')  # the gain changes across the crop


def _gain(img: Image.Image, gain: np.ndarray) -> Image.Image:
  a = np.asarray(img, np.float32) * gain[..., None]
  return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def _vignette(img: Image.Image, amount: float) -> Image.Image:
  h, w = img.height, img.width
  y, x = np.mgrid[:h, :w]
  return _gain(img, 1 - amount * ((x / w - .5) ** 2 + (y / h - .5) ** 2) / 0.5)


def edit(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
  """`img` (RGB) with the edit `kind` (see the module docstring); `rng` draws its strength."""
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
  raise ValueError(f'unknown edit {kind!r}; choose from {", ".join(KINDS)}')


def draw(rng: np.random.Generator, kinds: tuple[str, ...] = KINDS) -> str:
  """One of `kinds`, uniformly."""
  unknown = set(kinds) - set(KINDS)
  if not kinds or unknown:
    raise ValueError(f'edits must be some of {", ".join(KINDS)}, got {kinds}')
  return kinds[int(rng.integers(0, len(kinds)))]
