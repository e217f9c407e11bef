"""Auto-crop targets: photos and the crop their photographer chose, as tf.data batches.

    ds = cropjax.data.autocrop.dataset('data/crops', image_size=224, batch_size=32, seed=0)

`source` is a DATASET folder written by `scripts/annotate.py` (read through the
`cropjax.datasets.annotated` tfds builder), 'demo' (a generated demo library
with XMP crops, annotated once into the tfds data_dir) or a list of records
`(encoded image, (left, top, right, bottom), angle)`. Batches: `image` uint8
[B, N, N, 3], `crop` float32 [B, 4] (left, top, right, bottom), `angle`
float32 [B] (degrees, Lightroom's sign).

Labels follow the network input. Resize policies:

* `letterbox` (default): the photo keeps its aspect ratio inside the NxN
  square, padded with grey; `crop` is in fractions of the square, so it moves
  into the picture area. The scale is uniform, so the angle is unchanged.
* `stretch`: the photo is stretched to NxN; `crop` is in fractions of the
  photo, unchanged. The angle stays the photo's own (in its pixel geometry).

Photos are shrunk once to `max_source_side` x N on their long side and kept
decoded, with pyramids, when they fit in `decoded_cache_mb`
(`sources.DecodedImages`): an example then reads the smallest copy with the
detail it needs instead of decoding a photo. The crop and the angle are
fractions and degrees, so they do not change (the integer sizes of a shrunk
photo move a letterboxed label by a rounding, about 0.001).

Training augmentations keep labels right: a horizontal flip mirrors left and
right and negates the angle; a random rescale (zoom in on a window that still
holds the whole crop, or zoom out with padding) moves and scales the box; mild
colour changes (with `hue`, a turn of the hue too); with `refine`, that share
of the examples are close-ups: a
square window REFINE_GROWTH times the crop's longer side (uniform), placed at
random where it holds the whole crop, grey beyond the photo: what
`cropjax.inference.predict_crops` looks at in its second pass; with `rotate`,
a turn of the whole input about its centre by a random angle, the crop
turning with it (its angle adds the turn; skipped where the turned crop would
leave the frame). Randomness is stateless in (seed, example index), so batches
are reproducible and a resumed run starts at its step. Validation batches go
once through the split in order, without augmentation (the last batch may be
smaller); with `num_batches`, exactly that many full batches, cycling through
the split (what periodic evaluation during training uses).
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any, Sequence

import numpy as np

from cropjax.data import sources

FILL = 128.0  # grey for padding
REFINE_GROWTH = (1.1, 1.6)  # close-ups: the window's side over the crop's longer side


@dataclasses.dataclass(frozen=True)
class AutocropOptions:
  resize: str = 'letterbox'                    # or 'stretch'
  flip_prob: float = 0.5
  zoom: tuple[float, float] = (0.8, 1.25)      # window size / photo size; < 1 zooms in
  color_jitter: float = 0.1
  hue: float = 0.0                             # hue shifted by up to this share of the circle
  rotate: float = 0.0                          # turn by up to this many degrees (letterbox only)
  refine: float = 0.0                          # share of close-up windows (letterbox only)
  max_source_side: float = 2.0                 # photos shrunk to this many N once (0: never)
  decoded_cache_mb: float = 512.0              # keep them decoded (+ pyramids) if they fit

  def __post_init__(self):
    if self.resize not in ('letterbox', 'stretch'):
      raise ValueError(f"resize must be 'letterbox' or 'stretch', got {self.resize!r}")
    if not 0 < self.zoom[0] <= self.zoom[1]:
      raise ValueError(f'zoom must be 0 < low <= high, got {self.zoom}')
    if self.rotate and self.resize != 'letterbox':
      raise ValueError('rotate needs resize=letterbox (a stretched photo has no one angle)')
    if not 0 <= self.rotate <= 45:
      raise ValueError(f'rotate must be 0 to 45 degrees, got {self.rotate}')
    if not 0 <= self.hue <= 0.5:
      raise ValueError(f'hue must be a share of the colour circle from 0 to 0.5, got {self.hue}')
    if not 0 <= self.refine <= 1:
      raise ValueError(f'refine must be a share from 0 to 1, got {self.refine}')
    if self.refine and self.resize != 'letterbox':
      raise ValueError('refine needs resize=letterbox (the close-up is a square window)')


def load_records(path: str, split: str, data_dir: str | None = None) -> list[tuple[bytes, Any, float]]:
  """(encoded image, crop, angle) of an annotated DATASET folder's split, via tfds.

  `path='demo'` is the embedded default: a demo library
  (`cropjax.demo_library`) annotated once into `data_dir`.
  """
  sources.tensorflow()
  import tensorflow_datasets as tfds

  from cropjax.datasets import annotated
  if path == 'demo':
    from cropjax import demo_library
    path = str(demo_library.ensure_dataset(data_dir or os.path.expanduser('~/tensorflow_datasets')))
  b = annotated.builder(path, data_dir=data_dir)
  b.download_and_prepare()
  if split not in b.info.splits:
    raise sources.SourceError(f'{path}: no {split!r} split (too few photos?)')
  ds = b.as_dataset(split=split, shuffle_files=False,
                    decoders={'image': tfds.decode.SkipDecoding()})
  return [(bytes(e['image']), tuple(float(v) for v in e['crop']), float(e['angle']))
          for e in tfds.as_numpy(ds)]


def make_example_fn(images: Sequence[bytes] | sources.DecodedImages, crops: np.ndarray,
                    angles: np.ndarray, image_size: int, seed: int, options: AutocropOptions,
                    train: bool):
  tf = sources.tensorflow()
  crops = tf.constant(np.asarray(crops, np.float32))
  angles = tf.constant(np.asarray(angles, np.float32))
  n, size, o = len(images), int(image_size), options
  decoded = isinstance(images, sources.DecodedImages)
  if decoded:
    flat, offsets, dims = (tf.constant(images.pixels), tf.constant(images.offsets),
                           tf.constant(images.shapes[..., :2]))
  else:
    encoded = tf.constant(list(images))

  def uniform(s, lo=0.0, hi=1.0, shape=()):
    return tf.random.stateless_uniform(shape, s, lo, hi)

  def photo(i):
    """(photo i's (height, width), float32; `at(new)`: the photo area-resized to `new`)."""
    if decoded:
      def at(new):  # from the smallest pyramid level at least that large
        k = tf.reduce_sum(tf.cast(tf.reduce_all(dims[i] >= tf.cast(new, tf.int64), -1),
                                  tf.int32)) - 1
        hk, wk = dims[i, k, 0], dims[i, k, 1]
        return tf.image.resize(sources.table_rows(flat, offsets[i, k], wk, 0, hk), new,
                               method='area')
      return tf.cast(dims[i, 0], tf.float32), at
    img = tf.io.decode_image(encoded[i], channels=3, expand_animations=False)
    img.set_shape([None, None, 3])
    return (tf.cast(tf.shape(img)[:2], tf.float32),
            lambda new: tf.image.resize(img, new, method='area'))

  def turn(image, label, angle, degrees):
    """The square `image` turned by `degrees` about its centre (clockwise on screen, as
    Lightroom's angle), and the crop with it: its centre turns, its size stays, its angle
    adds `degrees`. Not turned (0 degrees) where a corner of the crop would leave the frame."""
    def turned(d):
      a = d * (np.pi / 180.0)
      c, s_ = tf.cos(a), tf.sin(a)
      mx, my = (label[0] + label[2]) / 2 - 0.5, (label[1] + label[3]) / 2 - 0.5
      hx, hy = (label[2] - label[0]) / 2, (label[3] - label[1]) / 2
      cx, cy = 0.5 + c * mx - s_ * my, 0.5 + s_ * mx + c * my
      new = tf.stack([cx - hx, cy - hy, cx + hx, cy + hy])
      b = (angle + d) * (np.pi / 180.0)
      cb, sb = tf.abs(tf.cos(b)), tf.abs(tf.sin(b))
      ex, ey = cb * hx + sb * hy, sb * hx + cb * hy   # half extent of the turned crop
      inside = (cx - ex >= 0) & (cx + ex <= 1) & (cy - ey >= 0) & (cy + ey <= 1)
      return new, inside
    new, inside = turned(degrees)
    degrees = tf.where(inside, degrees, 0.0)
    label = tf.where(inside, new, label)
    # Output pixel q samples the input at R(-degrees) (q - p) + p, p the centre (pixel centres
    # at integers).
    a = degrees * (np.pi / 180.0)
    c, s_ = tf.cos(a), tf.sin(a)
    p = (size - 1) / 2.0
    transform = tf.stack([c, s_, p - c * p - s_ * p, -s_, c, p + s_ * p - c * p, 0.0, 0.0])
    image = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.constant([size, size]),
        fill_value=FILL, interpolation='BILINEAR', fill_mode='CONSTANT')[0]
    return image, label, angle + degrees

  def example(index):
    s = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), index]), 8)
    i = (tf.random.stateless_uniform((), s[0], 0, n, dtype=tf.int32) if train
         else tf.cast(index % n, tf.int32))
    hw, resized = photo(i)
    h, w = hw[0], hw[1]
    crop, angle = crops[i], angles[i]
    cx0, cy0, cx1, cy1 = crop[0] * w, crop[1] * h, crop[2] * w, crop[3] * h
    # The window of the photo that becomes the input (pixel coordinates).
    wx0, wy0, ww, wh = 0.0, 0.0, w, h
    flip = False
    if train:
      flip = uniform(s[1]) < o.flip_prob
      cx0, cx1 = tf.where(flip, w - cx1, cx0), tf.where(flip, w - cx0, cx1)
      angle = tf.where(flip, -angle, angle)
      z = uniform(s[2], o.zoom[0], o.zoom[1])
      z = tf.maximum(z, tf.maximum((cx1 - cx0) / w, (cy1 - cy0) / h))  # the crop must fit
      ww, wh = z * w, z * h
      p = uniform(s[3], 0.0, 1.0, (2,))
      # Zoom in: the window holds the crop and stays in the photo. Zoom out: it holds the photo.
      lo_x = tf.where(z <= 1, tf.maximum(0.0, cx1 - ww), w - ww)
      hi_x = tf.where(z <= 1, tf.minimum(cx0, w - ww), 0.0)
      lo_y = tf.where(z <= 1, tf.maximum(0.0, cy1 - wh), h - wh)
      hi_y = tf.where(z <= 1, tf.minimum(cy0, h - wh), 0.0)
      wx0 = lo_x + (hi_x - lo_x) * p[0]
      wy0 = lo_y + (hi_y - lo_y) * p[1]
      if o.refine:  # a close-up: a square window round the crop, as the second pass sees it
        r = uniform(s[7], 0.0, 1.0, (4,))
        close = r[0] < o.refine
        side = (REFINE_GROWTH[0] + (REFINE_GROWTH[1] - REFINE_GROWTH[0]) * r[1]) * tf.maximum(
            cx1 - cx0, cy1 - cy0)
        wx0 = tf.where(close, cx1 - side + (side - (cx1 - cx0)) * r[2], wx0)
        wy0 = tf.where(close, cy1 - side + (side - (cy1 - cy0)) * r[3], wy0)
        ww, wh = tf.where(close, side, ww), tf.where(close, side, wh)
    if o.resize == 'letterbox':  # a square window around the chosen one
      side = tf.maximum(ww, wh)
      wx0, wy0 = wx0 - (side - ww) / 2, wy0 - (side - wh) / 2
      ww = wh = side
    # Antialias down to about N over the window (a flip commutes with that), then
    # sample pixel centres.
    scale = tf.minimum(1.0, size / tf.minimum(ww, wh))
    new = tf.maximum(tf.cast(tf.round(tf.stack([h, w]) * scale), tf.int32), 1)
    small = resized(new)
    if train:
      small = tf.where(flip, tf.reverse(small, [1]), small)
      j = o.color_jitter
      small = tf.image.adjust_brightness(small / 255.0, uniform(s[4], -j, j))
      small = tf.image.adjust_saturation(small, uniform(s[5], 1 - j, 1 + j))
      if o.hue:  # its own seed split off, so the other draws stay as they were
        small = tf.image.adjust_hue(
            small, uniform(tf.random.experimental.stateless_split(s[5], 2)[1], -o.hue, o.hue))
      small = tf.clip_by_value(small, 0.0, 1.0) * 255.0
    sy = tf.cast(new[0], tf.float32) / h
    sx = tf.cast(new[1], tf.float32) / w
    hs, ws = tf.cast(new[0], tf.float32), tf.cast(new[1], tf.float32)
    x0, x1 = wx0 * sx, (wx0 + ww) * sx
    y0, y1 = wy0 * sy, (wy0 + wh) * sy
    box = [[(y0 + 0.5 * (y1 - y0) / size - 0.5) / tf.maximum(hs - 1, 1.0),
            (x0 + 0.5 * (x1 - x0) / size - 0.5) / tf.maximum(ws - 1, 1.0),
            (y1 - 0.5 * (y1 - y0) / size - 0.5) / tf.maximum(hs - 1, 1.0),
            (x1 - 0.5 * (x1 - x0) / size - 0.5) / tf.maximum(ws - 1, 1.0)]]
    out = tf.image.crop_and_resize(small[None], box, [0], [size, size],
                                   extrapolation_value=FILL)[0]
    label = tf.stack([(cx0 - wx0) / ww, (cy0 - wy0) / wh, (cx1 - wx0) / ww, (cy1 - wy0) / wh])
    if train and o.rotate:
      out, label, angle = turn(out, label, angle, uniform(s[6], -o.rotate, o.rotate))
    return {
        'image': tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8),
        'crop': tf.clip_by_value(label, 0.0, 1.0),
        'angle': tf.cast(angle, tf.float32),
    }

  return example


