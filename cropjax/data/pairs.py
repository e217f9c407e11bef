"""Crop-pair examples, synthesised on the fly with tf.data.

    ds = cropjax.data.pairs.dataset('demo', image_size=64, batch_size=32, seed=0)
    batch = next(iter(ds.as_numpy_iterator()))
    first, second, box, labels = cropjax.data.pairs.to_pil(batch, 0)

Each batch: `image` uint8 [B, N, N, 6] (channels 0-2 the first image, 3-5 the
second, each resized to NxN whatever its size), `is_pair` int32 [B],
`is_swapped` int32 [B] (1 when the crop comes first), `box` float32 [B, 4]
(x0, y0, x1, y1 of the crop inside the original, fractions of the original;
`top_left = box[:, :2]`), `kind` int32 [B] (an index into `KINDS`) and
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
   kept decoded when they fit in `decoded_cache_mb`, since decoding them is
   the largest part of an example's cost.
4. Each side independently: mild brightness, contrast and saturation changes,
   optionally downscaled, JPEG-encoded at a random quality, and back to NxN.
   Robustness to re-encoding is thus built into the data.
5. With probability 1/2 the crop is put first.

Kinds: `positive` (a crop pair), and negatives: `other_image` (a crop of
another photo), `outside` (a window running partly outside the original, into
the photo beyond the view), `mirrored` (a crop, flipped), `squashed` (a crop
whose two parts are squashed unequally). A uniform squash is not a negative:
with both images resized to NxN it is indistinguishable from the crop of
another window, so the squash is piecewise.
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

KINDS = ('positive', 'other_image', 'outside', 'mirrored', 'squashed')


@dataclasses.dataclass(frozen=True)
class PairOptions:
  """What the generator draws from. Ranges are (low, high)."""
  kinds: Mapping[str, float] = dataclasses.field(default_factory=lambda: {
      'positive': 0.5, 'other_image': 0.2, 'outside': 0.1, 'mirrored': 0.1, 'squashed': 0.1})
  crop_area: tuple[float, float] = (0.05, 0.9)     # of the original's area
  crop_aspect: tuple[float, float] = (0.5, 2.0)    # width / height in pixels, log-uniform
  view_scale: tuple[float, float] = (0.6, 1.0)     # original = this fraction of each side
  jpeg_quality: tuple[int, int] = (30, 95)
  downscale_prob: float = 0.5                     # downscale a side before encoding
  downscale: tuple[float, float] = (0.5, 1.0)      # to this fraction of N
  color_jitter: float = 0.1                       # brightness, contrast, saturation
  outside_overhang: tuple[float, float] = (0.25, 0.45)  # of the window's size
  squash_split: tuple[float, float] = (0.15, 0.3)  # where the squashed crop is split
  max_source_side: float = 8.0                    # sources shrunk to this many N (0: never)
  decoded_cache_mb: float = 512.0                 # keep sources decoded if they fit (0: never)

  def __post_init__(self):
    unknown = set(self.kinds) - set(KINDS)
    if unknown:
      raise ValueError(f'unknown kinds {sorted(unknown)}; choose from {KINDS}')
    if not self.kinds or min(self.kinds.values()) < 0 or sum(self.kinds.values()) <= 0:
      raise ValueError(f'kinds needs non-negative weights with a positive sum, got {self.kinds}')
    for name in ('crop_area', 'crop_aspect', 'view_scale', 'jpeg_quality', 'downscale',
                 'outside_overhang', 'squash_split'):
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


def make_example_fn(images: Sequence[bytes] | sources.DecodedImages, image_size: int, seed: int,
                    options: PairOptions):
  """A tf function: global example index -> one example (see the module docstring)."""
  tf = sources.tensorflow()
  n_images = len(images)
  size = int(image_size)
  if isinstance(images, sources.DecodedImages):
    flat, offsets, shapes = (tf.constant(images.pixels), tf.constant(images.offsets),
                             tf.constant(images.shapes))
    pixels = lambda i: tf.reshape(flat[offsets[i]:offsets[i] + tf.reduce_prod(shapes[i])],
                                  shapes[i])
  else:
    encoded = tf.constant(list(images))
    pixels = lambda i: tf.io.decode_image(encoded[i], channels=3, expand_animations=False)

  def decode(i):
    """Source image i, uint8 HxWx3."""
    img = pixels(i)
    img.set_shape([None, None, 3])
    return img
  cum = tf.constant(np.cumsum(options.weights()), tf.float32)
  o = options

  def uniform(s, lo=0.0, hi=1.0, shape=()):
    return tf.random.stateless_uniform(shape, s, lo, hi)

  def working(img, view_long):
    """Antialiased so a window with this long side is about 2N; returns (image, scale)."""
    img = tf.cast(img, tf.float32)
    hw = tf.cast(tf.shape(img)[:2], tf.float32)
    scale = tf.minimum(1.0, 2.0 * size / view_long)
    new = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), 1)
    img = tf.image.resize(img, new, method='area', antialias=True)
    return img, tf.cast(new, tf.float32) / hw  # exact per-axis scale

  def region(img, box):
    """The part of img around box (x0, y0, x1, y1, pixels), at the box's working
    resolution; returns (that image, the box in its pixels)."""
    h, w = tf.shape(img)[0], tf.shape(img)[1]
    x0 = tf.clip_by_value(tf.cast(tf.floor(box[0]), tf.int32) - 2, 0, w - 1)
    y0 = tf.clip_by_value(tf.cast(tf.floor(box[1]), tf.int32) - 2, 0, h - 1)
    x1 = tf.clip_by_value(tf.cast(tf.math.ceil(box[2]), tf.int32) + 2, x0 + 1, w)
    y1 = tf.clip_by_value(tf.cast(tf.math.ceil(box[3]), tf.int32) + 2, y0 + 1, h)
    out, scale = working(img[y0:y1, x0:x1], tf.maximum(box[2] - box[0], box[3] - box[1]))
    ox, oy = tf.cast(x0, tf.float32), tf.cast(y0, tf.float32)
    return out, tf.stack([(box[0] - ox) * scale[1], (box[1] - oy) * scale[0],
                          (box[2] - ox) * scale[1], (box[3] - oy) * scale[0]])

  def sample(img, box, out_w=size):
    """Window (x0, y0, x1, y1) in pixel coordinates of img -> (size, out_w), pixel centres."""
    h = tf.cast(tf.shape(img)[0], tf.float32)
    w = tf.cast(tf.shape(img)[1], tf.float32)
    x0, y0, x1, y1 = box[0], box[1], box[2], box[3]
    bw, bh = x1 - x0, y1 - y0
    # Output pixel j samples x0 + (j + 0.5) * bw / out_w, in index units (- 0.5).
    nx0 = (x0 + 0.5 * bw / out_w - 0.5) / tf.maximum(w - 1, 1.0)
    nx1 = (x1 - 0.5 * bw / out_w - 0.5) / tf.maximum(w - 1, 1.0)
    ny0 = (y0 + 0.5 * bh / size - 0.5) / tf.maximum(h - 1, 1.0)
    ny1 = (y1 - 0.5 * bh / size - 0.5) / tf.maximum(h - 1, 1.0)
    out = tf.image.crop_and_resize(img[None], [[ny0, nx0, ny1, nx1]], [0], [size, out_w],
                                   method='bilinear')
    return out[0]

  def degrade(img, s):
    """Colour changes, optional downscale, JPEG at a random quality, back to NxN."""
    ks = tf.random.experimental.stateless_split(s, 7)
    j = o.color_jitter
    img = img / 255.0
    img = tf.image.adjust_brightness(img, uniform(ks[0], -j, j))
    img = tf.image.adjust_contrast(img, uniform(ks[1], 1 - j, 1 + j))
    img = tf.image.adjust_saturation(img, uniform(ks[2], 1 - j, 1 + j))
    img = tf.clip_by_value(img, 0.0, 1.0)
    down = uniform(ks[3]) < o.downscale_prob
    side = tf.cast(tf.round(size * uniform(ks[4], o.downscale[0], o.downscale[1])), tf.int32)
    side = tf.where(down, tf.maximum(side, 8), size)
    img = tf.image.resize(img, [side, side], method='area', antialias=True)
    quality = tf.random.stateless_uniform((), ks[5], o.jpeg_quality[0], o.jpeg_quality[1] + 1,
                                          dtype=tf.int32)
    img = tf.image.adjust_jpeg_quality(img, quality)
    img = tf.image.resize(img, [size, size], method='bilinear')
    return tf.cast(tf.clip_by_value(tf.round(img * 255.0), 0, 255), tf.uint8)

  def example(index):
    s = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), index]), 16)
    kind = tf.reduce_sum(tf.cast(uniform(s[0]) >= cum[:-1], tf.int32))
    src = tf.random.stateless_uniform((), s[1], 0, n_images, dtype=tf.int32)
    other = (src + 1 + tf.random.stateless_uniform((), s[2], 0, max(n_images - 1, 1),
                                                    dtype=tf.int32)) % n_images
    is_outside = tf.equal(kind, KINDS.index('outside'))

    photo = decode(src)
    ph = tf.cast(tf.shape(photo)[0], tf.float32)
    pw = tf.cast(tf.shape(photo)[1], tf.float32)
    # 1. The original: a random view; 'outside' keeps room beyond it.
    vmax = tf.where(is_outside, tf.minimum(o.view_scale[1], 0.75), o.view_scale[1])
    vmin = tf.minimum(o.view_scale[0], vmax)
    sv = uniform(s[3], 0.0, 1.0, (2,))
    vw = pw * (vmin + (vmax - vmin) * sv[0])
    vh = ph * (vmin + (vmax - vmin) * sv[1])
    pv = uniform(s[4], 0.0, 1.0, (2,))
    vx, vy = (pw - vw) * pv[0], (ph - vh) * pv[1]
    # 2. The crop window, as fractions of the view.
    area = uniform(s[5], o.crop_area[0], o.crop_area[1])
    area = tf.where(is_outside, tf.minimum(area, 0.25), area)
    aspect = tf.exp(uniform(s[6], np.log(o.crop_aspect[0]), np.log(o.crop_aspect[1])))
    wpx = tf.minimum(tf.sqrt(area * vw * vh * aspect), vw)
    hpx = tf.minimum(tf.sqrt(area * vw * vh / aspect), vh)
    fw, fh = wpx / vw, hpx / vh
    pc = uniform(s[7], 0.0, 1.0, (2,))
    fx0, fy0 = (1 - fw) * pc[0], (1 - fh) * pc[1]
    # 'outside': push the window over the view's edge on the side with more room.
    d = uniform(s[8], 0.0, 1.0, (2,))
    overhang = o.outside_overhang[0] + (o.outside_overhang[1] - o.outside_overhang[0]) * d[0]
    along_x = d[1] < 0.5
    room_before = tf.where(along_x, vx, vy)
    room_after = tf.where(along_x, pw - vx - vw, ph - vy - vh)
    extent = tf.where(along_x, wpx, hpx)           # window size in pixels on that axis
    span = tf.where(along_x, vw, vh)
    shift = tf.minimum(overhang * extent, tf.maximum(room_before, room_after))
    start = tf.where(room_before >= room_after, -shift, span - extent + shift) / span
    fx0 = tf.where(is_outside & along_x, start, fx0)
    fy0 = tf.where(is_outside & ~along_x, start, fy0)
    box = tf.stack([fx0, fy0, fx0 + fw, fy0 + fh])

    # 3. Render each side from its own region of the photo at its own working
    # resolution, so a crop is as sharp as its source allows (as a real crop of a
    # large photo is); where the source is too small for that, the original is
    # blurred to the crop's detail below, so sharpness never tells which is which.
    cx0, cy0 = vx + fx0 * vw, vy + fy0 * vh
    cx1, cy1 = vx + (fx0 + fw) * vw, vy + (fy0 + fh) * vh
    first = sample(*region(photo, tf.stack([vx, vy, vx + vw, vy + vh])))
    crop_img, crop_px = region(photo, tf.stack([cx0, cy0, cx1, cy1]))

    def crop_of_this():
      return sample(crop_img, crop_px)

    def crop_of_other():
      oimg = decode(other)
      ow = tf.cast(tf.shape(oimg)[1], tf.float32)
      oh = tf.cast(tf.shape(oimg)[0], tf.float32)
      return sample(*region(oimg, tf.stack([box[0] * ow, box[1] * oh, box[2] * ow, box[3] * oh])))

    def squashed():
      # Split at p of the width; the left part fills half the output, the right the rest.
      p = uniform(s[9], o.squash_split[0], o.squash_split[1])
      p = tf.where(uniform(s[10]) < 0.5, p, 1.0 - p)
      xm = crop_px[0] + p * (crop_px[2] - crop_px[0])
      left = sample(crop_img, tf.stack([crop_px[0], crop_px[1], xm, crop_px[3]]), size // 2)
      right = sample(crop_img, tf.stack([xm, crop_px[1], crop_px[2], crop_px[3]]),
                     size - size // 2)
      return tf.concat([left, right], axis=1)

    detail = tf.minimum(tf.maximum(cx1 - cx0, cy1 - cy0) / size, 1.0)  # source px per output px
    low = tf.maximum(tf.cast(tf.round(size * detail), tf.int32), 8)
    first = tf.image.resize(tf.image.resize(first, [low, low], method='area', antialias=True),
                            [size, size], method='bilinear')

    second = tf.switch_case(kind, [
        crop_of_this,                                            # positive
        crop_of_other,                                           # other_image
        crop_of_this,                                            # outside
        lambda: tf.image.flip_left_right(crop_of_this()),        # mirrored
        squashed,                                                # squashed
    ])
    # 4. Degrade each side independently; 5. maybe swap.
    first, second = degrade(first, s[11]), degrade(second, s[12])
    swapped = uniform(s[13]) < 0.5
    image = tf.where(swapped, tf.concat([second, first], -1), tf.concat([first, second], -1))
    return {
        'image': tf.ensure_shape(image, [size, size, 6]),
        'is_pair': tf.cast(tf.equal(kind, 0), tf.int32),
        'is_swapped': tf.cast(swapped, tf.int32),
        'box': tf.cast(box, tf.float32),
        'kind': kind,
        'original_size': tf.stack([vw, vh]),
    }

  return example


def dataset(source: str | Sequence[bytes], *, image_size: int, batch_size: int, seed: int,
            split: str = 'train', start_step: int = 0, num_batches: int | None = None,
            shard_index: int = 0, shard_count: int = 1, deterministic: bool = True,
            data_dir: str | None = None, max_images: int | None = None,
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
  if opts.max_source_side:  # decoding is the bulk of the work: no more pixels than needed
    images = sources.shrink(images, max(int(opts.max_source_side * image_size), 16))
  if opts.decoded_cache_mb:  # and none at all if they fit in memory decoded
    images = sources.DecodedImages.fit(images, opts.decoded_cache_mb) or images
  example = make_example_fn(images, image_size, _seed_for(seed, split), opts)
  first = start_step * batch_size * shard_count + shard_index
  stop = None if num_batches is None else first + num_batches * batch_size * shard_count
  ds = tf.data.Dataset.range(first, stop if stop is not None else np.iinfo(np.int64).max,
                             shard_count)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
  ds = ds.batch(batch_size, drop_remainder=True)
  return sources.finish(ds, deterministic)


def to_pil(batch: Mapping[str, np.ndarray], i: int = 0):
  """Example i of a numpy batch -> (first image, second image, box, labels) for inspection.

  The images are in the order the model sees them; `labels` holds is_pair,
  is_swapped and the kind's name. The box is in fractions of the original,
  which is the second image when is_swapped is 1.
  """
  image = np.asarray(batch['image'][i])
  labels = {'is_pair': int(batch['is_pair'][i]), 'is_swapped': int(batch['is_swapped'][i]),
            'kind': KINDS[int(batch['kind'][i])]}
  return (Image.fromarray(image[..., :3]), Image.fromarray(image[..., 3:]),
          tuple(float(v) for v in batch['box'][i]), labels)
