"""Task heads on a ResNet backbone, with bounded box regression, and their losses.

The pair model is the seed's early fusion: the two images stacked into 6
channels go through one backbone whose average-pooled features feed three
heads, replacing torchvision's avgpool + fc:

* `is_pair`:    2 logits (not a crop pair / crop pair);
* `is_swapped`: 2 logits (first image is the original / the crop comes first);
* `box`:        (x0, y0, x1, y1) of the crop inside the original, fractions.

`MatchingPairModel` (config.model.pair_head = 'match') is the siamese
alternative: one 3-channel trunk encodes each image on its own (features at
stride 8, with stride 16 brought up to it), and the crop is found by search:
the crop's features pooled to a small template are compared with the
original's pooled over every candidate box (`match_volume`), in both
directions; the box is the score-weighted mean of the candidates, the
direction the one that matches better, the pair logit from both volumes.
Trained on sides kept at their aspect ratio (`PairOptions.keep_aspect`), it
is given each image's extent in its square: the template pools the crop's
pixels alone and the candidate boxes tile the original's (`pool_weights`).

The auto-crop model is a backbone over one photo (3 channels) with a crop
head: `crop` (left, top, right, bottom) in fractions of the input, and `angle`
in degrees, never beyond +-max_angle: classified over bins plus a residual
(`angle_bins`), or `max_angle * tanh(.)` of one regressed value.

The box heads cannot leave the frame or invert: per axis they predict three
logits whose softmax is (margin before, size, margin after), so
0 < x0 < x1 < 1 by construction.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cropjax import models


def bounded_box(logits: jax.Array) -> jax.Array:
  """(..., 6) logits -> (..., 4) boxes (x0, y0, x1, y1) with 0 < x0 < x1 < 1, same for y."""
  parts = jax.nn.softmax(jnp.reshape(logits, (*logits.shape[:-1], 2, 3)).astype(jnp.float32), -1)
  start = parts[..., 0]                # (..., 2): x0, y0
  end = jnp.minimum(start + parts[..., 1], 1.0)  # x1, y1; the min only absorbs rounding
  return jnp.concatenate([start, end], axis=-1)


class PairModel(nn.Module):
  """Backbone over the stacked pair + is_pair, is_swapped and box heads."""
  backbone: models.ResNet

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               backbone_train: bool | None = None,
               extents: jax.Array | None = None) -> dict[str, jax.Array]:
    """`backbone_train=False` freezes the backbone: inference-mode BatchNorm, no gradient.
    `extents` (images kept at their aspect ratio) is accepted and not used: the stacked pair
    shows the padding itself."""
    backbone_train = train if backbone_train is None else backbone_train
    features = self.backbone(images, train=backbone_train)  # (B, h, w, C), no pooling
    if not backbone_train:
      features = jax.lax.stop_gradient(features)
    pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
    dense = lambda n, name: nn.Dense(n, dtype=jnp.float32, name=name)
    return {
        'is_pair': dense(2, 'is_pair')(pooled),
        'is_swapped': dense(2, 'is_swapped')(pooled),
        'box': bounded_box(dense(6, 'box')(pooled)),
    }


def interval_pooling(n: int, widths: Sequence[float], cells: int) -> tuple[np.ndarray, np.ndarray]:
  """Candidate intervals of [0, 1] over `n` feature cells, and the weights that pool them.

  Each width in `widths` (fractions of the side) starts at every multiple of 1/n
  that keeps it inside [0, 1], and flush with the end. Returns intervals [m, 2]
  and weights [m, cells, n]: row (i, k) averages the feature cells over the k-th
  of `cells` equal parts of interval i, each cell by its overlap (`pool_weights`
  for an image that fills the side).
  """
  found = set()
  for w in widths:
    if not 0 < w <= 1:
      raise ValueError(f'candidate widths are fractions in (0, 1], got {w}')
    for a in [*np.arange(0.0, 1.0 - w + 1e-9, 1.0 / n), 1.0 - w]:
      found.add((round(float(a), 6), round(float(a) + w, 6)))
  intervals = np.array(sorted(found), np.float32)
  return intervals, pool_weights(intervals, np.ones(1, np.float32), n, cells)[0]


def pool_weights(intervals: np.ndarray, extent: jax.Array, n: int, cells: int) -> jax.Array:
  """Weights [B, m, cells, n] pooling `n` feature cells over each interval's `cells` parts.

  intervals [m, 2] are fractions of the image, which covers [0, extent[b]] of
  the side (an image kept at its aspect ratio, letterboxed at the top left);
  each feature cell counts by its overlap with the part. NumPy in, NumPy out.
  """
  xp = np if isinstance(extent, np.ndarray) else jnp
  a, b = intervals[None, :, None, 0], intervals[None, :, None, 1]
  k = np.arange(cells)[None, None, :]
  e = xp.asarray(extent, np.float32)[:, None, None]
  lo, hi = (a + (b - a) * k / cells) * e, (a + (b - a) * (k + 1) / cells) * e  # [B, m, cells]
  edges = np.arange(n + 1, dtype=np.float32) / n
  overlap = xp.clip(xp.minimum(edges[1:], hi[..., None]) - xp.maximum(edges[:-1], lo[..., None]),
                    0.0, None)
  return (overlap / xp.maximum(overlap.sum(-1, keepdims=True), 1e-9)).astype(np.float32)


def match_volume(original: jax.Array, crop: jax.Array, widths: Sequence[float],
                 cells: int = 3, extent_original: jax.Array | None = None,
                 extent_crop: jax.Array | None = None) -> tuple[jax.Array, np.ndarray]:
  """How well the crop matches each candidate box of the original.

  original [B, h, w, D], crop [B, h', w', D]: unit-length feature vectors. The
  crop is pooled to a `cells` x `cells` template; a box is pooled the same way
  over its own cells, and its score is the mean over the cells of the cosine
  between the two pooled vectors. (The pooled box's lengths come from the
  original's Gram matrix, so the [B, boxes, cells, D] volume is never formed.)
  A box smaller or larger than the crop's window pools other content and
  scores lower. Boxes are every pair of a y and an x interval of
  `interval_pooling`. `extent_*` [B, 2]: the share (x, y) of its square each
  image fills when kept at its aspect ratio (letterboxed at the top left;
  default: all of it); boxes and the template then cover the image alone.
  Returns scores [B, my, mx] and the boxes [my, mx, 4] (x0, y0, x1, y1,
  fractions of the original).
  """
  n, h, w, _ = original.shape
  _, ch, cw, _ = crop.shape
  full = jnp.ones((n, 2), jnp.float32)
  eo = full if extent_original is None else extent_original
  ec = full if extent_crop is None else extent_crop
  iv_y, _ = interval_pooling(h, widths, cells)
  iv_x, _ = interval_pooling(w, widths, cells)
  wy, wx = pool_weights(iv_y, eo[:, 1], h, cells), pool_weights(iv_x, eo[:, 0], w, cells)
  whole = np.array([[0.0, 1.0]], np.float32)
  ty, tx = pool_weights(whole, ec[:, 1], ch, cells)[:, 0], pool_weights(whole, ec[:, 0], cw, cells)[:, 0]
  template = jnp.einsum('bkh,bhwd,blw->bkld', ty, crop, tx)
  template = template / jnp.sqrt(jnp.sum(template * template, -1, keepdims=True) + 1e-6)
  dots = jnp.einsum('bkld,bhwd->bklhw', template, original)
  dots = jnp.einsum('bikh,bklhw,bjlw->bikjl', wy, dots, wx)  # template cell . pooled box cell
  gram = jnp.einsum('bhwd,bHWd->bhwHW', original, original)
  rows = jnp.einsum('bikh,bhwHW,bikH->bikwW', wy, gram, wy)
  length2 = jnp.einsum('bjlw,bikwW,bjlW->bikjl', wx, rows, wx)  # |pooled box cell|^2
  cosine = dots / jnp.sqrt(jnp.maximum(length2, 0.0) + 1e-6)
  scores = cosine.mean(axis=(2, 4))
  boxes = np.stack(np.broadcast_arrays(iv_x[None, :, 0], iv_y[:, None, 0],
                                       iv_x[None, :, 1], iv_y[:, None, 1]), -1)
  return scores, boxes


class MatchingPairModel(nn.Module):
  """A 3-channel trunk over each image on its own + search by correlation (module docstring).

  Input and outputs as `PairModel`'s: the stacked pair [B, N, N, 6] in, and
  `is_pair`, `is_swapped` (2 logits each) and `box` out; `encode` and
  `compare` are the two halves, so an image's features are computed once and
  compared with many.
  """
  backbone: models.ResNet   # in_channels=3, outputs=(2, 3): stride 8 and 16
  dim: int = 64
  cells: int = 3
  widths: tuple[float, ...] = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)

  def setup(self):
    self.match_proj = nn.Dense(self.dim, dtype=jnp.float32)
    # The scores' sharpness for the weighted box (softplus of this; about 10 at the start).
    self.match_temperature = self.param('match_temperature', lambda _: jnp.float32(10.0))
    self.is_swapped = nn.Dense(1, dtype=jnp.float32)
    self.is_pair = nn.Dense(2, dtype=jnp.float32)

  def encode(self, images: jax.Array, train: bool = False,
             backbone_train: bool | None = None) -> jax.Array:
    """[B, N, N, 3] -> unit-length features [B, N/8, N/8, dim]."""
    backbone_train = train if backbone_train is None else backbone_train
    f8, f16 = self.backbone(images, train=backbone_train)
    if not backbone_train:
      f8, f16 = jax.lax.stop_gradient((f8, f16))
    _, h, w, _ = f8.shape
    f16 = jnp.repeat(jnp.repeat(f16, 2, axis=1), 2, axis=2)[:, :h, :w]
    x = self.match_proj(jnp.concatenate([f8, f16], -1).astype(jnp.float32))
    return x / jnp.sqrt(jnp.sum(x * x, -1, keepdims=True) + 1e-6)

  def _one_way(self, original, crop, extent_original, extent_crop):
    scores, boxes = match_volume(original, crop, self.widths, self.cells, extent_original,
                                 extent_crop)
    flat = scores.reshape(scores.shape[0], -1)
    weights = jax.nn.softmax(flat * jax.nn.softplus(self.match_temperature), -1)
    box = weights @ jnp.asarray(boxes.reshape(-1, 4))
    stats = jnp.stack([flat.max(-1), (weights * flat).sum(-1), flat.mean(-1), flat.std(-1)], -1)
    return box, stats

  def compare(self, a: jax.Array, b: jax.Array, extent_a: jax.Array | None = None,
              extent_b: jax.Array | None = None) -> dict[str, jax.Array]:
    """Encoded images a and b -> the pair's outputs (as `__call__`'s); `extent_*` [B, 2]: the
    share (x, y) of its square each image fills (kept at its aspect ratio; default: all)."""
    box_ab, stats_ab = self._one_way(a, b, extent_a, extent_b)   # b inside a: a the original
    box_ba, stats_ba = self._one_way(b, a, extent_b, extent_a)   # a inside b: the crop first
    # Antisymmetric by construction: swapping the inputs swaps the direction's odds.
    d = (self.is_swapped(stats_ba) - self.is_swapped(stats_ab))[:, 0]
    p = jax.nn.sigmoid(d)[:, None]
    both = jnp.concatenate([jnp.maximum(stats_ab, stats_ba), jnp.minimum(stats_ab, stats_ba)], -1)
    return {
        'is_pair': self.is_pair(both),
        'is_swapped': jnp.stack([-d / 2, d / 2], -1),
        'box': (1 - p) * box_ab + p * box_ba,   # a mean of boxes in the frame: in the frame
    }

  def __call__(self, images: jax.Array, train: bool = False,
               backbone_train: bool | None = None,
               extents: jax.Array | None = None) -> dict[str, jax.Array]:
    """extents [B, 4]: the first and the second image's (x, y) shares of their squares."""
    n = images.shape[0]
    features = self.encode(jnp.concatenate([images[..., :3], images[..., 3:]], 0), train,
                           backbone_train)
    if extents is None:
      return self.compare(features[:n], features[n:])
    return self.compare(features[:n], features[n:], extents[:, :2], extents[:, 2:])


