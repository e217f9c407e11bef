"""Straightening: the tilt of a photo's long straight lines settles an auto-crop's angle.

    t = line_tilt(photo, (0.1, 0.2, 0.8, 0.9), around=1.5)   # box: fractions; angles: degrees
    t.angle, t.strength, t.found

What an editor's auto-straighten does, used the way the crop-pair code uses
alignment: the network proposes a crop and an angle, the photo's own straight
lines settle the angle. The photo (its long side brought down to at most
`WORKING_SIDE` px) is slightly blurred; its Canny edge pixels inside the
proposed turned crop, grown by `margin` of the crop's short side on every side
(so that the crop's own border lines count), are moved to the gradient's peak
along their normal (sub-pixel), and vote in a Hough transform for the lines
within `span` degrees of the proposed angle modulo 90 (a horizon and a wall's
edge tilt alike), each pixel only for tilts within `ORIENTATION` degrees of its
own gradient's. The evidence for a tilt is the sum over the accumulator's
lines of the squared votes above `FLOOR` short sides (a long line counts with
its length squared, clutter not at all), tried every `STEP` degrees; the tilt
is its best local maximum inside the span, interpolated between the steps.
`found` only where that evidence stands out (`MIN_STRENGTH`); otherwise the
proposal comes back unchanged.

The sign is Lightroom's (`cropjax.metadata.corners`): a line turned clockwise on
screen (y down) by a degrees gives the tilt +a, the crop angle that makes it
level again.

Every constant was chosen on the TRAIN photos of the demo library only (see
docs/autocrop.md, "Straightening").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from PIL import Image

WORKING_SIDE = 768    # the photo's long side is brought down to at most this many pixels
SPAN = 10.0           # degrees either side of the proposal (modulo 90) looked at, at most
                      # (predict_crops narrows it: inference.straightening_span)
MARGIN = 0.25         # the crop grown by this share of its short side on every side
MIN_STRENGTH = 0.05   # `found` from this strength up (see Tilt)
CANNY = (20.0, 50.0)  # Canny's hysteresis thresholds (L2 gradient of 8-bit grey)
BLUR = 0.7            # sigma (working pixels) of the Gaussian blur before the edges
ORIENTATION = 15.0    # degrees: an edge pixel votes for tilts this close to its gradient's
FLOOR = 0.1           # votes of a line below this many short sides of the crop do not count
BIN = 0.5             # the accumulator's line spacing, working pixels
STEP = 0.05           # degrees between the tilts tried
FIT_BAND = 1.5        # working pixels either side of a long line whose edge points refine it
FIT_LIMIT = 0.5       # degrees: the most the least-squares fit may move the Hough tilt


@dataclasses.dataclass(frozen=True)
class Tilt:
  """The settled angle (degrees, Lightroom's sign): the proposal itself unless `found`.

  `strength`: the line evidence at the tilt above the typical tilt's, as a length in
  short sides of the crop (about how far the straight edges at that tilt reach beyond
  the floor; one edge along the whole long side of a 3:2 crop gives about 1).
  `found`: strength >= the threshold, at a peak inside the span.
  """
  angle: float
  strength: float
  found: bool


def line_tilt(image: Image.Image | np.ndarray | Prepared, box: Sequence[float], around: float,
              *, span: float = SPAN, margin: float = MARGIN, min_strength: float = MIN_STRENGTH,
              canny: tuple[float, float] = CANNY) -> Tilt:
  """The tilt of the long straight lines in a proposed turned crop of `image`.

  `image`: a PIL image, an HxW / HxWx3 / HxWx4 array (uint8, uint16, or float in [0, 1]
  or, when its maximum is above 1, [0, 255]) or `prepare(photo)`. `box`: the crop's
  unturned rectangle (left, top, right, bottom fractions of the photo, as
  `CropPrediction.fraction`); `around`: its proposed angle (degrees, Lightroom's sign);
  lines within `span` degrees of it modulo 90 count. ValueError names a bad input
  (empty image, inverted box, non-finite angle).
  """
  tilts, energy, short, points = _evidence(image, box, around, span=span, margin=margin,
                                           canny=canny)
  around = float(around)
  peaks = np.zeros(len(energy), bool)
  peaks[1:-1] = (energy[1:-1] > 0) & (energy[1:-1] >= energy[:-2]) & (energy[1:-1] >= energy[2:])
  if not peaks.any():
    return Tilt(around, 0.0, False)
  best = int(np.argmax(np.where(peaks, energy, -1.0)))
  strength = math.sqrt(max(energy[best] - float(np.median(energy)), 0.0)) / short
  if strength < min_strength:
    return Tilt(around, strength, False)
  e0, e1, e2 = energy[best - 1:best + 2]
  curvature = e0 - 2 * e1 + e2
  offset = 0.5 * (e0 - e2) / curvature if curvature < 0 else 0.0
  angle = float(tilts[best] + np.clip(offset, -0.5, 0.5) * STEP)
  return Tilt(_fitted(points, angle, FLOOR * short), strength, True)


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A photo made ready for `line_tilt` once (`prepare`): grey, float32, 0-255, long side at
  most the working side. line_tilt gives the same answer for it as for the photo, so a caller
  can keep this small copy instead of the photo."""
  grey: np.ndarray


def prepare(image: Image.Image | np.ndarray, working_side: int = WORKING_SIDE) -> Prepared:
  """The photo as `line_tilt` works on it: grey, its long side brought down (area averaged)
  to at most `working_side` pixels."""
  import cv2
  if isinstance(image, Prepared):
    return image
  if working_side < 8:
    raise ValueError(f'line_tilt: working_side must be at least 8 pixels, got {working_side}')
  grey = _grey(image)
  h, w = grey.shape
  scale = working_side / max(h, w)
  if scale < 1:
    grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)
  return Prepared(grey)


def _grey(image) -> np.ndarray:
  """A PIL image or an HxW / HxWxC array -> float32 grey in [0, 255]; ValueError if unusable."""
  if isinstance(image, Image.Image):
    if image.width < 1 or image.height < 1:
      raise ValueError(f'line_tilt: empty image ({image.width}x{image.height})')
    return np.asarray(image.convert('L'), np.float32)
  if not isinstance(image, np.ndarray):
    raise ValueError('line_tilt: the image must be a PIL image or a numpy array, '
                     f'got {type(image).__name__}')
  if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
    raise ValueError(f'line_tilt: the image must be HxW, HxWx3 or HxWx4, got shape {image.shape}')
  if image.size == 0:
    raise ValueError(f'line_tilt: empty image (shape {image.shape})')
  if image.dtype == np.uint16:
    a = image.astype(np.float32) / 257.0
  elif np.issubdtype(image.dtype, np.floating):
    if not np.isfinite(image).all():
      raise ValueError('line_tilt: the image holds NaN or infinite values')
    a = image.astype(np.float32) * (255.0 if float(image.max()) <= 1.0 else 1.0)
  elif image.dtype in (np.uint8, np.bool_):
    a = image.astype(np.float32) * (255.0 if image.dtype == np.bool_ else 1.0)
  else:
    raise ValueError(f'line_tilt: unsupported image dtype {image.dtype} (use uint8, uint16 or float)')
  if a.ndim == 3:
    a = a[..., 0] if a.shape[-1] == 1 else a[..., :3] @ np.float32([0.299, 0.587, 0.114])
  return np.ascontiguousarray(a, np.float32)


def _checked_box(box: Sequence[float]) -> tuple[float, float, float, float]:
  try:
    values = tuple(float(v) for v in box)
  except (TypeError, ValueError):
    raise ValueError(f'line_tilt: box must be (left, top, right, bottom) fractions, got {box!r}') \
        from None
  if len(values) != 4:
    raise ValueError(f'line_tilt: box must hold 4 values (left, top, right, bottom), got {box!r}')
  if not all(math.isfinite(v) for v in values):
    raise ValueError(f'line_tilt: box values are not finite: {values}')
  l, t, r, b = values
  if not (l < r and t < b):
    raise ValueError(f'line_tilt: box is empty or inverted (left {l:g}, top {t:g}, '
                     f'right {r:g}, bottom {b:g})')
  return values


def _evidence(image, box: Sequence[float], around: float, *, span: float, margin: float,
              canny: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, float, list]:
  """(the tilts tried, the line evidence at each, the crop's short side in working pixels,
  the voting edge points as (x, y, own tilt, vertical) per family of lines)."""
  import cv2
  grey = prepare(image).grey
  l, t, r, b = _checked_box(box)
  around = float(around)
  if not math.isfinite(around):
    raise ValueError(f'line_tilt: the proposed angle is not finite ({around})')
  if not 0 < span < 45:
    raise ValueError(f'line_tilt: span must be between 0 and 45 degrees, got {span}')
  if not margin >= 0:
    raise ValueError(f'line_tilt: margin must be >= 0, got {margin}')
  h, w = grey.shape
  n = int(round(span / STEP))
  tilts = around + np.arange(-n, n + 1) * STEP
  energy = np.zeros(len(tilts))
  short = min((r - l) * w, (b - t) * h)
  points = []
  if short < 2:
    return tilts, energy, max(short, 1e-9), points
  # The proposed turned crop grown by the margin, as a mask in working pixels.
  cx, cy = (l + r) / 2 * w, (t + b) / 2 * h
  hw, hh = (r - l) / 2 * w + margin * short, (b - t) / 2 * h + margin * short
  c, s = math.cos(math.radians(around)), math.sin(math.radians(around))
  polygon = [(cx + c * dx - s * dy, cy + s * dx + c * dy)
             for dx, dy in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh))]
  mask = np.zeros((h, w), np.uint8)
  cv2.fillConvexPoly(mask, np.round(np.array(polygon) * 16).astype(np.int32), 1, cv2.LINE_8, 4)
  grey = cv2.GaussianBlur(grey, (0, 0), BLUR)
  edges = cv2.Canny(np.clip(grey + 0.5, 0, 255).astype(np.uint8), canny[0], canny[1],
                    L2gradient=True)
  ys, xs = np.nonzero((edges > 0) & (mask > 0))
  if len(xs) == 0:
    return tilts, energy, short, points
  gx_image = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
  gy_image = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
  gx, gy = gx_image[ys, xs].astype(np.float64), gy_image[ys, xs].astype(np.float64)
  # Sub-pixel: each edge pixel moved along its normal to the gradient magnitude's peak.
  magnitude = np.hypot(gx_image, gy_image)
  norm = np.maximum(np.hypot(gx, gy), 1e-9)
  nx, ny = gx / norm, gy / norm
  x, y = xs.astype(np.float64), ys.astype(np.float64)
  ahead, here, behind = (_bilinear(magnitude, x + nx, y + ny), magnitude[ys, xs],
                         _bilinear(magnitude, x - nx, y - ny))
  curvature = ahead - 2 * here + behind
  shift = np.clip(0.5 * (behind - ahead) / np.where(curvature < 0, curvature, -np.inf), -0.5, 0.5)
  x, y = x + shift * nx - w / 2, y + shift * ny - h / 2
  # The gradient is the normal of the line through the pixel: a near-plumb line turned by t
  # has its normal at t, a near-level one at 90 + t (modulo 180).
  phi = np.degrees(np.arctan2(gy, gx))
  size = math.hypot(w, h) + 2
  for vertical, offset in ((True, 0.0), (False, 90.0)):
    tau = around + _wrap(phi - offset - around, 180.0)
    keep = np.abs(tau - around) <= span + ORIENTATION
    energy += _energy(x[keep], y[keep], tau[keep], tilts, vertical, size, FLOOR * short)
    points.append((x[keep], y[keep], tau[keep], vertical))
  return tilts, energy, short, points


