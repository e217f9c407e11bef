"""Procedural images: any number, deterministic by seed, no data needed.

    pixels = image(seed=0, index=17, size=(320, 240))   # uint8 (240, 320, 3)

Three kinds, chosen per index: dead leaves (overlapping discs and rectangles
with power-law sizes, the classic model of natural-image statistics), 1/f
noise textures with oriented gratings, and composites of both over a gradient.
They give the crop-pair and auto-crop models edges, occlusions and textures at
every scale, so training runs end to end without photos.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

KINDS = ('dead_leaves', 'texture', 'composite')


def _rng(seed: int, index: int, salt: int = 0) -> np.random.Generator:
  return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), salt])


def _palette(rng: np.random.Generator, n: int = 6) -> np.ndarray:
  """n colours around a random hue family (photos have coherent palettes)."""
  base = rng.uniform(0, 1, 3)
  colours = np.clip(base + rng.normal(0, 0.25, (n, 3)), 0, 1)
  colours *= rng.uniform(0.3, 1.0, (n, 1))
  return colours


def pink_noise(rng: np.random.Generator, height: int, width: int, exponent: float = 1.0) -> np.ndarray:
  """Noise with a 1/f^exponent amplitude spectrum, scaled to [0, 1]."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None, :]
  f = np.sqrt(fx * fx + fy * fy)
  f[0, 0] = 1.0
  spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** exponent
  spectrum[0, 0] = 0
  noise = np.fft.irfft2(spectrum, s=(height, width))
  lo, hi = np.percentile(noise, (1, 99))
  return np.clip((noise - lo) / max(hi - lo, 1e-9), 0, 1)


def gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A linear two-colour gradient in a random direction, (h, w, 3) in [0, 1]."""
  angle = rng.uniform(0, 2 * np.pi)
  y, x = np.mgrid[0:height, 0:width]
  t = (np.cos(angle) * x / width + np.sin(angle) * y / height)
  t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
  a, b = _palette(rng, 2)
  return a * (1 - t[..., None]) + b * t[..., None]


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """Coloured 1/f noise with a few oriented gratings, (h, w, 3) in [0, 1]."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  out = np.zeros((height, width, 3))
  colours = _palette(rng, 3)
  for c in colours:
    out += pink_noise(rng, height, width, rng.uniform(0.8, 1.6))[..., None] * c
  for _ in range(rng.integers(1, 4)):
    theta, period = rng.uniform(0, np.pi), rng.uniform(4, max(8, min(height, width) / 3))
    phase = (np.cos(theta) * x + np.sin(theta) * y) * 2 * np.pi / period
    out += 0.2 * np.sin(phase)[..., None] * _palette(rng, 1)[0]
  out -= out.min()
  return out / max(out.max(), 1e-9)


def dead_leaves(rng: np.random.Generator, height: int, width: int, shapes: int | None = None,
                fill: np.ndarray | None = None) -> np.ndarray:
  """Dead leaves: shapes with radii ~ 1/r^3 dropped in turn, each hiding what is below."""
  side = min(height, width)
  rmin, rmax = max(1.5, side / 40), side / 2.5
  shapes = shapes if shapes is not None else int(rng.integers(200, 500))
  out = gradient(rng, height, width) if fill is None else fill.copy()
  colours = _palette(rng, 8)
  # Inverse-CDF sampling of p(r) ~ r^-3 on [rmin, rmax].
  u = rng.uniform(size=shapes)
  radii = 1.0 / np.sqrt(1 / rmin ** 2 - u * (1 / rmin ** 2 - 1 / rmax ** 2))
  for r in radii[::-1] if rng.uniform() < 0.5 else radii:
    cx, cy = rng.uniform(-r, width + r), rng.uniform(-r, height + r)
    x0, x1 = int(max(0, cx - r)), int(min(width, cx + r + 1))
    y0, y1 = int(max(0, cy - r)), int(min(height, cy + r + 1))
    if x1 <= x0 or y1 <= y0:
      continue
    yy, xx = np.mgrid[y0:y1, x0:x1]
    if rng.uniform() < 0.6:
      mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    else:
      theta = rng.uniform(0, np.pi)
      ax, ay = r * rng.uniform(0.3, 1.0), r * rng.uniform(0.3, 1.0)
      u_ = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)
      v_ = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
      mask = (np.abs(u_) <= ax) & (np.abs(v_) <= ay)
    colour = colours[rng.integers(len(colours))] * rng.uniform(0.7, 1.15)
    shade = 1 + 0.15 * ((xx - cx) * rng.normal() + (yy - cy) * rng.normal()) / max(r, 1)
    out[y0:y1, x0:x1][mask] = np.clip(colour[None, :] * shade[mask][:, None], 0, 1)
  return out