def edge_box(x_logits: jax.Array, y_logits: jax.Array, min_size: float = 1e-3) -> jax.Array:
  """(B, W, 2) and (B, H, 2) logits over positions -> (B, 4) boxes (x0, y0, x1, y1).

  Each edge is the expectation of its softmax over W (H) positions spread evenly
  over [0, 1] (channel 0: left / top, 1: right / bottom), so it can sit anywhere
  between them. The two edges of an axis are ordered (the lesser is the start)
  and kept at least `min_size` apart inside [0, 1]: the box never leaves the
  frame or inverts.
  """
  def edges(logits):
    positions = jnp.linspace(0.0, 1.0, logits.shape[1], dtype=jnp.float32)
    p = jax.nn.softmax(logits.astype(jnp.float32), axis=1)
    a, b = jnp.einsum('bnk,n->bk', p, positions).T
    lo = jnp.clip(jnp.minimum(a, b), 0.0, 1.0 - min_size)
    return lo, jnp.clip(jnp.maximum(jnp.maximum(a, b), lo + min_size), 0.0, 1.0)
  x0, x1 = edges(x_logits)
  y0, y1 = edges(y_logits)
  return jnp.stack([x0, y0, x1, y1], -1)


class EdgeHead(nn.Module):
  """The crop's edges from where they lie: the backbone's maps merged top-down (FPN-style:
  each coarser map brought up to the finest's positions and added), pooled across each
  axis into a row of positions per axis, the coarsest map's pooled context added, and a
  1-D convolution giving each edge's logits over the positions (`edge_box`).

  With `inside`, a map of logits of "inside the crop" at the finest positions is
  also predicted (trained on `inside_target`, dense supervision that the four edges
  alone do not give) and its profile along each axis (mean and max over the other
  axis) joins that axis's row of positions: an edge is where the profile steps.
  Returns {'crop': boxes (B, 4)}, with `inside` also {'inside': the map's logits (B, H, W)}."""
  channels: int = 128
  inside: bool = False

  @nn.compact
  def __call__(self, *maps: jax.Array) -> dict[str, jax.Array]:
    maps = [m.astype(jnp.float32) for m in maps]
    b, h, w, _ = maps[0].shape
    conv = lambda n, k, name: nn.Conv(n, k, dtype=jnp.float32, name=name)
    x = conv(self.channels, (1, 1), 'lateral0')(maps[0])
    for i, m in enumerate(maps[1:], 1):
      x = x + jax.image.resize(conv(self.channels, (1, 1), f'lateral{i}')(m),
                               (b, h, w, self.channels), 'bilinear')
    x = nn.relu(conv(self.channels, (3, 3), 'mix')(nn.relu(x)))
    context = nn.Dense(self.channels, dtype=jnp.float32, name='context')(maps[-1].mean((1, 2)))
    if self.inside:
      inside = conv(1, (1, 1), 'inside')(x)[..., 0]
      p = jax.nn.sigmoid(inside)
    logits = []
    for axis, name in ((1, 'x'), (2, 'y')):  # pool the rows for the x edges, the columns for y
      line = x.mean(axis) + context[:, None]
      if self.inside:
        line = jnp.concatenate([line, p.mean(axis)[..., None], p.max(axis)[..., None]], -1)
      line = nn.relu(nn.Conv(self.channels, (3,), dtype=jnp.float32, name=f'{name}_conv')(line))
      logits.append(nn.Conv(2, (3,), dtype=jnp.float32, name=f'{name}_edges')(line))
    return {'crop': edge_box(*logits), **({'inside': inside} if self.inside else {})}