def _fitted(points: list, angle: float, floor: float) -> float:
  """The Hough tilt refined by least squares: the edge points within FIT_BAND working pixels
  of the accumulator's long lines at `angle` (votes above `floor`), fitted with one shared
  direction and an offset per line. The accumulator's bins favour tilts whose lines run
  along the pixel grid; the fit does not. The Hough tilt stays where the fit moves it by
  more than FIT_LIMIT degrees or has too few points."""
  t = math.radians(angle)
  c, s = math.cos(t), math.sin(t)
  scatter, count = np.zeros((2, 2)), 0
  for x, y, tau, vertical in points:
    near = np.abs(tau - angle) <= ORIENTATION
    x, y = x[near], y[near]
    if not vertical:  # a level line turned by t is a plumb one turned by t after (x, y) -> (y, -x)
      x, y = y, -x
    rho = c * x + s * y
    if len(rho) < 3:
      continue
    k = np.floor(rho / BIN).astype(np.int64)
    k0 = int(k.min())
    votes = np.bincount(k - k0)
    votes = np.convolve(votes, np.ones(3), 'same')  # a line's points fall in a bin or its neighbours
    free = np.ones(len(rho), bool)
    for line in np.argsort(-votes):
      if votes[line] <= floor:
        break
      on = free & (np.abs(rho - (line + k0 + 0.5) * BIN) <= FIT_BAND)
      if on.sum() <= floor:  # its points went to a stronger line beside it
        continue
      free &= ~on
      p = np.stack([x[on], y[on]], 1)
      p = p - p.mean(0)
      scatter += p.T @ p
      count += int(on.sum())
  if count < 10:
    return angle
  _, vectors = np.linalg.eigh(scatter)
  dx, dy = vectors[:, 1]  # the shared direction of the lines: (-sin t, cos t) for a plumb line
  fitted = math.degrees(math.atan2(-dx, dy))
  fitted = angle + _wrap(np.float64(fitted - angle), 180.0)
  return float(fitted) if abs(fitted - angle) <= FIT_LIMIT else angle


