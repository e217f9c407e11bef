"""Region descriptors of library photos and query descriptors, from a matching model's encoder.

A library photo is encoded once at `LIBRARY_SCALE` times the model's input
size (its long side; kept at its aspect ratio), and its features are pooled
over windows of several sizes (`FRACTIONS` of each side, overlapping by half)
into unit-length descriptors: a crop of a quarter of the side is then about
the model's own input size in those features, as a query is when encoded at
the input size. A query is encoded whole at each of `QUERY_SCALES` times the
input size (a crop of any size meets some window near its own scale), and the
same descriptors are kept for every library photo, so a library can be
searched against itself without encoding anything again. Each photo's grey
thumbnail (long side `THUMB_SIDE`) is kept as well, for re-ranking candidates
by template matching (`cropjax.search.rerank`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar

import numpy as np
from PIL import Image

from cropjax import metadata
from cropjax import threads

FRACTIONS = (1.0, 0.75, 0.5, 0.35, 0.25)
CELLS = 1  # each descriptor: the window's features pooled over CELLS x CELLS cells, concatenated
LIBRARY_SCALE = 4
QUERY_SCALES = (1, 2, 4)
THUMB_SIDE = 96  # each photo's grey thumbnail: its long side, in pixels

T = TypeVar('T')


def settings(model) -> dict[str, Any]:
  """What an index's descriptors depend on besides the weights (kept in its manifest)."""
  if not getattr(model, 'matching', False):
    raise ValueError(f'{model.source}: library search needs a siamese matching model '
                     "(config.model.pair_head='match', as configs/demo.py trains)")
  n = model.image_size
  return {'image_size': n, 'keep_aspect': bool(model.keep_aspect),
          'dim': CELLS * CELLS * int(model.variables['params']['match_proj']['kernel'].shape[-1]),
          'cells': CELLS,
          'library_side': LIBRARY_SCALE * n, 'query_sides': [s * n for s in QUERY_SCALES],
          'fractions': list(FRACTIONS), 'thumb_side': THUMB_SIDE}


def fingerprint(model) -> str:
  """SHA-256 of the model's weights and statistics (every leaf, by path)."""
  import jax
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(model.variables)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    a = np.asarray(leaf)
    h.update(jax.tree_util.keystr(path).encode())
    h.update(str(a.dtype).encode() + str(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def read_photo(path: str | Path, side: int) -> tuple[Image.Image, tuple[int, int]]:
  """(an upright RGB photo for encoding at `side` pixels, the file's full upright (width,
  height)): JPEGs decoded at a reduced scale where that still leaves at least `side` pixels
  (draft mode), as the annotator reads them; camera raw files through rawpy as `cropjax.predict`
  reads them (their size the decoded picture's, which its boxes refer to). Raises on
  unreadable files, and on photo formats Pillow cannot read (HEIF, ...) with what they are."""
  from cropjax import inference
  from cropjax.annotate import _to_rgb
  suffix = Path(path).suffix.lower()
  if suffix in metadata.RAW_EXTENSIONS:  # rawpy is optional: without it, an error that says so
    image, (w, h) = inference._load(path, str(path))
    inference.check_comparable((w, h))
    return image, (w, h)
  try:
    opened = Image.open(path)
  except Image.UnidentifiedImageError:
    if suffix in metadata.OTHER_PHOTO_EXTENSIONS:
      raise ValueError(f'unsupported format ({suffix} files cannot be read here)') from None
    raise
  with opened as im:
    w, h = im.size
    if im.getexif().get(0x0112, 1) in metadata.TRANSPOSING:  # turned a quarter: upright is h x w
      w, h = h, w
    if im.format == 'JPEG':
      im.draft('RGB', (side, side))
    im.load()
    upright = inference._upright(im)
  image = _to_rgb(upright)
  inference.check_comparable((w, h))  # (draft mode never decodes a side to 0)
  return image, (w, h)


def unreadable(path: str | Path, error: Exception) -> str:
  """Why `path` was skipped, for the list of skipped files beside it: the error's type and
  message, without the path again (PIL's "cannot identify image file '<path>'")."""
  text = str(error)
  for form in (repr(str(path)), str(path)):
    text = text.replace(form, '')
  return f'{type(error).__name__}: {text.strip(" :")}'.rstrip(' :')


def read_photos(paths: Sequence[Path], side: int
                ) -> tuple[list[tuple[Image.Image, tuple[int, int]] | None], list[tuple[str, str]]]:
  """Each path's `read_photo` at `side` (None where it cannot be read) and the (path, why) of
  those."""
  def read(p: Path) -> tuple[Image.Image, tuple[int, int]] | str:
    try:
      return read_photo(p, side)
    except Exception as e:  # noqa: BLE001 -- any decoder failure: the file is skipped and listed
      return unreadable(p, e)
  photos, failures = [], []
  for p, r in zip(paths, threads.map(read, paths)):  # decoders release the GIL: on every core
    if isinstance(r, str):
      failures.append((str(p), r))
      r = None
    photos.append(r)
  return photos, failures


def windows(fractions: Sequence[float] = FRACTIONS) -> np.ndarray:
  """[R, 4] boxes (x0, y0, x1, y1, fractions of the photo): for each fraction f, windows f of
  each side placed every f / 2 (and flush with the far edge)."""
  boxes = []
  for f in fractions:
    n = int(np.ceil((1 - f) / (f / 2) - 1e-9)) + 1
    starts = np.linspace(0.0, 1.0 - f, n)
    boxes += [(x, y, x + f, y + f) for y in starts for x in starts]
  return np.array(boxes, np.float32)


def _pooled(features: np.ndarray, extents: np.ndarray, boxes: np.ndarray,
            cells: int = CELLS) -> np.ndarray:
  """features [B, h, w, D], extents [B, 2], boxes [R, 4] (fractions of each image) -> the mean
  features over each of a box's cells x cells cells, each cell unit-length, concatenated and
  scaled to unit length [B, R, cells * cells * D] (so a cosine is the mean over the cells)."""
  from cropjax import heads
  b, h, w, dim = features.shape
  wy = heads.pool_weights(boxes[:, [1, 3]], extents[:, 1], h, cells)  # [B, R, cells, h]
  wx = heads.pool_weights(boxes[:, [0, 2]], extents[:, 0], w, cells)  # [B, R, cells, w]
  # d[b, r, k, l] = wy[b, r, k] @ features[b] @ wx[b, r, l], as two batched matrix products
  # (BLAS; numpy's einsum of the three loops in C was a seventh of an index build).
  rows = np.matmul(wy.reshape(b, -1, h), features.astype(np.float32).reshape(b, h, w * dim))
  rows = rows.reshape(b, len(boxes), cells, w, dim).transpose(0, 1, 2, 4, 3)  # [B, R, K, D, w]
  d = np.matmul(rows, np.swapaxes(wx, 2, 3)[:, :, None]).transpose(0, 1, 2, 4, 3)
  d /= np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-6)
  return d.reshape(b, len(boxes), -1) / cells


def _encode(images: Sequence[Image.Image], model, side: int) -> tuple[np.ndarray, np.ndarray]:
  from cropjax import inference
  sides = threads.map(lambda im: inference._square(model, im, side), images)
  features = model.encode(np.stack([p for p, _ in sides]), batch_size=16)
  return features, np.array([e for _, e in sides], np.float32)


def query_descriptors(images: Sequence[Image.Image], model, settings: dict[str, Any],
                      known: dict[int, np.ndarray] | None = None) -> np.ndarray:
  """[n, S, D]: each image pooled whole at each of the query sides (`known`: side -> [n, D]
  already computed)."""
  whole = np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)
  known = known or {}
  out = [known[side] if side in known
         else _pooled(*_encode(images, model, side), whole, settings['cells'])[:, 0]
         for side in settings['query_sides']]
  return np.stack(out, 1)