def dataset(source: str | Sequence[tuple[bytes, Any, float]], *, image_size: int,
            batch_size: int, seed: int, split: str = 'train', start_step: int = 0,
            num_batches: int | None = None, shard_index: int = 0, shard_count: int = 1,
            deterministic: bool = True, data_dir: str | None = None, threads: int = 0,
            **options: Any):
  """Batches of {'image', 'crop', 'angle'} (see the module docstring).

  `threads`: tf.data threads (0: tf.data's pool; see `sources.finish`).
  """
  tf = sources.tensorflow()
  opts = AutocropOptions(**options)
  records = load_records(source, split, data_dir) if isinstance(source, str) else list(source)
  if not records:
    raise sources.SourceError('no annotated photos')
  train = split == 'train'
  run_seed = (int(seed) * 1_000_003 + zlib.crc32(split.encode())) % (2**31 - 1)
  images = sources.kept([r[0] for r in records], image_size, opts.max_source_side,
                        opts.decoded_cache_mb)
  example = make_example_fn(images, [r[1] for r in records], [r[2] for r in records],
                            image_size, run_seed, opts, train)
  if train:
    first = start_step * batch_size * shard_count + shard_index
    stop = (np.iinfo(np.int64).max if num_batches is None
            else first + num_batches * batch_size * shard_count)
    ds = tf.data.Dataset.range(first, stop, shard_count)
  elif num_batches is None:  # once through the split
    ds = tf.data.Dataset.range(shard_index, len(records), shard_count)
  else:  # exactly num_batches full batches, cycling through the split
    ds = tf.data.Dataset.range(shard_index, num_batches * batch_size * shard_count, shard_count)
  ds = ds.map(sources.graph_function(example), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=deterministic)
  ds = ds.batch(batch_size, drop_remainder=train or num_batches is not None)  # all full then
  return sources.finish(ds, deterministic, threads)