def inside_target(box: jax.Array, angle: jax.Array, height: int, width: int) -> jax.Array:
  """(B, 4) unturned crops (fractions of a square input) and (B,) angles -> (B, height, width):
  the share of each cell of a height x width grid over the input that the turned crop covers
  (exact for an unturned crop; for a turned one, each cell's centre taken into the crop's
  own frame and covered as if the cell were turned with it)."""
  ys = (jnp.arange(height, dtype=jnp.float32) + 0.5) / height
  xs = (jnp.arange(width, dtype=jnp.float32) + 0.5) / width
  centre = (box[:, :2] + box[:, 2:]) / 2
  half = (box[:, 2:] - box[:, :2]) / 2
  a = jnp.deg2rad(angle)
  c, s = jnp.cos(a)[:, None, None], jnp.sin(a)[:, None, None]
  dx = xs[None, None, :] - centre[:, 0, None, None]
  dy = ys[None, :, None] - centre[:, 1, None, None]
  u, v = c * dx + s * dy, -s * dx + c * dy  # turned back by the crop's angle (`turned_corners`)
  cover = lambda d, h, cell: jnp.clip((h[:, None, None] - jnp.abs(d)) / cell + 0.5, 0.0, 1.0)
  return cover(u, half[:, 0], 1.0 / width) * cover(v, half[:, 1], 1.0 / height)


