"""Exact alignment of a crop inside its original, coarse to fine.

    a = cropjax.align(original, crop, box=(120, 80, 520, 380))   # a start box, pixels
    a.box, a.angle, a.score, a.converged, a.inside

The crop is modelled as the original's content inside a box (x0, y0, x1, y1,
pixels of the original; one scale and one shift per axis), optionally turned
by `angle` degrees about the box's centre (a straightened crop). Starting from
a box (a model's proposal, or `search`'s when there is none) the box is
refined photometrically over three stages, each at twice the previous
resolution (a template of the crop 32, 64, then 128 samples across its long
side, never more than the crop's own pixels: a tenth of a sample is then
well under a pixel of most originals): at each stage the original is
read around the current box at the template's scale (from a pyramid, so it is
antialiased; where the angle is fitted, at `ANGLE_OVERSAMPLE` pixels a sample,
so the read blurs alike at every angle) and the box is fitted by
Levenberg-Marquardt (optimistix) on the zero-mean, unit-variance difference of
the two, so a change of exposure or contrast and JPEG noise do not move it (the
squared residual over n samples is 2 n (1 - ZNCC)). From the second stage on, the
template is first divided by the smooth gain field (quadratic across the crop)
that best maps the original under the stage's start box onto it (`_flattened`),
so an editor's vignette or graduated filter does not move it either.
The first stage starts from the best place near the given box by normalised
cross-correlation at whole samples and a few scales (OpenCV's `matchTemplate`).

`score` is the zero-mean normalised cross-correlation of the crop (its shading
undone as above) and the original inside the final box at the finest stage;
where the box runs beyond the original's frame, only the part inside counts and
`inside` (the share of the box within the frame) says how much that is. A result never scores worse
than its start (the start is returned instead), and a stage never turns the box
inside out (x1 < x0 reads the template mirrored: a mirrored crop fits that way; the
stage keeps its start). `blocks` holds the same
correlation on a 4 x 4 grid of the crop: a true crop matches everywhere, a
near-duplicate (another viewpoint) falls off towards the corners.

The pixel work is JAX (`jax.vmap` over the batch, one compiled function per
stage and batch size, batches of at most `CHUNK` pairs, a stage's calls of at most
`CALL_SAMPLES` samples so its working set stays in cache, and on the CPU at least
`CPU_CALLS` of them, run side by side on the cores): without an angle the
warp is separable, so each read is two gathers of two taps (rows, then columns),
and the solver's Jacobian comes in closed form from the same reads of neighbour
differences (`_separable_residual`); with an angle, gathers and autodiff. The pyramids
and the reads around each box are OpenCV on the host.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np

from cropjax import threads

# (template samples across the crop's long side, margin read around the box as a
# fraction of its size, solver steps at most, the first only evaluating the start) per
# stage, coarse to fine. A batch runs as many steps as its slowest pair: with the residual
# at a sample's scale (`_residual`) most pairs settle within these.
STAGES = ((32, 0.35, 10), (64, 0.2, 6), (128, 0.08, 5))
BLOCKS = 4  # the score grid is BLOCKS x BLOCKS
PEAK_SHIFT = 0.04  # of the box's size, for `Alignment.peak`
# The first stage's seeding search around the start: sizes relative to the start's.
_SCALES = (0.85, 1.0, 1.0 / 0.85)


class AlignError(ValueError):
  """Bad input to `align`: the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Alignment:
  """Where the crop lies in the original, and how well it matches there."""
  box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the original
  angle: float       # degrees the crop is turned in the original (counter-clockwise on screen)
  score: float       # ZNCC of crop and original in the box, on the part inside the frame
  start_score: float  # the same at the start box
  converged: bool    # the finest stage moved the box by less than half a sample (it settled)
  inside: float      # share of the box inside the original's frame
  blocks: tuple[float, ...]  # ZNCC per cell of a 4 x 4 grid over the crop (row-major)
  #                  (empty, and `peak`, `detail` NaN, from align_batch(detail=False); empty
  #                  and `peak` NaN from align_batch(detail='detail'))
  peak: float = 0.0  # how far the ZNCC falls when the box moves by 4 % of its size along
  #                    the axis where it falls least: far for a distinctive match, hardly at
  #                    all on flat content (sky, blur) or content that slides along one axis
  detail: float = 0.0  # ZNCC of the two band-passed (fine detail only, `_band`): high where
  #                      the texture itself matches, near 0 where only smooth shading does


# ------------------------------------------------------------------ host side


def _gray(image) -> np.ndarray:
  """Any image (PIL, uint8/float array, HxW or HxWxC) -> float32 luma HxW in [0, 1]."""
  import cv2
  from PIL import Image
  if isinstance(image, Image.Image):
    image = np.asarray(image.convert('RGB'))
  a = np.asarray(image)
  scale = 1 / 255 if a.dtype == np.uint8 else None
  if a.size == 0:
    return np.zeros(a.shape[:2], np.float32)
  if a.ndim == 3 and a.shape[-1] in (3, 4):
    if a.dtype not in (np.uint8, np.float32):
      a = a.astype(np.float32)
    # Luma in float (0.299 R + 0.587 G + 0.114 B): no rounding to 8 bits on the way.
    a = cv2.cvtColor(np.ascontiguousarray(a[..., :3]).astype(np.float32, copy=False),
                     cv2.COLOR_RGB2GRAY)
  elif a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim != 2:
    raise AlignError(f'an image must be HxW or HxWxC (C = 1, 3 or 4), got shape {a.shape}')
  a = a.astype(np.float32)
  if scale is None and a.max(initial=0) > 1.5:
    scale = 1 / 255
  return a * np.float32(scale) if scale else a


def spread(image: np.ndarray) -> float:
  """The standard deviation of an image's pixels, in one pass of OpenCV's (numpy's `std` costs
  tens of microseconds of Python a call, and flatness is asked of every template tried)."""
  import cv2
  return float(cv2.meanStdDev(image)[1][0, 0])


