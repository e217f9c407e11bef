"""Image sources for the input pipelines: encoded photos held for random access.

`load(source, split)` accepts

* `'demo'`: the embedded default (procedural images and scikit-image's photos,
  `cropjax.datasets.photos`, config 'demo'), nothing to download;
* a folder of photos (built once into a tfds dataset by `photos.builder`);
* any tfds dataset name with an 'image' feature, e.g. `'imagenet2012'`, if it
  is prepared in the tfds data dir.

It returns the split's images as encoded bytes (JPEG/PNG), at most
`max_images` of them, in tfds' deterministic order. Holding bytes, not pixels,
keeps a 10,000-photo folder at about 1-2 GB; the pipelines decode on the fly.
Images that do not decode are skipped with one warning naming them.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from typing import Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)


class SourceError(ValueError):
  """A source cannot be found or holds no usable image."""


def tensorflow():
  """TensorFlow for input pipelines only: it must not take the accelerators from JAX."""
  import tensorflow as tf
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # already initialised; the devices are as they are
    pass
  return tf


def graph_function(fn):
  """`fn` for `tf.data.Dataset.map`, traced as written: no autograph conversion, which costs
  seconds a pipeline and is not needed (the generators branch with `tf.where`/`tf.cond`, not
  Python `if` on tensors)."""
  return tensorflow().autograph.experimental.do_not_convert(fn)


def _checked(items: Sequence[tuple[str, bytes]], source: str) -> list[bytes]:
  good = []
  for name, data in items:
    try:
      with Image.open(io.BytesIO(data)) as im:
        im.verify()
      good.append(data)
    except Exception as e:  # noqa: BLE001 - any decoder failure means: skip it
      log.warning('skipping %s in %s: does not decode (%s)', name, source, e)
  if not good:
    raise SourceError(f'{source}: no decodable image')
  return good


def load(source: str, split: str = 'train', *, data_dir: str | None = None,
         max_images: int | None = None) -> list[bytes]:
  """Encoded images of `source`'s `split` (see the module docstring)."""
  tensorflow()
  import tensorflow_datasets as tfds

  from cropjax.datasets import photos
  if source == 'demo':
    builder = photos.Photos(config='demo', data_dir=data_dir)
  elif os.path.isdir(os.path.expanduser(source)):
    builder = photos.builder(os.path.expanduser(source), data_dir=data_dir)
  else:
    try:
      builder = tfds.builder(source, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - tfds raises several kinds
      raise SourceError(f'{source}: neither a folder nor a tfds dataset ({e})') from None
  try:
    builder.download_and_prepare()
  except Exception as e:  # noqa: BLE001
    raise SourceError(f'{source}: cannot prepare the dataset ({type(e).__name__}: {e})') from None
  if split not in builder.info.splits:
    raise SourceError(f'{source}: no split {split!r} (has {sorted(builder.info.splits)})')
  if 'image' not in builder.info.features:
    raise SourceError(f'{source}: has no image feature')
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={'image': tfds.decode.SkipDecoding()})
  if max_images:
    ds = ds.take(max_images)
  items = [(str(ex.get('id', i)), bytes(ex['image']))
           for i, ex in enumerate(tfds.as_numpy(ds))]
  return _checked(items, f'{source}[{split}]')


def finish(ds, deterministic: bool, threads: int = 0):
  """The options every cropjax pipeline ends with, and its prefetch.

  `threads` > 0 runs the pipeline on a private pool of that many threads, one
  op at a time each; 0 leaves tf.data's shared pool (as many threads as cores).
  A training step on the CPU shares the cores with the pipeline: there one
  pipeline thread interrupts one of XLA's threads at a time instead of both
  (the demo's loop: 206-220 -> 228-237 ex/s on 2 cores, docs/benchmarks.md).

  tf.data's autotuner is off: its model thread sleeps for up to a minute
  between rounds and an iterator's teardown waits for it, which held a finished
  training run for 40 to 60 s. Without it, AUTOTUNE parallelism falls back to
  the cores available and the prefetch buffer grows on its own, which ran the
  crop-pair pipeline as fast or faster here.
  """
  tf = tensorflow()
  options = tf.data.Options()
  options.deterministic = deterministic
  options.autotune.enabled = False
  if threads < 0:
    raise ValueError(f'threads must be 0 (tf.data\'s pool) or positive, got {threads}')
  if threads:
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def shrink(images: Sequence[bytes], max_side: int, quality: int = 95) -> list[bytes]:
  """Images whose long side exceeds `max_side`, downscaled to it (area) and re-encoded as JPEG.

  Decoding dominates the cost of a synthesised example, and it grows with the
  pixel count; a pipeline that renders NxN views never needs much more than a
  few N per side. Smaller images are passed through unchanged.
  """
  out = []
  for data in images:
    with Image.open(io.BytesIO(data)) as im:
      if max(im.size) <= max_side:
        out.append(data)
        continue
      scale = max_side / max(im.size)
      size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
      im.draft('RGB', (size[0] * 2, size[1] * 2))  # JPEG: decode at a reduced scale first
      small = im.convert('RGB').resize(size, Image.Resampling.BOX)
    buf = io.BytesIO()
    small.save(buf, format='JPEG', quality=quality)
    out.append(buf.getvalue())
  return out