class CropModel(nn.Module):
  """Backbone over one photo + crop head: `crop` (bounded box) and `angle` (degrees).

  `crop_head`: 'pooled' regresses the box from the globally pooled last map
  (`bounded_box`); 'edges' places each edge over the positions of the finest map
  the backbone returns (`EdgeHead`; `config.model.crop_levels`, the last of them
  the deepest); 'inside' is 'edges' that also predicts which positions lie in the
  crop (`inside`, logits [B, H, W], `EdgeHead.inside`) and places the edges with it.
  With `angle_bins` (K > 1) the angle is classified over K bins evenly spaced on
  [-max_angle, max_angle] plus a residual per bin (at most one bin width either
  way): `angle` is the best bin's centre plus its residual, and the outputs also
  carry `angle_logits` and `angle_residual` [B, K] for `crop_loss`. Without, it
  is `max_angle * tanh(.)` of one regressed value.
  """
  backbone: models.ResNet
  max_angle: float = 45.0
  angle_bins: int = 0
  crop_head: str = 'pooled'

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               backbone_train: bool | None = None) -> dict[str, jax.Array]:
    backbone_train = train if backbone_train is None else backbone_train
    features = self.backbone(images, train=backbone_train)
    if not backbone_train:
      features = jax.lax.stop_gradient(features)
    if self.crop_head in ('edges', 'inside'):  # the backbone's maps, finest first
      pooled = jnp.mean(features[-1].astype(jnp.float32), axis=(1, 2))
      out = EdgeHead(inside=self.crop_head == 'inside', name='crop')(*features)
    elif self.crop_head == 'pooled':
      pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
      out = {'crop': bounded_box(nn.Dense(6, dtype=jnp.float32, name='crop')(pooled))}
    else:
      raise ValueError(f"crop_head: {self.crop_head!r}, use 'pooled', 'edges' or 'inside'")
    if self.angle_bins > 1:
      centres, width = angle_bins(self.max_angle, self.angle_bins)
      raw = nn.Dense(2 * self.angle_bins, dtype=jnp.float32, name='angle')(pooled)
      logits, residual = raw[:, :self.angle_bins], width * jnp.tanh(raw[:, self.angle_bins:])
      best = jnp.argmax(logits, -1)
      angle = centres[best] + jnp.take_along_axis(residual, best[:, None], -1)[:, 0]
      out.update(angle=jnp.clip(angle, -self.max_angle, self.max_angle),
                 angle_logits=logits, angle_residual=residual)
    else:
      angle = nn.Dense(1, dtype=jnp.float32, name='angle')(pooled)[:, 0]
      out['angle'] = self.max_angle * jnp.tanh(angle)
    return out