class Pyramid:
  """An image's luma and its halvings (area-averaged), made once and reused."""

  def __init__(self, image, name: str = 'image'):
    import cv2
    try:
      g = _gray(image)
    except AlignError as e:
      raise AlignError(f'{name}: {e}') from None
    if g.size == 0 or min(g.shape) < 2:
      raise AlignError(f'{name}: empty image ({g.shape[1]}x{g.shape[0]})')
    if not np.isfinite(g).all():
      raise AlignError(f'{name}: holds NaN or infinite values')
    self.height, self.width = g.shape
    self.levels = [g]
    while min(self.levels[-1].shape) >= 16:  # level k: pixel j covers [j 2^k, (j + 1) 2^k)
      level = self.levels[-1]
      h, w = level.shape
      if h % 2 or w % 2:  # an odd side is padded by its edge, so each level halves exactly
        level = np.pad(level, ((0, h % 2), (0, w % 2)), mode='edge')
      self.levels.append(cv2.resize(level, (level.shape[1] // 2, level.shape[0] // 2),
                                    interpolation=cv2.INTER_AREA))

  def resized(self, size: tuple[int, int], oversample: int = 1) -> np.ndarray:
    """The image area-resized to (w, h), from the smallest level with `oversample` times the
    detail."""
    import cv2
    k = min(max(math.floor(math.log2(self.width / max(size[0] * oversample, 1))), 0),
            len(self.levels) - 1)
    if k == 0:
      return cv2.resize(self.levels[0], size, interpolation=cv2.INTER_AREA)
    level = self.levels[k][:-(-self.height // 2**k), :-(-self.width // 2**k)]
    return cv2.resize(level, size, interpolation=cv2.INTER_AREA)

  @property
  def size(self) -> tuple[int, int]:
    return self.width, self.height

  def template(self, size: tuple[int, int], exact: bool = False) -> np.ndarray:
    """The image area-resized to (w, h) from a level with at least twice the detail (close to
    the exact average of each pixel's area), or (`exact`) from the full image: a halved level
    pads an odd side by its edge pixel, which stretches what is read from it by up to 2^k - 1
    pixels of the image. Kept: every start of a pair reads the same ones."""
    import cv2
    cache = self.__dict__.setdefault('_templates', {})
    if (size, exact) not in cache:
      if size == self.size:
        cache[size, exact] = self.levels[0]
      elif exact:
        cache[size, exact] = cv2.resize(self.levels[0], size, interpolation=cv2.INTER_AREA)
      else:
        cache[size, exact] = self.resized(size, oversample=2)
    return cache[size, exact]

  def read(self, affine: np.ndarray, out: tuple[int, int],
           step: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and inside-mask of an (out_w, out_h) raster whose pixel (j, i) centre maps to
    affine @ (j + 0.5, i + 0.5, 1) in this image's continuous pixel coordinates; `step` is
    the raster's spacing in image pixels (it picks the pyramid level)."""
    import cv2
    k = min(math.floor(math.log2(max(step, 1.0))), len(self.levels) - 1)
    level = self.levels[k]
    s = (0.5**k, 0.5**k)
    # raster (j, i) -> level's pixel-index coordinates (continuous minus 0.5)
    m = np.float64(affine)
    m = np.diag([s[0], s[1]]) @ m
    m[:, 2] += m[:, 0] * 0.5 + m[:, 1] * 0.5 - 0.5
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    pixels = cv2.warpAffine(level, m, out, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    ones = self.__dict__.setdefault('_ones', {})
    if k not in ones:  # made once per level: a warp's cost is its output's size
      ones[k] = np.ones_like(level)
    ones = ones[k]
    inside = cv2.warpAffine(ones, m, out, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    return pixels, inside


def _template_size(crop: Pyramid, samples: int) -> tuple[int, int]:
  long = min(samples, max(crop.size))
  scale = long / max(crop.size)
  return max(2, round(crop.width * scale)), max(2, round(crop.height * scale))


def _box_affine(box: np.ndarray, angle_deg: float, size: tuple[int, int]) -> np.ndarray:
  """The 2x3 map from a (w, h) raster spanning the turned box to original pixels."""
  x0, y0, x1, y1 = box
  w, h = size
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  t = np.deg2rad(angle_deg)
  c, s = np.cos(t), np.sin(t)
  sx, sy = (x1 - x0) / w, (y1 - y0) / h
  # raster (j, i) -> offset from the centre in crop axes -> turned into the original
  rot = np.array([[c, s], [-s, c]])
  lin = rot @ np.diag([sx, sy])
  off = np.array([cx, cy]) - lin @ np.array([w / 2, h / 2])
  return np.concatenate([lin, off[:, None]], 1)


# Canvas pixels a template sample spans in the stages that fit the angle (`_stage_inputs`). Read
# at one, the template's samples fall on the canvas's own pixel centres at the start angle, where
# a bilinear read does not blur, and at every other angle between them, where it does: the fit
# then favours the angle it started from (crops turned 1-2.5 degrees settled up to 0.27 degrees
# short at 64 samples, however many steps it took). At two the read blurs alike at every angle
# (docs/real_photos.md, "The search at a crop's own scale, and the angle without pixel
# locking").
ANGLE_OVERSAMPLE = 2


def _oversample(with_angle: bool) -> int:
  """Canvas pixels a template sample spans in a stage (`ANGLE_OVERSAMPLE` where it fits the
  angle)."""
  return ANGLE_OVERSAMPLE if with_angle else 1


def _stage_inputs(original: Pyramid, crop: Pyramid, box: np.ndarray, angle: float,
                  samples: int, margin: float, over: int = 1, flatten: bool | None = None):
  """One pair's template, canvas and start parameters for a stage.

  The canvas is the original read around the box (the box grown by `margin`
  on each side) at the template's sampling step, on the box's turned axes, with
  `over` x `over` canvas pixels a sample (from the pyramid level that step picks);
  in canvas pixels the box then starts at over x (m*tw, m*th, (1+m)*tw, (1+m)*th).
  `flatten`: divide the template by the gain field (`_flattened`); by default from the
  second stage on."""
  tw, th = _template_size(crop, samples)
  # The finest stage's template is exact (its box is the answer); coarser ones are cheaper.
  template = crop.template((tw, th), exact=samples >= STAGES[-1][0])
  mw, mh = round(margin * tw), round(margin * th)
  cw, ch = tw + 2 * mw, th + 2 * mh
  grown = np.array([box[0] - (box[2] - box[0]) * mw / tw, box[1] - (box[3] - box[1]) * mh / th,
                    box[2] + (box[2] - box[0]) * mw / tw, box[3] + (box[3] - box[1]) * mh / th])
  affine = _box_affine(grown, angle, (cw * over, ch * over))
  step = float(np.sqrt(abs(np.linalg.det(affine[:, :2])))) * over
  canvas, inside = original.read(affine, (cw * over, ch * over), step)
  if (samples > STAGES[0][0] if flatten is None else flatten) and FIELD_TERMS:
    template = _flattened(template, canvas, inside, (mw, mh), over)
  return (template, canvas, inside, np.array([mw, mh, mw + tw, mh + th], np.float64) * over,
          affine)


# Powers (i, j) of the crop's coordinates u, v in [-1, 1] whose products with the original's
# pixels model a smooth change of gain between the two (`_flattened`): a vignette, a graduated
# filter, a dodged corner. The constant first; empty: none.
FIELD_TERMS = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
FIELD_RANGE = (0.25, 4.0)  # the gain field is clipped to this
FIELD_SAMPLES = 32  # about this many samples a side fit the field


def _flattened(template: np.ndarray, canvas: np.ndarray, inside: np.ndarray,
               at: tuple[int, int], over: int) -> np.ndarray:
  """The template divided by the smooth gain field (`FIELD_TERMS`) that best maps the original's
  pixels under the stage's start box onto it, template ~ field * (a * original + b): an edit
  that brightens or darkens parts of the crop (a vignette, a graduated filter) then no longer
  pulls the box or lowers the score. Where the box is off, the field fitted is what little the
  two share in their shading; a true crop needs none and gets one close to 1. The field is
  smooth, so it is fitted on about `FIELD_SAMPLES` samples a side."""
  th, tw = template.shape
  k = max(1, min(th, tw) // FIELD_SAMPLES)  # every k-th sample each way
  # the original under the box at those samples (the canvas has `over` pixels a sample)
  r0, c0 = (at[1] + k // 2) * over + over // 2, (at[0] + k // 2) * over + over // 2
  s = canvas[r0:(at[1] + th) * over:k * over, c0:(at[0] + tw) * over:k * over]
  w = inside[r0:(at[1] + th) * over:k * over, c0:(at[0] + tw) * over:k * over] > 0.999
  t = template[k // 2::k, k // 2::k]
  basis, powers_v, powers_u = _field_basis(th, tw, k, FIELD_TERMS)
  s, w, t = s.ravel().astype(np.float64), w.ravel(), t.ravel().astype(np.float64)
  if w.sum() < 4 * len(FIELD_TERMS):
    return template
  if not w.all():
    s, t, basis = s[w], t[w], basis[:, w]
  s = s - s.mean()
  spread2 = s @ s
  if spread2 < 1e-8 * len(s):
    return template
  field = 1.0
  for _ in range(2):  # the level (a, b) given the field, then the field given the level
    flat = t / field
    level = (s @ flat / spread2) * s + flat.mean()
    x = basis * level
    gram = x @ x.T
    ridge = 1e-3 * np.trace(gram) / len(basis)
    unit = np.eye(len(basis))  # its first row: the field 1, which the fit leans to
    d = np.linalg.solve(gram + ridge * unit, x @ t + ridge * unit[0])
    if d[0] <= 0:  # the crop darker where the original is brighter: no field explains that
      return template
    field = np.clip(d @ basis, *FIELD_RANGE)
  coef = np.zeros((powers_v.shape[1], powers_u.shape[1]))
  for dk, (i, j) in zip(d, FIELD_TERMS):
    coef[j, i] = dk
  full = np.clip(powers_v @ coef @ powers_u.T, *FIELD_RANGE)
  return (template / full).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _field_basis(th: int, tw: int, k: int, terms: tuple):
  """The field's `terms` at every k-th sample of a th x tw template, flattened ([terms,
  samples]), and the powers of v and u at every sample ([th, degree + 1], [tw, degree + 1])."""
  degree = max(max(t) for t in terms)
  u, v = (np.arange(tw) + 0.5) / tw * 2 - 1, (np.arange(th) + 0.5) / th * 2 - 1
  pu, pv = u[:, None] ** np.arange(degree + 1), v[:, None] ** np.arange(degree + 1)
  su, sv = pu[k // 2::k], pv[k // 2::k]
  basis = np.stack([np.outer(sv[:, j], su[:, i]).ravel() for i, j in terms])
  return basis, pv, pu


# ------------------------------------------------------------------ JAX side


def _tent(coords, n):
  """Rows of bilinear weights: row k reads position coords[k] (continuous) of n pixels, 0
  beyond the outer pixels."""
  import jax.numpy as jnp
  d = (coords - 0.5)[:, None] - jnp.arange(n, dtype=coords.dtype)[None, :]
  return jnp.maximum(0.0, 1.0 - jnp.abs(d))


def _taps(coords, n):
  """Where a bilinear read at continuous positions `coords` (pixel centres at k + 0.5) of n
  pixels takes its two taps: (k, the weight of k + 1, 1 where the position lies inside the
  outer centres, else 0). Positions beyond them read the edge pixel ('nearest')."""
  import jax.numpy as jnp
  c = coords - 0.5
  inner = ((c > 0.0) & (c < n - 1.0)).astype(c.dtype)
  c = jnp.clip(c, 0.0, n - 1.0)
  k = jnp.clip(jnp.floor(c), 0, n - 2).astype(jnp.int32)
  return k, c - k, inner


def _lerp_rows(image, k, f):
  """Rows k + f of image, bilinearly, and their slopes along the rows: the difference of rows
  k + 1 and k, or on a row itself (f = 0, where a read has no single slope) the central
  difference of its neighbours."""
  import jax.numpy as jnp
  take = lambda i: jnp.take(image, i, axis=0, mode='clip')
  a, b = take(k), take(k + 1)
  slope = jnp.where((f == 0.0)[:, None], 0.5 * (b - take(jnp.maximum(k - 1, 0))), b - a)
  return a + f[:, None] * (b - a), slope


def _read_separable(x, y, image):
  """image read bilinearly at the grid x (columns) by y (rows), positions beyond the edge
  reading the edge pixel: a gather of two rows per output row, then of two columns."""
  rows, _ = _lerp_rows(image, *_taps(y, image.shape[0])[:2])
  return _lerp_rows(rows.T, *_taps(x, image.shape[1])[:2])[0].T


def _profile_at(profile, coords):
  """A mask's row or column profile read bilinearly at positions `coords`, 0 beyond its ends."""
  return _tent(coords, profile.shape[0]) @ profile


def _profiles(inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """A canvas's inside-mask read on the frame's own axes is the product of a row and a column
  profile (the frame is a rectangle there): those two, exact for such a mask."""
  i, j = np.unravel_index(np.argmax(inside), inside.shape)
  peak = max(float(inside[i, j]), 1e-6)
  return inside[:, j].copy(), inside[i, :] / peak


def _separable(inside: np.ndarray, profiles: tuple[np.ndarray, np.ndarray]) -> bool:
  """Whether the mask is its profiles' product: always on the frame's axes; on a turned
  canvas (a straightened crop's), only where the frame's edge does not cross it."""
  return bool(np.abs(np.outer(*profiles) - inside).max() < 1e-3)


def _mask_at(cmask, x, y, transposed: bool = False):
  """The canvas's inside-mask read at the grid x (columns) by y (rows), (rows, columns) or
  `transposed`: from its row and column profiles (`_profiles`; 0 beyond them), or where it is
  not their product (`_separable`), from the mask itself (its edge beyond it)."""
  if isinstance(cmask, tuple):
    rows, cols = cmask
    if transposed:
      return _profile_at(cols, x)[:, None] * _profile_at(rows, y)[None, :]
    return _profile_at(rows, y)[:, None] * _profile_at(cols, x)[None, :]
  read = _read_separable(x, y, cmask)
  return read.T if transposed else read


def _warp(params, tsize, tshape, canvas, cmask, with_angle):
  """The canvas and its inside-mask read at the template's sample centres under params
  (x0, y0, x1, y1[, angle]), bilinearly. Without an angle the map is separable: the canvas
  read is two gathers (`_read_separable`), and the mask (given as its row and column
  profiles, see `_profiles`) an outer product of two vectors; with an angle both are
  gathers."""
  import jax
  import jax.numpy as jnp
  th, tw = tshape
  u = (jnp.arange(tw) + 0.5) / tsize[0]
  v = (jnp.arange(th) + 0.5) / tsize[1]
  x0, y0, x1, y1 = params[0], params[1], params[2], params[3]
  if not with_angle:
    x, y = x0 + u * (x1 - x0), y0 + v * (y1 - y0)
    sampled = _read_separable(x, y, canvas)
    xs, ys = jax.lax.stop_gradient((x, y))  # the frame's mask does not move with the box
    return sampled, _mask_at(cmask, xs, ys)
  from jax.scipy import ndimage
  u, v = jnp.meshgrid(u, v)
  dx, dy = (u - 0.5) * (x1 - x0), (v - 0.5) * (y1 - y0)
  t = jnp.deg2rad(params[4])
  c, s = jnp.cos(t), jnp.sin(t)
  x = (x0 + x1) / 2 + c * dx + s * dy
  y = (y0 + y1) / 2 - s * dx + c * dy
  coords = [y - 0.5, x - 0.5]
  return (ndimage.map_coordinates(canvas, coords, order=1, mode='nearest'),
          jax.lax.stop_gradient(
              ndimage.map_coordinates(cmask, coords, order=1, mode='constant', cval=0.0)))


def _zncc_terms(template, tmask, sampled, weight):
  """Both sides standardised over the weighted points -> (their difference, ZNCC)."""
  import jax.numpy as jnp
  w = tmask * weight
  n, root = _sample_weights(w)
  (zt, _), (zs, _) = _standardise(template, w, n, root), _standardise(sampled, w, n, root)
  return zt - zs, _total(zt, zs)


def _sample_weights(w):
  """(the weights' total, at least 1e-6; their square roots, 0 where there is no weight)."""
  import jax.numpy as jnp
  positive = w > 0
  root = jnp.where(positive, jnp.sqrt(jnp.where(positive, w, 1.0)), 0.0)  # no inf gradient at 0
  return jnp.maximum(_total(w), 1e-6), root


def _standardise(a, w, n, root):
  """a less its mean under weights w (`_sample_weights`: n, root), times root, at unit norm ->
  (that, its norm before)."""
  import jax.numpy as jnp
  d = (a - _total(a, w) / n) * root
  norm = jnp.sqrt(_total(d, d) + 1e-8)
  return d / norm, norm


def _total(a, b=None):
  """The sum of a (times b) over all its samples, as a product of two vectors: XLA's reductions
  on the CPU take several times as long as its dot products."""
  import jax.numpy as jnp
  return jnp.dot(a.reshape(-1), (jnp.ones_like(a) if b is None else b).reshape(-1))


@functools.lru_cache(maxsize=None)
def _separable_residual():
  """`_residual` without an angle, with its Jacobian in closed form (`jax.custom_jvp`): the
  read's slopes and the standardisation's derivative, a tangent then one contraction with the
  Jacobian (and its transpose another), not the reads and sums again per direction."""
  import jax
  import jax.numpy as jnp

  def parts(params, template, tmask, tsize, canvas, cmask, jacobian):
    # Everything here is transposed (x first): the reads' second gather gives columns, and a
    # residual's layout is the solver's own business (only its squares are summed).
    th, tw = template.shape
    u = (jnp.arange(tw) + 0.5) / tsize[0]
    v = (jnp.arange(th) + 0.5) / tsize[1]
    x = params[0] + u * (params[2] - params[0])
    y = params[1] + v * (params[3] - params[1])
    ky, fy, in_y = _taps(y, canvas.shape[0])
    kx, fx, in_x = _taps(x, canvas.shape[1])
    rows, along = _lerp_rows(canvas, ky, fy)
    if jacobian:  # the rows' slopes read along the columns with them
      rows = jnp.concatenate([rows, along * in_y[:, None]])
    read, across = _lerp_rows(rows.T, kx, fx)  # (tw, th or 2 th)
    sampled = read[:, :th]
    w = tmask.T * _mask_at(cmask, x, y, transposed=True)
    n, root = _sample_weights(w)
    z_t, _ = _standardise(template.T, w, n, root)
    z_s, norm = _standardise(sampled, w, n, root)
    scale = jnp.sqrt(jnp.maximum(_total(w), 1.0))
    r = (z_t - z_s) * scale
    if not jacobian:
      return r
    # d sampled / d (x0, y0, x1, y1): the read's slopes along x and y, each sample's share
    along_x, along_y = across[:, :th] * in_x[:, None], read[:, th:]
    ds = jnp.stack([along_x * (1 - u)[:, None], along_y * (1 - v)[None, :],
                    along_x * u[:, None], along_y * v[None, :]]).reshape(4, -1)
    # sums over the samples as products with a vector (as `_total`)
    dd = (ds - (ds @ w.reshape(-1) / n)[:, None]) * root.reshape(1, -1)
    dz = (dd - z_s.reshape(1, -1) * (dd @ z_s.reshape(-1))[:, None]) / norm
    return r, (-dz * scale).reshape(4, tw, th)

  @jax.custom_jvp
  def residual(params, template, tmask, tsize, canvas, cmask):
    return parts(params, template, tmask, tsize, canvas, cmask, False)

  @residual.defjvp
  def residual_jvp(primals, tangents):
    # Only the parameters move: the images and masks are data, never differentiated here.
    r, jac = parts(*primals, True)
    return r, jnp.tensordot(tangents[0], jac, 1)

  return residual


def _residual(params, args):
  """Per sample, the difference of the two sides standardised to unit variance. (`_zncc_terms`
  gives it unit norm over all samples: scaled back to a sample's own size, the Jacobian's
  scale does not shrink as the template grows, and Levenberg-Marquardt's first damping, 1,
  is small beside it: its first steps are close to Gauss-Newton's, not the short ones of
  steepest descent that took most of a stage's steps.)"""
  import jax.numpy as jnp
  template, tmask, tsize, canvas, cmask, with_angle = args
  if not with_angle:
    return _separable_residual()(params, template, tmask, tsize, canvas, cmask)
  sampled, inside = _warp(params, tsize, template.shape, canvas, cmask, with_angle)
  diff, _ = _zncc_terms(template, tmask, sampled, inside)
  return diff * jnp.sqrt(jnp.maximum(_total(tmask, inside), 1.0))


def _read_fit(params, template, tmask, tsize, canvas, cmask, with_angle):
  """(the read and its inside-mask (`_warp`), ZNCC, share of the template inside the frame) at
  params."""
  import jax.numpy as jnp
  sampled, inside = _warp(params, tsize, template.shape, canvas, cmask, with_angle)
  share = _total(inside, tmask) / jnp.maximum(_total(tmask), 1.0)
  return sampled, inside, _zncc_terms(template, tmask, sampled, inside)[1], share


def _fit_terms(params, template, tmask, tsize, canvas, cmask, with_angle):
  """(ZNCC, share of the template inside the frame) at params."""
  return _read_fit(params, template, tmask, tsize, canvas, cmask, with_angle)[2:]


def _block_zncc(template, tmask, tsize, sampled, inside):
  """ZNCC on each cell of a BLOCKS x BLOCKS grid over the template, from per-cell sums."""
  import jax
  import jax.numpy as jnp
  th, tw = template.shape
  rows = jnp.minimum((jnp.arange(th) / tsize[1] * BLOCKS).astype(jnp.int32), BLOCKS - 1)
  cols = jnp.minimum((jnp.arange(tw) / tsize[0] * BLOCKS).astype(jnp.int32), BLOCKS - 1)
  onehot_r = jax.nn.one_hot(rows, BLOCKS, dtype=template.dtype)  # (th, B)
  onehot_c = jax.nn.one_hot(cols, BLOCKS, dtype=template.dtype)  # (tw, B)
  w = tmask * inside

  def cells(a):  # (th, tw) -> (B, B) sums per cell
    return onehot_r.T @ a @ onehot_c

  n = jnp.maximum(cells(w), 1e-6)
  mt, ms = cells(w * template) / n, cells(w * sampled) / n
  vt = cells(w * template * template) / n - mt * mt
  vs = cells(w * sampled * sampled) / n - ms * ms
  cov = cells(w * template * sampled) / n - mt * ms
  return (cov / jnp.sqrt(jnp.maximum(vt, 0.0) * jnp.maximum(vs, 0.0) + 1e-12)).reshape(-1)


def _score(params, template, tmask, tsize, canvas, cmask, with_angle):
  """(ZNCC, share inside the frame, ZNCC per block, peak, detail) at params; peak: how far the
  ZNCC falls when the box moves by `PEAK_SHIFT` of its size, both ways along the axis where it
  falls least (content that slides along one axis, such as motion blur or planks, has no peak)."""
  import jax
  import jax.numpy as jnp
  w, h = params[2] - params[0], params[3] - params[1]
  # the box moved right, left, down and up, read together (one batch of reads, not four)
  moves = jnp.array([[1, 0, 1, 0], [-1, 0, -1, 0], [0, 1, 0, 1], [0, -1, 0, -1]], params.dtype)
  moves = jnp.pad(PEAK_SHIFT * moves * jnp.stack([w, h, w, h]), ((0, 0), (0, len(params) - 4)))
  shifted = jax.vmap(lambda q: _fit_terms(q, template, tmask, tsize, canvas, cmask,
                                          with_angle)[0])(params + moves)
  sampled, inside, zncc, share = _read_fit(params, template, tmask, tsize, canvas, cmask,
                                           with_angle)
  blocks = _block_zncc(template, tmask, tsize, sampled, inside)
  detail = _detail(template, tmask, sampled, inside)
  drop = zncc - shifted
  peak = jnp.minimum(drop[:2].mean(), drop[2:].mean())  # along the axis it falls least
  return zncc, share, blocks, peak, detail


def _detail(template, tmask, sampled, inside):
  """ZNCC of the band-passed template and read (`_band`), away from the mask's edges."""
  w = tmask * inside
  core = (_blur(w, 2) > 0.999).astype(w.dtype)  # where the band-pass sees no edge of the mask
  return _zncc_terms(_band(template), tmask, _band(sampled), inside * core)[1]


def _fit_and_detail(params, template, tmask, tsize, canvas, cmask, with_angle):
  """(ZNCC, share inside the frame, detail) at params: `_score` without its blocks and peak."""
  sampled, inside, zncc, share = _read_fit(params, template, tmask, tsize, canvas, cmask,
                                           with_angle)
  return zncc, share, _detail(template, tmask, sampled, inside)


def _blur(a, times: int = 1):
  """`times` passes of the separable binomial filter [1, 4, 6, 4, 1] / 16 (edges repeated)."""
  import jax
  import jax.numpy as jnp
  k = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)
  for _ in range(times):
    for axis in (0, 1):
      p = jnp.pad(a, [(2, 2) if ax == axis else (0, 0) for ax in (0, 1)], mode='edge')
      n = a.shape[axis]  # static slices, not gathers: XLA fuses them into one pass
      a = sum(w * jax.lax.slice_in_dim(p, i, i + n, axis=axis) for i, w in enumerate(k))
  return a


def _band(a):
  """Fine detail: the image blurred once less its blur four times (a difference of Gaussians,
  sigma 1 and 2 samples): shading and exposure gone, and most of JPEG's block noise."""
  b = _blur(a)
  return b - _blur(b, 3)


@functools.lru_cache(maxsize=None)
def _stage_fn(with_angle: bool, max_steps: int, scored: bool = False, over: int = 1):
  """The jitted, batched refinement of one stage (on a canvas of `over` pixels a sample);
  `scored`: also (ZNCC, share inside) at the result and at `given` (`_fit_terms`), in the same
  call."""
  import jax
  import jax.numpy as jnp
  import lineax as lx
  import optimistix as optx

  # Each damped step solves its normal equations (4 x 4, with an angle 5 x 5) by Cholesky,
  # not optimistix's default QR of the whole Jacobian: jaxlib's batched QR (LAPACK geqrf)
  # hangs when two calls run at once (jaxlib 0.10.2; `jnp.linalg.qr` alone does it), and a
  # stage's calls do run at once, one a core (`_call`). Boxes within 1e-4 px of QR's; as fast.
  solver = optx.LevenbergMarquardt(rtol=1e-4, atol=1e-4,
                                   linear_solver=lx.Normal(lx.Cholesky()))

  def one(template, tmask, tsize, canvas, cmask, p0, given):
    args = (template, tmask, tsize, canvas, cmask, with_angle)
    sol = optx.least_squares(_residual, solver, p0, args=args, max_steps=max_steps, throw=False)
    # A box turned inside out (x1 < x0 or y1 < y0) reads the template mirrored: a mirrored crop
    # fits its original that way, so it is no place of the crop and the stage keeps its start.
    q = sol.value
    usable = jnp.all(jnp.isfinite(q)) & (q[2] > q[0]) & (q[3] > q[1])
    p = jnp.where(usable, q, p0)
    # Converged: the fit settled within half a sample of where this stage began (optimistix's
    # own flag stays unset when, at the optimum, every further step is rejected).
    settled = usable & (jnp.max(jnp.abs(p[:4] - p0[:4])) < 0.5 * over)
    if not scored:
      return p, settled
    return (p, settled, *_fit_terms(p, *args[:5], with_angle),
            *_fit_terms(given, *args[:5], with_angle))

  # `one` jitted inside the vmap: each padded batch size reuses its trace (optimistix's solver
  # is traced once per stage, not once per size), so a process's first pairs start sooner.
  return jax.jit(jax.vmap(jax.jit(one)))


@functools.lru_cache(maxsize=None)
def _score_fn(with_angle: bool, full: bool | str):
  """Jitted, batched: `_score` (full), `_fit_and_detail` (full='detail') or just (ZNCC, share
  inside) at given params."""
  import jax
  f = _fit_and_detail if full == 'detail' else _score if full else _fit_terms
  return jax.jit(jax.vmap(lambda p, t, tm, ts, c, cm: f(p, t, tm, ts, c, cm, with_angle)))


def _seed(template: np.ndarray, canvas: np.ndarray, start: np.ndarray) -> np.ndarray:
  """The best box for the template in the canvas by normalised cross-correlation at whole
  samples and a few scales (`_SCALES`) about the start's size (OpenCV's matchTemplate): a
  start near enough for the solver even when the given box is a quarter of its size off."""
  import cv2
  th, tw = template.shape
  best, box = -np.inf, start
  for s in _SCALES:
    w, h = max(2, round(tw * s)), max(2, round(th * s))
    if w > canvas.shape[1] or h > canvas.shape[0]:
      continue
    t = template if s == 1.0 else cv2.resize(template, (w, h), interpolation=cv2.INTER_AREA)
    if spread(t) < 1e-6:
      continue
    r = cv2.patchNaNs(cv2.matchTemplate(canvas, t, cv2.TM_CCOEFF_NORMED), -1.0)
    _, v, _, (x, y) = cv2.minMaxLoc(r)
    if v > best:
      best, box = v, np.array([x, y, x + w, y + h], np.float64)
  return box


def _bucket(n: int) -> int:
  return 1 << max(0, int(np.ceil(np.log2(max(n, 1)))))


def _stack(arrays: Sequence[np.ndarray], shape: tuple[int, ...], n: int) -> np.ndarray:
  out = np.zeros((n, *shape), np.float32)
  for i, a in enumerate(arrays):
    out[(i, *(slice(0, k) for k in a.shape))] = a
  return out


@dataclasses.dataclass
class _Batch:
  """One stage's inputs for a batch, padded to a power of two and the stage's shape."""
  arrays: tuple    # template, tmask, tsize, canvas, cmask: what the JAX functions take
  p0: np.ndarray   # start parameters in canvas pixels (seeded, where asked)
  affines: list    # per pair: canvas raster -> original pixels
  n: int
  given: np.ndarray  # the given boxes in canvas pixels, as p0 (the same without a seed)

  def arrays_at(self, index) -> tuple:
    """`arrays` at these rows (a slice or indices; cmask may be a pair of profiles)."""
    return tuple(tuple(a[index] for a in v) if isinstance(v, tuple) else v[index]
                 for v in self.arrays)

  def rows(self, rows: Sequence[int]) -> '_Batch':
    """These pairs' reads as a batch of their own, padded to a power of two with the last."""
    take = list(rows) + [rows[-1]] * (_bucket(len(rows)) - len(rows))
    return _Batch(self.arrays_at(take), self.p0[take], [self.affines[i] for i in rows],
                  len(rows), self.given[take])


def _prepare(originals, crops, boxes, angles, samples, margin, with_angle, seed=False,
             flatten: bool | None = None) -> _Batch:
  n = len(originals)
  over = _oversample(with_angle)

  def one(job):  # a pair's reads (and seed)
    inputs = _stage_inputs(*job, samples, margin, over, flatten)
    template, canvas, _, start, _ = inputs
    if not seed:
      return inputs, start
    if over > 1:  # the seed matches at whole samples: on the canvas at one pixel a sample
      import cv2
      h, w = canvas.shape
      canvas = cv2.resize(canvas, (w // over, h // over), interpolation=cv2.INTER_AREA)
    return inputs, _seed(template, canvas, start / over) * over
  # The finest stage's reads on every core (OpenCV releases the GIL; its exact templates are
  # area-averaged from the full crop); a coarser stage's are small, so Python's share of them
  # holds the GIL and threads only contend: one after another (docs/real_photos.md).
  jobs = zip(originals, crops, boxes, angles)
  done = threads.map(one, jobs) if samples >= STAGES[-1][0] else [one(j) for j in jobs]
  items = [d[0] for d in done]
  m = _bucket(n)
  mg = round(margin * samples)  # one shape per stage: one compilation per stage and batch size
  tshape, cshape = (samples, samples), ((samples + 2 * mg) * over, (samples + 2 * mg) * over)
  template = _stack([t for t, *_ in items], tshape, m)
  tmask = _stack([np.ones_like(t) for t, *_ in items], tshape, m)
  canvas = _stack([c for _, c, *_ in items], cshape, m)
  profiles = None if with_angle else [_profiles(i) for _, _, i, *_ in items]
  # A canvas turned by a given angle (a straightened crop's finest stage) whose frame edge
  # crosses it has a mask no two profiles make: then the whole batch reads the masks.
  if profiles is None or not all(_separable(i, pr) for a, (_, _, i, *_), pr
                                 in zip(angles, items, profiles) if a):
    cmask = _stack([i for _, _, i, *_ in items], cshape, m)
  else:
    cmask = (_stack([r for r, _ in profiles], cshape[:1], m),
             _stack([c for _, c in profiles], cshape[1:], m))
  tsize = np.ones((m, 2), np.float32)
  tsize[:n] = [(t.shape[1], t.shape[0]) for t, *_ in items]
  p0 = np.zeros((m, 5 if with_angle else 4), np.float32)
  p0[:, 2:4] = 1.0
  # with an angle the canvas is read on the box's turned axes: relative angle 0
  given = p0.copy()
  p0[:n, :4] = [d[1] for d in done]
  given[:n, :4] = [start for _, _, _, start, _ in items]
  return _Batch((template, tmask, tsize, canvas, cmask), p0, [a for *_, a in items], n, given)


def _to_original(batch: _Batch, p: np.ndarray, angles) -> tuple[list, list]:
  """Canvas parameters -> boxes in original pixels and angles."""
  out_boxes, out_angles = [], []
  for i, affine in enumerate(batch.affines):
    # canvas box -> original pixels: its centre through the canvas map, its size by the step
    x0, y0, x1, y1 = p[i, :4]
    lin = affine[:, :2]
    centre = lin @ np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + affine[:, 2]
    sx, sy = np.linalg.norm(lin[:, 0]), np.linalg.norm(lin[:, 1])
    w, h = (x1 - x0) * sx, (y1 - y0) * sy
    out_boxes.append(np.array([centre[0] - w / 2, centre[1] - h / 2, centre[0] + w / 2,
                               centre[1] + h / 2]))
    out_angles.append(float(angles[i] + (p[i, 4] if p.shape[1] == 5 else 0.0)))
  return out_boxes, out_angles


# Samples a compiled call holds at most (its pairs times the template's samples): past about
# this many, the working set of a Levenberg-Marquardt step leaves the CPU's caches and a pair
# costs up to 1.5 times as much (the finest stage, 128 x 128 samples: 2.9 ms a pair in calls
# of 8 pairs, 4.5 in one of 64; `docs/real_photos.md`). Coarser stages take more pairs a call
# (32 at 64 samples, all 64 at 32).
CALL_SAMPLES = 8 * 128 * 128
# On the CPU a stage's pairs go in at least this many calls, run side by side on the cores
# (`cropjax.threads`): XLA:CPU runs a call of a few pairs on one core. A fixed count, not the
# number of cores, so the results do not depend on the machine's cores.
CPU_CALLS = 2


def _sub_batches(batch: _Batch) -> list[slice]:
  """The padded batch as consecutive power-of-two slices of at most CALL_SAMPLES samples (its
  templates' size), and on the CPU of at most 1 / CPU_CALLS of its pairs, the padding beyond
  the last pair left out."""
  import jax
  most = max(1, CALL_SAMPLES // batch.arrays[0][0].size)
  size = min(len(batch.p0), 1 << (most.bit_length() - 1))  # a power of two, at most `most`
  if jax.default_backend() == 'cpu':
    size = min(size, _bucket(-(-batch.n // CPU_CALLS)))
  if size >= len(batch.p0):
    return [slice(0, len(batch.p0))]
  return [slice(a, a + size) for a in range(0, batch.n, size)]


def _call(fn, batch: _Batch, p: np.ndarray, *rows) -> list[np.ndarray]:
  """fn(p, *rows, *arrays) over the batch in sub-batches (`_sub_batches`) on the cores, joined
  on the host; `p` may leave out the padding rows (the batch's own start stands in for them),
  `rows` (more per-pair arrays) may not."""
  if len(p) < len(batch.p0):
    p = np.concatenate([p, batch.p0[len(p):].astype(p.dtype)])
  def run(part):
    return [np.array(v) for v in fn(p[part], *(r[part] for r in rows), *batch.arrays_at(part))]
  parts = threads.map(run, _sub_batches(batch))  # side by side, one a core
  return [np.concatenate(v)[:batch.n] for v in zip(*parts)]


def _fit_stage(originals, crops, boxes, angles, samples, margin, *, with_angle, seed, max_steps,
               scored=False):
  """One stage for a batch -> (boxes, angles, converged, its batch, its parameters, and with
  `scored` (ZNCC, share) at the result and at the given boxes, else None)."""
  batch = _prepare(originals, crops, boxes, angles, samples, margin, with_angle, seed)
  stage = _stage_fn(with_angle, max_steps, scored, _oversample(with_angle))
  p, ok, *fit = _call(lambda p0, given, *arrays: stage(*arrays, p0, given), batch, batch.p0,
                      batch.given)
  p = p.astype(np.float64)
  return (*_to_original(batch, p, angles), ok, batch, p, fit or None)


def _scores(batch: _Batch, p: np.ndarray, with_angle: bool, full: bool):
  return _call(_score_fn(with_angle, full), batch, np.float32(p))


# ------------------------------------------------------------------ public


def _check_box(box, original: Pyramid, name: str) -> np.ndarray:
  b = np.asarray(box, np.float64).reshape(-1)
  if b.shape != (4,) or not np.isfinite(b).all():
    raise AlignError(f'{name}: a box is 4 finite numbers (x0, y0, x1, y1), got {box!r}')
  if b[2] <= b[0] or b[3] <= b[1]:
    raise AlignError(f'{name}: box {tuple(b)} is empty or inverted')
  w, h = original.size
  if b[2] <= 0 or b[3] <= 0 or b[0] >= w or b[1] >= h:
    raise AlignError(f'{name}: box {tuple(b)} lies outside the original ({w}x{h})')
  return b


# Pairs refined together at most: bounds memory (a stage holds a few arrays of the
# template's and canvas's size per pair).
CHUNK = 64


def align_batch(originals: Sequence, crops: Sequence, boxes: Sequence, *,
                angles: Sequence[float] | None = None, with_angle: bool = False,
                stages: Sequence[tuple[int, float, int]] = STAGES,
                seed: bool = True, detail: bool | str = True) -> list[Alignment]:
  """`align` for many pairs at once; images may be arrays, PIL images or `Pyramid`s.

  `seed`: the first stage starts from the best place by correlation near the given box
  (`_seed`); without it, from the box itself (for a box an earlier stage refined).
  `detail=False` leaves out `blocks` (empty), `peak` and `detail` (NaN), which cost five more
  reads; `detail='detail'` leaves out `blocks` and `peak` alone (the same `detail`, a third of
  the time)."""
  if not (len(originals) == len(crops) == len(boxes)):
    raise AlignError(f'mismatched batch: {len(originals)} originals, {len(crops)} crops, '
                     f'{len(boxes)} boxes')
  if angles is not None and len(angles) != len(originals):
    raise AlignError(f'mismatched batch: {len(angles)} angles for {len(originals)} pairs')
  out: list[Alignment] = []
  for i in range(0, len(originals), CHUNK):
    part = slice(i, i + CHUNK)
    out += _align_chunk(originals[part], crops[part], boxes[part],
                        None if angles is None else angles[part], with_angle, stages, i, seed,
                        detail)
  return out


def scores_at(originals: Sequence[Pyramid], crops: Sequence[Pyramid], boxes: Sequence, *,
              angles: Sequence[float] | None = None, stage: int = 0
              ) -> list[tuple[float, float]]:
  """(ZNCC, share inside the frame) of each crop at its box, read as `STAGES[stage]` reads it
  but with the crop's template divided by the gain field fitted there (`_flattened`), without
  fitting anything."""
  samples, margin, _ = STAGES[stage]
  angles = [0.0] * len(boxes) if angles is None else list(angles)
  out: list[tuple[float, float]] = []
  for i in range(0, len(boxes), CHUNK):
    part = slice(i, i + CHUNK)
    batch = _prepare(originals[part], crops[part], [np.asarray(b, np.float64) for b in boxes[part]],
                     angles[part], samples, margin, False, flatten=True)
    zncc, share = _scores(batch, batch.given, False, full=False)
    out += [(float(z), float(s)) for z, s in zip(zncc, share)]
  return out


def _align_chunk(originals, crops, boxes, angles, with_angle, stages, first,
                 seed: bool = True, detail: bool | str = True) -> list[Alignment]:
  if not len(originals):
    return []
  po = [o if isinstance(o, Pyramid) else Pyramid(o, f'original {first + i}')
        for i, o in enumerate(originals)]
  pc = [c if isinstance(c, Pyramid) else Pyramid(c, f'crop {first + i}')
        for i, c in enumerate(crops)]
  start = [_check_box(b, o, f'pair {first + i}') for i, (b, o) in enumerate(zip(boxes, po))]
  ang0 = [float(a) for a in angles] if angles is not None else [0.0] * len(po)
  cur, ang = start, ang0
  # One stage reads around the start itself: its call also scores the result and the start
  # (the start read as the last stage reads it: a result never scores worse than its start).
  one_stage = len(stages) == 1
  for k, (samples, margin, steps) in enumerate(stages):
    cur, ang, ok, batch, p, fit = _fit_stage(po, pc, cur, ang, samples, margin,
                                             with_angle=with_angle, seed=seed and k == 0,
                                             max_steps=steps, scored=one_stage)
  blocks, peak, fine = np.zeros((len(po), 0)), np.full(len(po), np.nan), np.full(len(po), np.nan)
  if detail == 'detail':
    zncc, share, fine = _scores(batch, p, with_angle, full='detail')
  elif detail:
    zncc, share, blocks, peak, fine = _scores(batch, p, with_angle, full=True)
  else:
    zncc, share = fit[:2] if one_stage else _scores(batch, p, with_angle, full=False)
  if one_stage:  # the stage read around the start: its reads score it
    at_start, (s_zncc, s_share) = batch, fit[2:]
  else:
    samples, margin, _ = stages[-1]
    at_start = _prepare(po, pc, start, ang0, samples, margin, with_angle)
    s_zncc, s_share = _scores(at_start, at_start.given, with_angle, full=False)
  worse = [i for i in range(len(po)) if zncc[i] * share[i] < s_zncc[i] * s_share[i]]
  if worse:  # the start's full score, for those alone, from the reads at the start
    again = at_start.rows(worse)
    for j, row in enumerate(zip(*_scores(again, again.given, with_angle, full=detail))):
      i = worse[j]
      zncc[i], share[i] = row[:2]
      if detail == 'detail':
        fine[i] = row[2]
      elif detail:
        blocks[i], peak[i], fine[i] = row[2:]
      cur[i], ang[i], ok[i] = start[i], ang0[i], False
  return [Alignment(box=tuple(float(v) for v in cur[i]), angle=float(ang[i]),
                    score=float(zncc[i]), start_score=float(s_zncc[i]),
                    converged=bool(ok[i]), inside=float(share[i]),
                    blocks=tuple(float(v) for v in blocks[i]), peak=float(peak[i]),
                    detail=float(fine[i]))
          for i in range(len(po))]


def align(original, crop, box, *, angle: float = 0.0, with_angle: bool = False,
          stages: Sequence[tuple[int, float, int]] = STAGES) -> Alignment:
  """Refines where `crop` lies in `original`, starting from `box` (pixels of the original).

  `with_angle` also fits the angle (a straightened crop), starting from `angle`.
  See the module docstring for what is returned.
  """
  return align_batch([original], [crop], [box], angles=[angle], with_angle=with_angle,
                     stages=stages)[0]