def thumb_size(width: int, height: int, side: int) -> tuple[int, int]:
  """(width, height) of a photo's thumbnail: its long side `side`, its aspect ratio kept."""
  scale = side / max(width, height)
  return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail(image: Image.Image, side: int, size: tuple[int, int] | None = None) -> np.ndarray:
  """uint8 [side, side]: the image in grey, its long side brought to `side` (area-averaged),
  at the top left; zero beyond. The part that is the photo is `thumb_size` of `size`, the
  photo's full (width, height) where the image was decoded smaller (draft mode), so that it is
  the part re-ranking reads (`rerank.thumb_extent`) to the pixel."""
  w, h = thumb_size(*(size or image.size), side)
  out = np.zeros((side, side), np.uint8)
  out[:h, :w] = np.asarray(image.convert('L').resize((w, h), Image.Resampling.BOX))
  return out


def describe_read(items: Sequence[T], photos: Sequence[tuple[Image.Image, tuple[int, int]] | None],
                  model, settings: dict[str, Any]
                  ) -> Iterator[tuple[T, tuple[int, int], tuple[np.ndarray, ...]]]:
  """`describe` over the photos `read_photos` could read: (item, the photo's full upright
  (width, height), `describe`'s arrays) for each of `items` whose photo is not None, in order."""
  ok = [r for r in photos if r is not None]
  encoded = describe([r[0] for r in ok], model, settings, [r[1] for r in ok])
  for item, read in zip(items, photos):
    if read is not None:
      yield item, read[1], next(encoded)


def describe(images: Sequence[Image.Image], model, settings: dict[str, Any],
             sizes: Sequence[tuple[int, int]] | None = None
             ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
  """For each library photo: (region descriptors [R, D], their boxes [R, 4], query
  descriptors [S, D], grey thumbnail [T, T] uint8); `sizes`: the photos' full upright
  (width, height) where they were read smaller (`read_photo`), for the thumbnails."""
  if not images:
    return
  boxes = windows(settings['fractions'])
  features, extents = _encode(images, model, settings['library_side'])
  regions = _pooled(features, extents, boxes, settings['cells'])
  # The first window is the whole photo: its query descriptor at the library's side.
  queries = query_descriptors(images, model, settings, {settings['library_side']: regions[:, 0]})
  thumbs = threads.map(lambda i: thumbnail(images[i], settings['thumb_side'],
                                           sizes[i] if sizes else None), range(len(images)))
  for i in range(len(images)):
    yield regions[i], boxes, queries[i], thumbs[i]
