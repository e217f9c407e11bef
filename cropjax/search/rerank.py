"""Candidates re-ranked by template matching on the index's grey thumbnails.

    order = rerank.order(index, query_grey, [k for k, _ in candidates])  # [(i, score)]

Retrieval by pooled region descriptors finds a crop's original among the first
hundred photos of a large library far more often than first (the descriptor
of a window only roughly fits a crop of any size and place). A crop is,
though, a resized piece of its original: the query brought down to a few
sizes and slid over a candidate's thumbnail (`cv2.matchTemplate`, zero-mean
normalised cross-correlation, the classical test for "is this a piece of
that", as the coarse search of `cropjax.align` does) peaks near 1 on the
original and lower on photos that merely look alike. The peak over sizes
orders the candidates, coarse to fine: all of them at half size and sizes 25 %
apart, the best ten again at full size and sizes 12 % apart (a sixth of the
time of matching all at full size, and the same order on the benchmark's
queries). The best of them go on to verification; nothing is accepted or
rejected here.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from cropjax import threads
from cropjax.matching import alignment
from cropjax.search import descriptors

# The query's width as a share of a candidate's: from a crop of 5 % of the area at an aspect
# ratio 1.4 times narrower than the photo's (0.19) to the whole photo, 12 % apart.
SCALES = tuple(np.geomspace(0.18, 1.0, 16))
MIN_SIDE = 6  # a smaller template says too little to rank by
MIN_SPREAD = 0.5  # nor does a flat one (standard deviation in grey levels)
FINE = 10  # candidates matched again at full size after all are matched at half size
COARSE_SCALES = SCALES[::2]  # sizes tried at half size: 25 % apart


def query_grey(image: Image.Image, side: int) -> np.ndarray:
  """float32 [h, w]: a query image in grey, its long side at most `side` (area-averaged):
  the templates are made from it."""
  grey = image.convert('L')
  if max(grey.size) > side:
    grey = grey.resize(descriptors.thumb_size(*grey.size, side), Image.Resampling.BOX)
  return np.asarray(grey, np.float32)


def template_scores(query: np.ndarray, canvases: np.ndarray,
                    cache: dict[tuple[int, int], np.ndarray | None] | None = None,
                    scales: Sequence[float] = SCALES) -> np.ndarray:
  """float32 [n]: for each canvas (grey [n, H, W], all of one size), the best zero-mean
  normalised cross-correlation of the query (grey [h, w]), brought to each of `scales` of the
  canvas's width at its own aspect ratio (or to the canvas's height, where that is the
  tighter), over every place in the canvas: near 1 where the query is a piece of it; -1 where
  no size fits or the query is flat. `cache`: templates by size, shared across calls.

  The canvases are stacked into one column, so each size is one `cv2.matchTemplate`; places
  that straddle two canvases are left out."""
  cache = {} if cache is None else cache
  n, ch, cw = canvases.shape
  qh, qw = query.shape
  column = np.ascontiguousarray(canvases, np.float32).reshape(n * ch, cw)
  best = np.full(n, -1.0, np.float32)
  seen = set()
  for s in scales:
    w = round(s * cw)
    h = round(w * qh / qw)
    if h > ch:
      h, w = ch, round(ch * qw / qh)
    if min(w, h) < MIN_SIDE or w > cw or (w, h) in seen:
      continue
    seen.add((w, h))
    if (w, h) not in cache:
      t = cv2.resize(query, (w, h), interpolation=cv2.INTER_AREA)
      cache[w, h] = t if alignment.spread(t) >= MIN_SPREAD else None
    if cache[w, h] is None:  # flat: OpenCV calls it a perfect match anywhere; it says nothing
      continue
    # In [-1, 1] (0 where the canvas is flat); fmax turns a NaN (from a NaN pixel) into -1.
    r = np.fmax(cv2.matchTemplate(column, cache[w, h], cv2.TM_CCOEFF_NORMED), -1.0)
    r = np.concatenate([r, np.full((h - 1, r.shape[1]), -1.0, np.float32)])
    best = np.maximum(best, r.reshape(n, ch, -1)[:, :ch - h + 1].max((1, 2)))
  return best


def template_score(query: np.ndarray, canvas: np.ndarray) -> float:
  """`template_scores` of one canvas (grey [H, W])."""
  return float(template_scores(query, canvas[None])[0])


def _halved(grey: np.ndarray) -> np.ndarray:
  """A grey image [..., h, w] at half its size, area-averaged."""
  h, w = grey.shape[-2:]
  size = (max(1, w // 2), max(1, h // 2))
  if grey.ndim == 2:
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
  return np.stack([cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in grey])


def thumb_extent(index, k: int) -> tuple[int, int]:
  """(width, height) of the part of photo k's stored thumbnail that is the photo."""
  p = index.photos[k]
  return descriptors.thumb_size(p.width, p.height, index.thumbs.shape[-1])


def photo_grey(index, k: int) -> np.ndarray:
  """float32 [h, w]: photo k's thumbnail, as a query (a library searched against itself)."""
  w, h = thumb_extent(index, k)
  return index.thumbs[k, :h, :w].astype(np.float32)


def scores(index, query: np.ndarray, photos: Sequence[int], halved: bool = False) -> np.ndarray:
  """float32 [len(photos)]: `template_scores` of the query on each photo's thumbnail (the
  thumbnails of one size matched together, in up to one part a core, on threads: OpenCV's
  matchTemplate runs on one); `halved`: query and thumbnails at half size, `COARSE_SCALES`
  rather than `SCALES`."""
  groups: dict[tuple[int, int], list[int]] = {}
  for i, k in enumerate(photos):
    groups.setdefault(thumb_extent(index, k), []).append(i)
  query = _halved(query) if halved else query
  cache: dict[tuple[int, int], np.ndarray | None] = {}
  parts = max(1, min(threads.workers(), len(photos) // MIN_PART))
  jobs = [(extent, part) for extent, members in groups.items()
          for part in np.array_split(members, min(parts, len(members)))]

  def match(job):
    (w, h), members = job
    canvases = index.thumbs[[photos[i] for i in members], :h, :w].astype(np.float32)
    if halved:
      return template_scores(query, _halved(canvases), cache, COARSE_SCALES)
    return template_scores(query, canvases, cache)
  out = np.full(len(photos), -1.0, np.float32)
  found = threads.map(match, jobs)
  for (_, members), got in zip(jobs, found):
    out[members] = got
  return out


MIN_PART = 4  # thumbnails a thread matches at least


def order(index, query: np.ndarray, photos: Sequence[int]) -> list[tuple[int, float]]:
  """(position into `photos`, template score) pairs, best first: all of them matched at half
  size, the `FINE` best of those again at the thumbnails' full size and put first in that order
  with those scores (ties keep the order they came in), then the rest with their half-size
  scores."""
  coarse = scores(index, query, photos, halved=True)
  ranked = sorted(range(len(photos)), key=lambda i: -coarse[i])
  best = ranked[:FINE]
  fine = scores(index, query, [photos[i] for i in best])
  firsts = sorted(range(len(best)), key=lambda j: -fine[j])
  return ([(best[j], float(fine[j])) for j in firsts]
          + [(i, float(coarse[i])) for i in ranked[FINE:]])