def _energy(x: np.ndarray, y: np.ndarray, tau: np.ndarray, tilts: np.ndarray, vertical: bool,
            size: float, floor: float) -> np.ndarray:
  """Per tilt, the sum over the accumulator's lines of (votes - floor)^2 of the points (x, y)
  (centred) whose own tilt tau is within ORIENTATION degrees."""
  out = np.zeros(len(tilts))
  order = np.argsort(tau)
  x, y, tau = x[order], y[order], tau[order]
  first = np.searchsorted(tau, tilts - ORIENTATION)
  last = np.searchsorted(tau, tilts + ORIENTATION, side='right')
  bins = int(size / BIN) + 2
  for i, t in enumerate(np.radians(tilts)):
    if last[i] <= first[i]:
      continue
    xs, ys = x[first[i]:last[i]], y[first[i]:last[i]]
    c, s = math.cos(t), math.sin(t)
    rho = ((c * xs + s * ys) if vertical else (c * ys - s * xs)) / BIN + bins / 2 - 1
    k = np.floor(rho)
    f = rho - k
    k = k.astype(np.int64)
    votes = np.bincount(k, 1 - f, minlength=bins) + np.bincount(k + 1, f, minlength=bins)
    votes = np.maximum(votes - floor, 0.0)
    out[i] = float(np.dot(votes, votes))
  return out


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """`image` sampled at float (x, y), clamped to its edges."""
  h, w = image.shape
  x = np.clip(x, 0, max(w - 1.001, 0))
  y = np.clip(y, 0, max(h - 1.001, 0))
  x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
  x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
  fx, fy = x - x0, y - y0
  top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
  bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
  return top * (1 - fy) + bottom * fy


def _wrap(degrees: np.ndarray, period: float) -> np.ndarray:
  """Into [-period / 2, period / 2)."""
  return (degrees + period / 2) % period - period / 2
