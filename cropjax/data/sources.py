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


def finish(ds, deterministic: bool):
  """The options every cropjax pipeline ends with, and its prefetch.

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


@dataclasses.dataclass(frozen=True)
class DecodedImages:
  """RGB images decoded once and kept as one flat uint8 array (a tf.data-friendly table)."""
  pixels: np.ndarray    # uint8 (total,)
  offsets: np.ndarray   # int64 (n,): where image i starts in `pixels`
  shapes: np.ndarray    # int64 (n, 3): its (height, width, 3)

  def __len__(self) -> int:
    return len(self.offsets)

  def __getitem__(self, i: int) -> np.ndarray:
    return self.pixels[self.offsets[i]:self.offsets[i] + self.shapes[i].prod()].reshape(
        self.shapes[i])

  @classmethod
  def fit(cls, images: Sequence[bytes], budget_mb: float) -> 'DecodedImages | None':
    """The decoded images if they take at most `budget_mb` MB, else None (nothing decoded)."""
    shapes = []
    for data in images:
      with Image.open(io.BytesIO(data)) as im:  # reads the header only
        shapes.append((im.height, im.width, 3))
    shapes = np.asarray(shapes, np.int64).reshape(-1, 3)
    sizes = shapes.prod(axis=1)
    if sizes.sum() > budget_mb * 2**20:
      return None
    pixels = np.empty(int(sizes.sum()), np.uint8)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    for i, (data, start, size) in enumerate(zip(images, offsets, sizes)):
      with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert('RGB'))
      if arr.shape != tuple(shapes[i]):
        raise SourceError(f'source image {i}: decodes to {arr.shape}, its header says '
                          f'{tuple(shapes[i])}')
      pixels[start:start + size] = arr.ravel()
    return cls(pixels, offsets, shapes)


def from_arrays(images: Sequence[np.ndarray]) -> list[bytes]:
  """Encodes uint8 RGB arrays losslessly (PNG): a source for tests and notebooks."""
  out = []
  for a in images:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(a, np.uint8)).save(buf, format='PNG')
    out.append(buf.getvalue())
  return out
