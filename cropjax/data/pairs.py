"""Crop-pair examples, synthesised on the fly with tf.data.

    ds = cropjax.data.pairs.dataset('demo', image_size=64, batch_size=32, seed=0)
    batch = next(iter(ds.as_numpy_iterator()))
    first, second, box, labels = cropjax.data.pairs.to_pil(batch, 0)

Each batch: `image` uint8 [B, N, N, 6] (channels 0-2 the first image, 3-5 the
second, each resized to NxN whatever its size, or with `keep_aspect` at its
own aspect ratio, long side N, at the top left of its square and zeros
beyond; `extent` float32 [B, 4] then gives the first and second image's
(width, height) as shares of N), `is_pair` int32 [B],
`is_swapped` int32 [B] (1 when the crop comes first), `box` float32 [B, 4]
(x0, y0, x1, y1 of the crop inside the original, fractions of the original;
`top_left = box[:, :2]`), `kind` int32 [B] (an index into `KINDS`), `angle`
float32 [B] (degrees a straightened crop's window is turned, Lightroom's sign
as `cropjax.metadata`; the box is the window unturned; 0 for other kinds) and
`original_size` float32 [B, 2] (width and height of the original in source
photo pixels, for errors in pixels). The labels do not depend on N: the same
seed gives the same pairs at every size.

How an example is made, from one source photo (all randomness stateless in the
seed and the example's global index, so the batch of step k is the same in
every run and a resumed run starts at k without replaying anything):

1. The original is a random view of the photo (a window of 60-100 % of each
   side), so the photo's frame edges are no cue.
2. A crop window of the view: area and aspect ratio drawn from the options.
3. Each side is sampled from its own region of the photo, antialiased to about
   2N of that side first, at the exact window, pixel centres aligned, so the
   label is exact and a crop is as sharp as its original wherever the source
   has the pixels; where it has not, the original is blurred to the crop's
   detail, so sharpness never tells the original from the crop. Sources larger
   than `max_source_side` x N are shrunk once when the dataset is built, and
   kept decoded with a pyramid of halved copies when they fit in
   `decoded_cache_mb` (`sources.DecodedImages`): a region is read from the
   smallest copy with the detail it needs, so neither decoding nor resampling
   a large photo is paid per example.
4. Each side independently: mild brightness, contrast and saturation changes,
   optionally downscaled, JPEG-encoded at a random quality, and back to NxN
   (or, `keep_aspect`, to its own shape: the view's for the original and a
   near-duplicate, the window's for every other second side, so a crop's shape
   is its box's). Robustness to re-encoding is thus built into the data.
5. With probability 1/2 the crop is put first.

Kinds: `positive` (a crop pair), `straightened` (a crop pair whose window an
editor turned about its centre by 0.5-8 degrees either way to level it, kept
inside the view, and exported upright), and negatives: `other_image` (a crop of
another photo), `outside` (a window running partly outside the original, into
the photo beyond the view), `mirrored` (a crop, flipped), `squashed` (a crop
whose two parts are squashed unequally; a uniform squash is not a negative:
with both images resized to NxN it is indistinguishable from the crop of
another window, so the squash is piecewise) and `near_duplicate` (the same
view taken again: each corner moved 8-12 % of its size in a random direction,
turned up to 2 degrees; a perspective no crop produces, with the content beyond
the view where a corner moves out; its box is the whole view).
For negatives `box` is the window the second image was sampled from (for
inspection; training masks it out).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from cropjax.data import sources

# (New kinds go last.) Crop pairs: `positive` and `straightened`; the rest are negatives.
KINDS = ('positive', 'other_image', 'outside', 'mirrored', 'squashed', 'near_duplicate',
         'straightened')
PAIR_KINDS = ('positive', 'straightened')
N_DRAWS = 37      # uniform draws per example
_NEAR_MARGIN = 0.15  # a near-duplicate's second shot may see this far beyond the view
_PLAN_GROUP = 64  # examples planned at once (any number gives the same examples)


@dataclasses.dataclass(frozen=True)
class PairOptions:
  """What the generator draws from. Ranges are (low, high)."""
  kinds: Mapping[str, float] = dataclasses.field(default_factory=lambda: {
      'positive': 0.4, 'straightened': 0.1, 'other_image': 0.15, 'outside': 0.1, 'mirrored': 0.1,
      'squashed': 0.05, 'near_duplicate': 0.1})
  crop_area: tuple[float, float] = (0.05, 0.9)     # of the original's area
  crop_aspect: tuple[float, float] = (0.5, 2.0)    # width / height in pixels, log-uniform
  view_scale: tuple[float, float] = (0.6, 1.0)     # original = this fraction of each side
  jpeg_quality: tuple[int, int] = (30, 95)
  downscale_prob: float = 0.5                     # downscale a side before encoding
  downscale: tuple[float, float] = (0.5, 1.0)      # to this fraction of N
  color_jitter: float = 0.1                       # brightness, contrast, saturation
  outside_overhang: tuple[float, float] = (0.25, 0.45)  # of the window's size
  squash_split: tuple[float, float] = (0.15, 0.3)  # where the squashed crop is split
  near_duplicate_shift: tuple[float, float] = (0.08, 0.12)  # corner moves, of the view's size
  near_duplicate_turn: float = 2.0                # degrees, at most either way
  straightened_turn: tuple[float, float] = (0.5, 8.0)  # degrees either way (an editor's angle)
  max_source_side: float = 8.0                    # sources shrunk to this many N (0: never)
  decoded_cache_mb: float = 512.0                 # keep sources decoded (+ pyramids) if they fit
  keep_aspect: bool = False  # each side at its own aspect ratio, long side N, at the top left
  #                            of its NxN square (zeros beyond); the batch gets `extent`

  def __post_init__(self):
    unknown = set(self.kinds) - set(KINDS)
    if unknown:
      raise ValueError(f'unknown kinds {sorted(unknown)}; choose from {KINDS}')
    if not self.kinds or min(self.kinds.values()) < 0 or sum(self.kinds.values()) <= 0:
      raise ValueError(f'kinds needs non-negative weights with a positive sum, got {self.kinds}')
    for name in ('crop_area', 'crop_aspect', 'view_scale', 'jpeg_quality', 'downscale',
                 'outside_overhang', 'squash_split', 'near_duplicate_shift', 'straightened_turn'):
      lo, hi = getattr(self, name)
      if not lo <= hi:
        raise ValueError(f'{name}: low {lo} > high {hi}')
    if not (0 < self.crop_area[0] and self.crop_area[1] <= 1):
      raise ValueError(f'crop_area must lie in (0, 1], got {self.crop_area}')
    if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
      raise ValueError(f'jpeg_quality must lie in [1, 100], got {self.jpeg_quality}')

  def weights(self) -> list[float]:
    total = sum(self.kinds.values())
    return [self.kinds.get(k, 0.0) / total for k in KINDS]


def _seed_for(seed: int, split: str) -> int:
  return (int(seed) * 1_000_003 + zlib.crc32(split.encode())) % (2**31 - 1)


class _Generator:
  """The pipeline's tf functions (see the module docstring), in four stages:

  1. `draws`: global example index -> its random numbers, keyed by the run's
     seed and the index only, so an example never depends on its neighbours;
  2. `plan`: a group of examples' draws -> their labels and every number their
     rendering needs (windows, pyramid levels, integer bounds, resampling
     boxes), vectorised over the group: as scalar ops, one example at a time,
     this arithmetic was most of an example's cost;
  3. `render`: one example's plan -> its two NxN sides (the pixel work);
  4. `assemble`: a batch of sides -> the 6-channel input, in each pair's order.
  """

  def __init__(self, images: Sequence[bytes] | sources.DecodedImages, image_size: int,
               seed: int, options: PairOptions):
    tf = self.tf = sources.tensorflow()
    self.size, self.seed, self.o = int(image_size), int(seed), options
    self.decoded = isinstance(images, sources.DecodedImages)
    if self.decoded:
      dims, offsets = images.shapes[..., :2], images.offsets
      self.flat = tf.constant(images.pixels)
    else:  # decoded per example, each level made when needed
      dims = sources.pyramid_shapes(images)[..., :2]
      offsets = np.zeros(dims.shape[:2], np.int64)
      self.encoded = tf.constant(list(images))
    self.n_images, self.n_levels = dims.shape[:2]
    self.dims = tf.constant(dims, tf.int64)        # [n, levels, (height, width)]
    self.offsets = tf.constant(offsets, tf.int64)  # [n, levels]
    self.cum = tf.constant(np.cumsum(options.weights())[:-1], tf.float32)

  # ------------------------------------------------------------------ 1. draws

  def draws(self, index):
    tf = self.tf
    key = tf.stack([tf.constant(self.seed, tf.int64), index])
    return tf.random.stateless_uniform([N_DRAWS], key)

  # ------------------------------------------------------------------ 2. plan

  def _window(self, src, box, out, parts):
    """Where to read a window and how to resample it, for a group.

    src [G]: source indices; box [G, 4]: the window (x0, y0, x1, y1) in pixels of
    the source; out [G]: the output's side; parts: a list of ((start, end),
    output width), start and end fractions of the window's width (end < start
    reads it right to left), each part resampled to its own output width. The
    region read is the window and a margin of 2 pixels, from the smallest level
    of the pyramid still holding 2 x out pixels across the window, area-resized
    to about that (the working image): antialiased, and as sharp as the source
    allows. Returns ints [G, 10] (level, its start in the table, its height and
    width, the region's y0, y1, x0, x1 in it, the working image's height and
    width) and boxes [G, parts, 4] in the working image for crop_and_resize.
    """
    tf, f32 = self.tf, self.tf.float32
    hw0 = tf.cast(tf.gather(self.dims[:, 0], src), f32)
    target = 2.0 * tf.cast(out, f32)
    long = tf.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
    k = tf.math.floor(tf.math.log(tf.maximum(long / target, 1.0)) / np.log(2.0))
    k = tf.minimum(tf.cast(k, tf.int64), self.n_levels - 1)
    at = tf.stack([tf.cast(src, tf.int64), k], -1)
    hw = tf.gather_nd(self.dims, at)
    h, w = hw[:, 0], hw[:, 1]
    scale = tf.cast(hw, f32) / hw0
    b = box * tf.tile(scale[:, ::-1], [1, 2])  # the window in pixels of that level
    x0 = tf.clip_by_value(tf.cast(tf.floor(b[:, 0]), tf.int64) - 2, 0, w - 1)
    y0 = tf.clip_by_value(tf.cast(tf.floor(b[:, 1]), tf.int64) - 2, 0, h - 1)
    x1 = tf.clip_by_value(tf.cast(tf.math.ceil(b[:, 2]), tf.int64) + 2, x0 + 1, w)
    y1 = tf.clip_by_value(tf.cast(tf.math.ceil(b[:, 3]), tf.int64) + 2, y0 + 1, h)
    region = tf.cast(tf.stack([y1 - y0, x1 - x0], -1), f32)
    shrink = tf.minimum(1.0, target / tf.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))
    work = tf.maximum(tf.round(region * shrink[:, None]), 1.0)  # the working image (h, w)
    s = work / region                                             # its exact per-axis scale
    bx0, bx1 = (b[:, 0] - tf.cast(x0, f32)) * s[:, 1], (b[:, 2] - tf.cast(x0, f32)) * s[:, 1]
    by0, by1 = (b[:, 1] - tf.cast(y0, f32)) * s[:, 0], (b[:, 3] - tf.cast(y0, f32)) * s[:, 0]
    den_y, den_x = tf.maximum(work[:, 0] - 1, 1.0), tf.maximum(work[:, 1] - 1, 1.0)
    half_y = 0.5 * (by1 - by0) / tf.cast(out, f32)
    boxes = []
    for (start, end), out_w in parts:  # output pixel j samples x0 + (j + 0.5) * width / out_w
      px0, px1 = bx0 + start * (bx1 - bx0), bx0 + end * (bx1 - bx0)
      half_x = 0.5 * (px1 - px0) / tf.cast(out_w, f32)
      boxes.append(tf.stack([(by0 + half_y - 0.5) / den_y, (px0 + half_x - 0.5) / den_x,
                             (by1 - half_y - 0.5) / den_y, (px1 - half_x - 0.5) / den_x], -1))
    ints = tf.stack([k, tf.gather_nd(self.offsets, at), h, w, y0, y1, x0, x1,
                     tf.cast(work[:, 0], tf.int64), tf.cast(work[:, 1], tf.int64)], -1)
    return ints, tf.stack(boxes, 1)

  def plan(self, u):
    """u [G, N_DRAWS] -> the group's labels and rendering plans."""
    tf, o, size, n = self.tf, self.o, self.size, self.n_images
    u = tf.unstack(u, N_DRAWS, axis=1)
    kind = tf.reduce_sum(tf.cast(u[0][:, None] >= self.cum, tf.int32), 1)
    src = tf.minimum(tf.cast(u[1] * n, tf.int32), n - 1)
    other = (src + 1 + tf.minimum(tf.cast(u[2] * (n - 1), tf.int32), max(n - 2, 0))) % n
    is_outside = tf.equal(kind, KINDS.index('outside'))
    is_other = tf.equal(kind, KINDS.index('other_image'))
    is_squashed = tf.equal(kind, KINDS.index('squashed'))
    is_near = tf.equal(kind, KINDS.index('near_duplicate'))
    is_turned = tf.equal(kind, KINDS.index('straightened'))
    hw = tf.cast(tf.gather(self.dims[:, 0], src), tf.float32)
    ph, pw = hw[:, 0], hw[:, 1]
    # 1. The original: a random view; 'outside' keeps room beyond it.
    vmax = tf.where(is_outside, min(o.view_scale[1], 0.75), o.view_scale[1])
    vmin = tf.minimum(o.view_scale[0], vmax)
    vw, vh = pw * (vmin + (vmax - vmin) * u[3]), ph * (vmin + (vmax - vmin) * u[4])
    vx, vy = (pw - vw) * u[5], (ph - vh) * u[6]
    # 2. The crop window, as fractions of the view.
    area = o.crop_area[0] + (o.crop_area[1] - o.crop_area[0]) * u[7]
    area = tf.where(is_outside, tf.minimum(area, 0.25), area)
    aspect = o.crop_aspect[0] * (o.crop_aspect[1] / o.crop_aspect[0]) ** u[8]  # log-uniform
    wpx = tf.minimum(tf.sqrt(area * vw * vh * aspect), vw)
    hpx = tf.minimum(tf.sqrt(area * vw * vh / aspect), vh)
    fw, fh = wpx / vw, hpx / vh
    fx0, fy0 = (1 - fw) * u[9], (1 - fh) * u[10]
    # 'outside': push the window over the view's edge on the side with more room.
    overhang = o.outside_overhang[0] + (o.outside_overhang[1] - o.outside_overhang[0]) * u[11]
    along_x = u[12] < 0.5
    room_before = tf.where(along_x, vx, vy)
    room_after = tf.where(along_x, pw - vx - vw, ph - vy - vh)
    extent = tf.where(along_x, wpx, hpx)  # the window's size in pixels on that axis
    span = tf.where(along_x, vw, vh)
    shift = tf.minimum(overhang * extent, tf.maximum(room_before, room_after))
    start = tf.where(room_before >= room_after, -shift, span - extent + shift) / span
    fx0 = tf.where(is_outside & along_x, start, fx0)
    fy0 = tf.where(is_outside & ~along_x, start, fy0)
    # 'straightened': the window turned about its centre (draws 28-29, a near-duplicate's
    # otherwise), shrunk as far as it must be for its turned corners to stay in the view.
    lo, hi = o.straightened_turn
    turn = (lo + (hi - lo) * u[28]) * (np.pi / 180) * tf.where(u[29] < 0.5, -1.0, 1.0)
    cos, sin = tf.abs(tf.cos(turn)), tf.abs(tf.sin(turn))
    fit = tf.minimum(1.0, tf.minimum(vw / (wpx * cos + hpx * sin), vh / (wpx * sin + hpx * cos)))
    tw, th = wpx * fit, hpx * fit                          # the turned window's sides
    bw, bh = tw * cos + th * sin, tw * sin + th * cos      # and its upright bounding box's
    cx, cy = bw / 2 + (vw - bw) * u[9], bh / 2 + (vh - bh) * u[10]  # its centre, view pixels
    fx0 = tf.where(is_turned, (cx - tw / 2) / vw, fx0)
    fy0 = tf.where(is_turned, (cy - th / 2) / vh, fy0)
    fw, fh = tf.where(is_turned, tw / vw, fw), tf.where(is_turned, th / vh, fh)
    # 'near_duplicate': the whole view, taken again (the warp below).
    fx0, fy0 = tf.where(is_near, 0.0, fx0), tf.where(is_near, 0.0, fy0)
    fw, fh = tf.where(is_near, 1.0, fw), tf.where(is_near, 1.0, fh)
    box = tf.stack([fx0, fy0, fx0 + fw, fy0 + fh], -1)

    # 3. Each side from its own region at its own resolution: a crop is as sharp as
    # its source allows (as a real crop of a large photo is). The second side: the
    # crop window, of this photo or (other_image) the same fractions of another,
    # in two parts across x, at equal widths or (squashed) unequal ones.
    crop = tf.stack([vx + fx0 * vw, vy + fy0 * vh, vx + (fx0 + fw) * vw, vy + (fy0 + fh) * vh], -1)
    second_src = tf.where(is_other, other, src)
    ohw = tf.cast(tf.gather(self.dims[:, 0], second_src), tf.float32)
    window = tf.where(is_other[:, None], box * tf.tile(ohw[:, ::-1], [1, 2]), crop)
    # A near-duplicate reads the view grown by a margin (where a corner moves out, the second
    # shot sees beyond the view), warped in `render`.
    m = _NEAR_MARGIN
    grown = tf.stack([tf.maximum(vx - m * vw, 0.0), tf.maximum(vy - m * vh, 0.0),
                      tf.minimum(vx + (1 + m) * vw, pw), tf.minimum(vy + (1 + m) * vh, ph)], -1)
    window = tf.where(is_near[:, None], grown, window)
    warp = self._second_shot(u, is_near, tf.stack([vx, vy, vx + vw, vy + vh], -1), grown)
    # A straightened crop reads the turned window's bounding box, turned back in `render`.
    bound = tf.stack([vx + cx - bw / 2, vy + cy - bh / 2, vx + cx + bw / 2, vy + cy + bh / 2], -1)
    window = tf.where(is_turned[:, None], bound, window)
    warp = tf.where(is_turned[:, None], self._turned(turn, tw, th, bw, bh), warp)
    p = o.squash_split[0] + (o.squash_split[1] - o.squash_split[0]) * u[13]
    p = tf.where(u[14] < 0.5, p, 1.0 - p)
    half = (size // 2) / size
    p = tf.where(is_squashed, p, half)
    # 'mirrored': the window read from right to left, part 0 from its right edge.
    mirrored = tf.equal(kind, KINDS.index('mirrored'))
    begin = tf.where(mirrored, 1.0, 0.0)
    p = tf.where(mirrored, 1.0 - half, p)
    second, second_boxes = self._window(
        second_src, window, tf.fill(tf.shape(p), size),
        [((begin, p), size // 2), ((p, 1.0 - begin), size - size // 2)])
    # The original at the crop's detail (source pixels per output pixel, at most 1):
    # where the source lacks pixels the crop is as soft, so sharpness never tells
    # which is which. Rendered at that resolution, enlarged to N in `render`.
    detail = tf.minimum(tf.maximum(crop[:, 2] - crop[:, 0], crop[:, 3] - crop[:, 1]) / size, 1.0)
    low = tf.maximum(tf.cast(tf.round(size * detail), tf.int32), 8)
    first, first_boxes = self._window(src, tf.stack([vx, vy, vx + vw, vy + vh], -1), low,
                                      [((0.0, 1.0), low)])
    # Each side's content size (height, width): N x N stretched, or (keep_aspect) the long side
    # N at its own aspect ratio: the view's for the original and for a near-duplicate (the view
    # taken again), the window's in pixels for every other second side.
    if o.keep_aspect:
      pixel_w, pixel_h = window[:, 2] - window[:, 0], window[:, 3] - window[:, 1]
      pixel_w, pixel_h = tf.where(is_near, vw, pixel_w), tf.where(is_near, vh, pixel_h)
      pixel_w, pixel_h = tf.where(is_turned, tw, pixel_w), tf.where(is_turned, th, pixel_h)
      content = [self._fit(vw, vh), self._fit(pixel_w, pixel_h)]
    else:
      full = tf.fill(tf.shape(vw), float(size))
      content = [tf.stack([full, full], -1)] * 2
    # 4. The degradation of each side.
    sides = [o.downscale[0] + (o.downscale[1] - o.downscale[0]) * u[k] for k in (17, 23)]
    sides = [tf.where(u[k] < o.downscale_prob, tf.maximum(tf.round(size * s), 8.0), float(size))
             for k, s in zip((16, 22), sides)]
    q_lo, q_hi = o.jpeg_quality
    quality = [tf.minimum(q_lo + tf.floor(u[k] * (q_hi - q_lo + 1)), q_hi) for k in (18, 24)]
    # Colour, per side: brightness (an offset, of 255), contrast and saturation
    # (factors). Saturation s is the 3x3 map s I + (1 - s) 1 w^T (w: PIL's luma
    # weights), which commutes with contrast and brightness.
    j = o.color_jitter
    brightness, contrast, saturation = [
        tf.stack([(2 * u[a] - 1) * j + offset, (2 * u[b] - 1) * j + offset], -1)
        for a, b, offset in ((19, 25, 0.0), (20, 26, 1.0), (21, 27, 1.0))]
    s = saturation[..., None, None]
    mix = s * tf.eye(3) + (1 - s) * tf.constant([[0.299, 0.587, 0.114]] * 3)  # [G, 2, 3, 3]
    colour = tf.stack([brightness * 255.0, contrast], -1)                      # [G, 2, 2]
    misc = tf.cast(tf.stack([low, src, second_src, tf.cast(sides[0], tf.int32),
                             tf.cast(quality[0], tf.int32), tf.cast(sides[1], tf.int32),
                             tf.cast(quality[1], tf.int32)], -1), tf.int64)
    content = tf.cast(tf.concat(content, -1), tf.int64)  # [G, 4]: (h, w) of each side
    return {
        'plan': {'first': first, 'first_boxes': first_boxes, 'second': second,
                 'second_boxes': second_boxes, 'misc': misc, 'colour': colour, 'mix': mix,
                 'warp': warp, 'content': content},
        'is_pair': tf.cast(tf.reduce_any(
            kind[:, None] == tf.constant([KINDS.index(k) for k in PAIR_KINDS]), 1), tf.int32),
        'is_swapped': tf.cast(u[15] < 0.5, tf.int32),   # 5. the crop comes first
        'box': box,
        'kind': kind,
        'angle': tf.where(is_turned, turn * (180 / np.pi), 0.0),
        'original_size': tf.stack([vw, vh], -1),
    }

  def _fit(self, w, h):
    """(height, width) [G, 2] of a w x h picture with its long side N (each at least 4)."""
    tf, size = self.tf, float(self.size)
    scale = size / tf.maximum(w, h)
    return tf.stack([tf.clip_by_value(tf.round(h * scale), 4.0, size),
                     tf.clip_by_value(tf.round(w * scale), 4.0, size)], -1)

  def _second_shot(self, u, is_near, view, grown):
    """The projective map [G, 8] (TF's `ImageProjectiveTransformV3` form) from the NxN second
    side, rendered from `grown`, to the view taken again: turned about its centre, each
    corner moved in a random direction (the identity where not `is_near`)."""
    tf, o, size = self.tf, self.o, float(self.size)
    x0, y0, x1, y1 = tf.unstack(view, 4, axis=1)
    w, h = x1 - x0, y1 - y0
    corners = tf.stack([tf.stack([x0, y0], -1), tf.stack([x1, y0], -1),
                        tf.stack([x1, y1], -1), tf.stack([x0, y1], -1)], 1)  # [G, 4, 2]
    centre = tf.reduce_mean(corners, 1, keepdims=True)
    t = np.deg2rad(o.near_duplicate_turn) * (2 * u[28] - 1)
    c, s = tf.cos(t)[:, None], tf.sin(t)[:, None]
    d = corners - centre
    corners = centre + tf.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]], -1)
    lo, hi = o.near_duplicate_shift
    angle = 2 * np.pi * tf.stack(u[29:33], 1)
    length = lo + (hi - lo) * tf.stack(u[33:37], 1)
    corners += (tf.stack([tf.cos(angle) * w[:, None], tf.sin(angle) * h[:, None]], -1)
                * length[..., None])
    g0, g1 = grown[:, None, :2], grown[:, None, 2:]
    corners = tf.clip_by_value(corners, g0, g1)
    target = (corners - g0) / (g1 - g0) * size - 0.5  # in the second side's pixel indices
    out = tf.constant([[0.0, 0.0], [size - 1, 0.0], [size - 1, size - 1], [0.0, size - 1]])
    out = tf.broadcast_to(out, tf.shape(target))
    target = tf.where(is_near[:, None, None], target, out)
    # u = (a0 x + a1 y + a2) / (c0 x + c1 y + 1), v likewise with b: eight equations.
    x, y, tu, tv = out[..., 0], out[..., 1], target[..., 0], target[..., 1]
    one, zero = tf.ones_like(x), tf.zeros_like(x)
    rows_u = tf.stack([x, y, one, zero, zero, zero, -x * tu, -y * tu], -1)
    rows_v = tf.stack([zero, zero, zero, x, y, one, -x * tv, -y * tv], -1)
    a = tf.concat([rows_u, rows_v], 1)
    b = tf.concat([tu, tv], 1)[..., None]
    return tf.linalg.solve(a, b)[..., 0]

  def _turned(self, turn, tw, th, bw, bh):
    """The affine map [G, 8] (as `_second_shot`'s) from the NxN second side of a straightened
    crop, rendered from its turned window's bounding box (bw x bh pixels), to the window (tw x
    th, turned by `turn` radians about the box's centre) upright: output pixel (x, y) shows the
    window's point ((x + 0.5) / N - 0.5) tw along its turned x axis and likewise in y."""
    tf, size = self.tf, float(self.size)
    c, s = tf.cos(turn), tf.sin(turn)
    # In the box's pixels from its centre the point is (fx - 0.5) tw (c, s) + (fy - 0.5) th
    # (-s, c), fx = (x + 0.5) / N; the second side's pixel index is (p / bw + 0.5) N - 0.5.
    a0, a1, b0, b1 = c * tw / bw, -s * th / bw, s * tw / bh, c * th / bh
    a2 = (0.5 - size / 2) * (a0 + a1) + size / 2 - 0.5
    b2 = (0.5 - size / 2) * (b0 + b1) + size / 2 - 0.5
    zero = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero], -1)

  # ------------------------------------------------------------------ 3. render

  def _source(self, i):
    """Image i decoded (the encoded path), checked against the size its header gave."""
    tf = self.tf
    img = tf.io.decode_image(self.encoded[i], channels=3, expand_animations=False)
    img.set_shape([None, None, 3])
    check = tf.debugging.assert_equal(
        tf.cast(tf.shape(img)[:2], tf.int64), self.dims[i, 0],
        message='a source image decodes to another size than its header gives')
    with tf.control_dependencies([check]):
      return tf.identity(img)

  def _working(self, image, ints):
    """The working image of a window (see `_window`), float32 [1, h, w, 3]: its region
    read from the kept pyramid's level, or (the encoded path) from the decoded image
    area-resized to that level, then area-resized to the working size."""
    tf = self.tf
    k, start, h, w, y0, y1, x0, x1, wh, ww = tf.unstack(ints, 10)
    if self.decoded:  # only the region's rows leave the table
      rows = sources.table_rows(self.flat, start, w, y0, y1)
    else:
      level = tf.cond(
          k > 0, lambda: tf.image.resize(image, tf.cast(tf.stack([h, w]), tf.int32), method='area'),
          lambda: tf.cast(image, tf.float32))
      rows = level[y0:y1]
    return tf.image.resize(rows[None, :, x0:x1], tf.cast(tf.stack([wh, ww]), tf.int32),
                           method='area')

  def _degrade(self, img, mix, colour, side, quality, content):
    """A side [N, N, 3] (0-255), stretched: colour changes, resized to its content size
    (h, w) (the same N x N, or its own aspect ratio) and optionally downscaled by side / N,
    JPEG at a quality, back to the content size, at the top left of an NxN uint8 square."""
    tf, size = self.tf, self.size
    brightness, contrast = tf.unstack(colour, 2)
    img = tf.reshape(tf.reshape(img, [-1, 3]) @ tf.transpose(mix), tf.shape(img))  # saturation
    img = tf.clip_by_value(tf.image.adjust_contrast(img, contrast) + brightness, 0.0, 255.0)
    small = tf.maximum(tf.round(tf.cast(content, tf.float32) * tf.cast(side, tf.float32) / size),
                       1.0)
    img = tf.image.resize(img, tf.cast(small, tf.int32), method='area')
    img = tf.raw_ops.EncodeJpegVariableQuality(
        images=tf.saturate_cast(tf.round(img), tf.uint8), quality=tf.cast(quality, tf.int32))
    img = tf.image.resize(tf.io.decode_jpeg(img, channels=3), tf.cast(content, tf.int32),
                          method='bilinear')
    img = tf.image.pad_to_bounding_box(img, 0, 0, size, size)
    img = tf.saturate_cast(tf.round(img), tf.uint8)
    img.set_shape([size, size, 3])
    return img

  def render(self, example):
    tf, size = self.tf, self.size
    plan = example.pop('plan')
    low, src, second_src, side1, q1, side2, q2 = tf.unstack(plan['misc'], 7)
    photo = second_photo = None
    if not self.decoded:
      photo = self._source(src)
      second_photo = tf.cond(tf.equal(second_src, src), lambda: photo,
                             lambda: self._source(second_src))
    low32 = tf.cast(low, tf.int32)
    first = tf.image.crop_and_resize(self._working(photo, plan['first']), plan['first_boxes'],
                                     [0], tf.stack([low32, low32]))
    first = tf.image.resize(first, [size, size], method='bilinear')
    work = self._working(second_photo, plan['second'])
    parts = [tf.image.crop_and_resize(work, plan['second_boxes'][k:k + 1], [0], [size, width])
             for k, width in enumerate((size // 2, size - size // 2))]
    second = tf.concat(parts, axis=2)
    second = tf.cond(
        tf.equal(example['kind'], KINDS.index('near_duplicate'))
        | tf.equal(example['kind'], KINDS.index('straightened')),
        lambda: tf.raw_ops.ImageProjectiveTransformV3(
            images=second, transforms=plan['warp'][None], output_shape=[size, size],
            fill_value=0.0, interpolation='BILINEAR', fill_mode='REFLECT'),
        lambda: second)
    mix, colour = tf.unstack(plan['mix'], 2), tf.unstack(plan['colour'], 2)
    content = plan['content']
    example['first'] = self._degrade(first[0], mix[0], colour[0], side1, q1, content[:2])
    example['second'] = self._degrade(second[0], mix[1], colour[1], side2, q2, content[2:])
    if self.o.keep_aspect:  # (w, h) of each side as shares of N, in the order made
      example['extent'] = tf.cast(tf.gather(content, [1, 0, 3, 2]), tf.float32) / size
    return example

  # ------------------------------------------------------------------ 4. assemble

  def assemble(self, batch):
    tf = self.tf
    first, second = batch.pop('first'), batch.pop('second')
    swapped = tf.equal(batch['is_swapped'], 1)[:, None, None, None]
    batch['image'] = tf.concat([tf.where(swapped, second, first),
                                tf.where(swapped, first, second)], -1)
    if 'extent' in batch:  # in the order the images are shown
      e = batch['extent']
      batch['extent'] = tf.where(swapped[:, :, 0, 0], tf.concat([e[:, 2:], e[:, :2]], -1), e)
    return batch


def dataset(source: str | Sequence[bytes], *, image_size: int, batch_size: int, seed: int,
            split: str = 'train', start_step: int = 0, num_batches: int | None = None,
            shard_index: int = 0, shard_count: int = 1, deterministic: bool = True,
            data_dir: str | None = None, max_images: int | None = None, threads: int = 0,
            **options: Any):
  """Batches of crop-pair examples (see the module docstring).

  Args:
    source: 'demo', a folder of photos, a tfds dataset name, or encoded images.
    image_size: N, the side of both images.
    batch_size: examples per batch on this process.
    seed: the run's seed; with `split` it fixes every example.
    split: the source split, 'train' or 'validation'.
    start_step: the first batch (a resumed run passes its step).
    num_batches: stop after that many batches (default: endless).
    shard_index, shard_count: this process's share of the global stream
      (`jax.process_index()`, `jax.process_count()`).
    deterministic: keep the order fixed under parallel map.
    max_images: use at most this many source images.
    threads: tf.data threads (0: tf.data's pool; see `sources.finish`).
    **options: `PairOptions` fields.
  """
  tf = sources.tensorflow()
  opts = PairOptions(**options)
  if image_size < 8 or batch_size < 1:
    raise ValueError(f'image_size >= 8 and batch_size >= 1 needed, got {image_size}, {batch_size}')
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index {shard_index} not in [0, {shard_count})')
  images = (sources.load(source, split, data_dir=data_dir, max_images=max_images)
            if isinstance(source, str) else list(source)[:max_images])
  if not images:
    raise sources.SourceError('no source images')
  images = sources.kept(images, image_size, opts.max_source_side, opts.decoded_cache_mb)
  gen = _Generator(images, image_size, _seed_for(seed, split), opts)
  first = start_step * batch_size * shard_count + shard_index
  stop = None if num_batches is None else first + num_batches * batch_size * shard_count
  ds = tf.data.Dataset.range(first, stop if stop is not None else np.iinfo(np.int64).max,
                             shard_count)
  graph = sources.graph_function  # traced as written, no autograph (seconds a build)
  ds = ds.map(graph(gen.draws)).batch(_PLAN_GROUP).map(graph(gen.plan)).unbatch()
  ds = ds.map(graph(gen.render), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=deterministic)
  ds = ds.batch(batch_size, drop_remainder=True).map(graph(gen.assemble))
  return sources.finish(ds, deterministic, threads)


def to_pil(batch: Mapping[str, np.ndarray], i: int = 0):
  """Example i of a numpy batch -> (first image, second image, box, labels) for inspection.

  The images are in the order the model sees them; `labels` holds is_pair,
  is_swapped and the kind's name. The box is in fractions of the original,
  which is the second image when is_swapped is 1. Images kept at their aspect
  ratio (`keep_aspect`) come without their padding.
  """
  image = np.asarray(batch['image'][i])
  labels = {'is_pair': int(batch['is_pair'][i]), 'is_swapped': int(batch['is_swapped'][i]),
            'kind': KINDS[int(batch['kind'][i])]}
  n = image.shape[0]
  w1, h1, w2, h2 = (np.rint(np.asarray(batch['extent'][i]) * n).astype(int)
                    if 'extent' in batch else (n,) * 4)
  return (Image.fromarray(image[:h1, :w1, :3]), Image.fromarray(image[:h2, :w2, 3:]),
          tuple(float(v) for v in batch['box'][i]), labels)