def image(seed: int, index: int, size: tuple[int, int] = (256, 256), kind: str | None = None) -> np.ndarray:
  """Procedural image `index` of `seed`: uint8 (height, width, 3); size is (width, height)."""
  width, height = int(size[0]), int(size[1])
  if width < 8 or height < 8:
    raise ValueError(f'size must be at least 8x8, got {size}')
  rng = _rng(seed, index)
  kind = kind or KINDS[int(rng.integers(len(KINDS)))]
  if kind == 'dead_leaves':
    out = dead_leaves(rng, height, width)
  elif kind == 'texture':
    out = texture(rng, height, width)
  elif kind == 'composite':
    out = dead_leaves(rng, height, width, shapes=int(rng.integers(20, 80)),
                      fill=texture(rng, height, width))
    # One large textured "subject" so that there is a salient region.
    cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
    rx, ry = rng.uniform(0.1, 0.25) * width, rng.uniform(0.1, 0.25) * height
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    out[mask] = texture(rng, height, width)[mask] * 0.6 + _palette(rng, 1)[0] * 0.4
  else:
    raise ValueError(f'unknown kind {kind!r}; one of {KINDS}')
  return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def images(seed: int, count: int, size: tuple[int, int] = (256, 256)) -> Iterator[np.ndarray]:
  """`count` procedural images of `seed` (indices 0 .. count-1)."""
  for index in range(count):
    yield image(seed, index, size)


# scikit-image's sample photos that ship inside the package (loaded without
# network): name -> file in skimage/data. `cat` is `chelsea` (a duplicate on
# purpose: the splitter must keep them together).
SKIMAGE_PHOTOS = {
    'astronaut': 'astronaut.png', 'coffee': 'coffee.png', 'chelsea': 'chelsea.png',
    'cat': 'chelsea.png', 'rocket': 'rocket.jpg', 'camera': 'camera.png', 'coins': 'coins.png',
    'moon': 'moon.png', 'hubble_deep_field': 'hubble_deep_field.jpg',
    'immunohistochemistry': 'ihc.png', 'clock': 'clock_motion.png', 'grass': 'grass.png',
    'gravel': 'gravel.png', 'brick': 'brick.png', 'retina': 'retina.jpg', 'cell': 'cell.png',
    'colorwheel': 'color.png',
}


def skimage_photos(names: list[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
  """(name, uint8 RGB array) for scikit-image's bundled photos; absent ones are skipped.

  Only files present in the installed package are read, so nothing is ever
  downloaded; without scikit-image this yields nothing.
  """
  try:
    import skimage.data
  except ImportError:
    return
  import os
  from PIL import Image
  folder = os.path.dirname(skimage.data.__file__)
  for name in names if names is not None else list(SKIMAGE_PHOTOS):
    path = os.path.join(folder, SKIMAGE_PHOTOS.get(name, ''))
    if name not in SKIMAGE_PHOTOS or not os.path.isfile(path):
      continue
    try:
      with Image.open(path) as im:
        yield name, np.asarray(im.convert('RGB'))
    except OSError:
      continue