def angle_bins(max_angle: float, count: int) -> tuple[jax.Array, float]:
  """The centres of `count` angle bins spread evenly over [-max_angle, max_angle], and their spacing."""
  width = 2.0 * max_angle / (count - 1)
  return jnp.linspace(-max_angle, max_angle, count, dtype=jnp.float32), width


def turned_corners(box: jax.Array, angle: jax.Array) -> jax.Array:
  """(..., 4) unturned rectangles and (...) angles (degrees) -> (..., 4, 2) corners.

  `cropjax.metadata.corners` in a square frame (fractions of the side): top-left,
  top-right, bottom-right, bottom-left, turned about the centre, positive
  clockwise on screen (y down).
  """
  centre = (box[..., :2] + box[..., 2:]) / 2
  half = (box[..., 2:] - box[..., :2]) / 2
  signs = jnp.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], jnp.float32)
  offsets = signs * half[..., None, :]
  a = jnp.deg2rad(angle)[..., None]
  c, s = jnp.cos(a), jnp.sin(a)
  turned = jnp.stack([c * offsets[..., 0] - s * offsets[..., 1],
                      s * offsets[..., 0] + c * offsets[..., 1]], -1)
  return centre[..., None, :] + turned


def giou(a: jax.Array, b: jax.Array) -> jax.Array:
  """Generalised IoU of (..., 4) boxes (x0, y0, x1, y1); both must be valid."""
  inter_wh = jnp.clip(jnp.minimum(a[..., 2:], b[..., 2:]) - jnp.maximum(a[..., :2], b[..., :2]), 0)
  inter = inter_wh[..., 0] * inter_wh[..., 1]
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  union = area(a) + area(b) - inter
  hull_wh = jnp.maximum(a[..., 2:], b[..., 2:]) - jnp.minimum(a[..., :2], b[..., :2])
  hull = hull_wh[..., 0] * hull_wh[..., 1]
  iou = inter / jnp.maximum(union, 1e-9)
  return iou - (hull - union) / jnp.maximum(hull, 1e-9)