def image_size(data: bytes) -> tuple[int, int]:
  """(width, height) of an encoded image, from its header."""
  with Image.open(io.BytesIO(data)) as im:
    return im.size


def _pyramids(images: Sequence[bytes], min_side: int) -> list[list[tuple[int, int, int]]]:
  """Each image's pyramid levels, (height, width, 3); see `pyramid_shapes`."""
  pyramids = []
  for data in images:
    width, height = image_size(data)
    levels = [(height, width, 3)]
    while max(levels[-1][:2]) // 2 >= min_side:
      k = len(levels)
      levels.append((max(1, round(height / 2**k)), max(1, round(width / 2**k)), 3))
    pyramids.append(levels)
  return pyramids


def _padded(pyramids: list[list[tuple[int, int, int]]]) -> np.ndarray:
  depth = max((len(p) for p in pyramids), default=1)
  padded = [p + p[-1:] * (depth - len(p)) for p in pyramids]
  return np.asarray(padded, np.int64).reshape(-1, depth, 3)


def pyramid_shapes(images: Sequence[bytes], min_side: int = 32) -> np.ndarray:
  """int64 [n, levels, 3]: the (height, width, 3) of each image's pyramid levels.

  Level k is the image area-resized to 1/2^k of each side (rounded, at least 1
  pixel), down to a long side of `min_side`; an image with fewer levels than the
  deepest pyramid repeats its last one.
  """
  return _padded(_pyramids(images, min_side))


def kept(images: Sequence[bytes], image_size: int, max_source_side: float,
         decoded_cache_mb: float) -> 'Sequence[bytes] | DecodedImages':
  """The sources a pipeline for NxN inputs reads: shrunk to `max_source_side` x N on their
  long side (0: as they are), and decoded with pyramids if they fit in `decoded_cache_mb`
  (0: never)."""
  if max_source_side:  # decoding is the bulk of the work: no more pixels than needed
    images = shrink(images, max(int(max_source_side * image_size), 16))
  if decoded_cache_mb:  # and none at all if they fit in memory decoded
    images = DecodedImages.fit(images, decoded_cache_mb) or images
  return images


def table_rows(flat, start, width, y0, y1):
  """Rows y0:y1 of the image of `width` pixels that starts at `start` in a DecodedImages
  table held as a tf constant `flat`: uint8 [y1 - y0, width, 3]; only those rows are read."""
  tf = tensorflow()
  rows = flat[start + y0 * width * 3:start + y1 * width * 3]
  return tf.reshape(rows, tf.stack([y1 - y0, width, 3]))


@dataclasses.dataclass(frozen=True)
class DecodedImages:
  """RGB images decoded once, each with its pyramid (`pyramid_shapes`), in one flat uint8
  array. A pipeline reads a window from the smallest level that still has the
  detail it needs, so its cost follows the output size, not the source's.
  """
  pixels: np.ndarray    # uint8 (total,)
  offsets: np.ndarray   # int64 (n, levels): where level k of image i starts in `pixels`
  shapes: np.ndarray    # int64 (n, levels, 3): its (height, width, 3)

  def __len__(self) -> int:
    return len(self.offsets)

  def level(self, i: int, k: int = 0) -> np.ndarray:
    """Level k of image i, uint8 (height, width, 3)."""
    start, shape = self.offsets[i, k], self.shapes[i, k]
    return self.pixels[start:start + shape.prod()].reshape(shape)

  def __getitem__(self, i: int) -> np.ndarray:
    return self.level(i, 0)

  @classmethod
  def fit(cls, images: Sequence[bytes], budget_mb: float,
          min_side: int = 32) -> 'DecodedImages | None':
    """The decoded images and their pyramids if they take at most `budget_mb` MB, else None
    (nothing decoded)."""
    pyramids = _pyramids(images, min_side)
    shapes = _padded(pyramids)
    sizes = [sum(int(np.prod(s)) for s in p) for p in pyramids]
    if sum(sizes) > budget_mb * 2**20:
      return None
    pixels = np.empty(sum(sizes), np.uint8)
    offsets = np.zeros(shapes.shape[:2], np.int64)
    start = 0
    for i, (data, pyramid) in enumerate(zip(images, pyramids)):
      with Image.open(io.BytesIO(data)) as im:
        full = im.convert('RGB')
      if (full.height, full.width, 3) != pyramid[0]:
        raise SourceError(f'source image {i}: decodes to {(full.height, full.width, 3)}, its '
                          f'header says {pyramid[0]}')
      for k, shape in enumerate(pyramid):
        level = full if k == 0 else full.resize((shape[1], shape[0]), Image.Resampling.BOX)
        size = int(np.prod(shape))
        pixels[start:start + size] = np.asarray(level).ravel()
        offsets[i, k:] = start  # later levels of a short pyramid repeat this one
        start += size
    return cls(pixels, offsets, shapes)


def from_arrays(images: Sequence[np.ndarray]) -> list[bytes]:
  """Encodes uint8 RGB arrays losslessly (PNG): a source for tests and notebooks."""
  out = []
  for a in images:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(a, np.uint8)).save(buf, format='PNG')
    out.append(buf.getvalue())
  return out