def pair_loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
              weights: Any = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy for is_pair; swap and box (L1 + GIoU) losses on positives only."""
  w = {'is_pair': 1.0, 'is_swapped': 1.0, 'l1': 5.0, 'giou': 2.0, **dict(weights or {})}
  is_pair = batch['is_pair'].astype(jnp.int32)
  pos = is_pair.astype(jnp.float32)
  n_pos = jnp.maximum(pos.sum(), 1.0)
  ce = optax.softmax_cross_entropy_with_integer_labels
  terms = {
      'is_pair': ce(outputs['is_pair'], is_pair).mean(),
      'is_swapped': (ce(outputs['is_swapped'], batch['is_swapped'].astype(jnp.int32)) * pos).sum() / n_pos,
      'l1': (jnp.abs(outputs['box'] - batch['box']).mean(-1) * pos).sum() / n_pos,
      'giou': ((1.0 - giou(outputs['box'], batch['box'])) * pos).sum() / n_pos,
  }
  total = sum(w[k] * v for k, v in terms.items())
  return total, terms


def crop_loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
              weights: Any = None, max_angle: float = 45.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L1 + GIoU on the unturned crop; the angle; the turned crop's corners; with an
  `inside` map (the 'inside' crop head), its binary cross-entropy against the share of
  each position the turned crop covers (`inside_target`).

  The angle: with bins (`CropModel.angle_bins`), cross-entropy on the nearest
  bin plus L1 of that bin's residual in bin widths; without, L1 as a fraction
  of `max_angle`. `corners`: the mean distance (L1) of the predicted turned
  crop's corners from the photographer's, measured along the true crop's own
  edges (its rotated frame), so the box and the angle are judged together.
  """
  w = {'l1': 5.0, 'giou': 2.0, 'angle': 1.0, 'corners': 0.0, 'inside': 1.0, **dict(weights or {})}
  terms = {
      'l1': jnp.abs(outputs['crop'] - batch['crop']).mean(-1).mean(),
      'giou': (1.0 - giou(outputs['crop'], batch['crop'])).mean(),
  }
  if 'angle_logits' in outputs:
    count = outputs['angle_logits'].shape[-1]
    centres, width = angle_bins(max_angle, count)
    truth = jnp.clip(batch['angle'], -max_angle, max_angle)
    nearest = jnp.clip(jnp.round((truth + max_angle) / width).astype(jnp.int32), 0, count - 1)
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs['angle_logits'], nearest)
    residual = jnp.take_along_axis(outputs['angle_residual'], nearest[:, None], -1)[:, 0]
    terms['angle'] = ce.mean() + (jnp.abs(residual - (truth - centres[nearest])) / width).mean()
  else:
    terms['angle'] = jnp.abs(outputs['angle'] - batch['angle']).mean() / max_angle
  if w['corners']:
    error = turned_corners(outputs['crop'], outputs['angle']) - turned_corners(batch['crop'], batch['angle'])
    a = jnp.deg2rad(batch['angle'])[:, None]
    c, s = jnp.cos(a), jnp.sin(a)  # turned back by the true angle: along its edges
    along = jnp.stack([c * error[..., 0] + s * error[..., 1], -s * error[..., 0] + c * error[..., 1]], -1)
    terms['corners'] = jnp.abs(along).mean((-1, -2)).mean()
  if 'inside' in outputs:
    logits = outputs['inside']
    target = inside_target(batch['crop'], batch['angle'], *logits.shape[1:])
    terms['inside'] = optax.sigmoid_binary_cross_entropy(logits, target).mean()
  total = sum(w[k] * v for k, v in terms.items())
  return total, terms
