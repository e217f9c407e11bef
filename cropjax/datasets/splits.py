"""Deterministic, leak-free train/validation splits.

Near-duplicates must land in the same split, or validation measures memory:
photos taken in the same minute (a burst, the same scene) and photos whose
64-bit difference hashes (dHash) are within `max_distance` bits (re-encoded or
resized copies, a slightly recomposed shot) are joined into one group
(union-find). A group goes to validation when a stable hash of its canonical
member (the smallest key, e.g. content hash) falls below `validation_fraction`:
the same photos always give the same splits, whatever their order. When both
splits would otherwise be empty, the group with the lowest (highest) score
moves, so that a small dataset still has both.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

TRAIN, VALIDATION = 'train', 'validation'


def dhash(image: Image.Image, hash_size: int = 8) -> int:
  """The 64-bit difference hash: is each of 8x8 grey cells brighter than its right neighbour."""
  grey = image.convert('L').resize((hash_size + 1, hash_size), Image.Resampling.BOX)
  a = np.asarray(grey, dtype=np.int16)
  bits = (a[:, 1:] > a[:, :-1]).ravel()
  return int(''.join('1' if b else '0' for b in bits), 2)


def hamming(a: int, b: int) -> int:
  return (a ^ b).bit_count()


@dataclasses.dataclass(frozen=True)
class Item:
  """One photo as the splitter sees it."""
  key: str                      # unique and stable: the content hash
  dhash: int | None = None
  capture_time: str | None = None   # ISO 8601; its minute groups a burst


class _UnionFind:

  def __init__(self, n: int):
    self.parent = list(range(n))

  def find(self, i: int) -> int:
    while self.parent[i] != i:
      self.parent[i] = self.parent[self.parent[i]]
      i = self.parent[i]
    return i

  def union(self, i: int, j: int) -> None:
    a, b = self.find(i), self.find(j)
    if a != b:
      self.parent[max(a, b)] = min(a, b)


def _bands(max_distance: int, bits: int = 64) -> list[tuple[int, int]]:
  """max_distance + 1 bit ranges: hashes within max_distance agree on at least one (pigeonhole)."""
  k = max_distance + 1
  edges = [round(i * bits / k) for i in range(k + 1)]
  return [(edges[i], edges[i + 1]) for i in range(k) if edges[i + 1] > edges[i]]


def groups(items: Sequence[Item], max_distance: int = 6) -> list[int]:
  """The group of each item (the index of its group's first item)."""
  uf = _UnionFind(len(items))
  by_minute: dict[str, int] = {}
  for i, item in enumerate(items):
    if item.capture_time and len(item.capture_time) >= 16:
      uf.union(by_minute.setdefault(item.capture_time[:16], i), i)
  if max_distance >= 0:
    hashed = [(i, item.dhash) for i, item in enumerate(items) if item.dhash is not None]
    for lo, hi in _bands(max_distance):
      buckets: dict[int, list[int]] = collections.defaultdict(list)
      mask = (1 << (hi - lo)) - 1
      for i, h in hashed:
        buckets[(h >> lo) & mask].append(i)
      for members in buckets.values():
        for x in range(len(members)):
          for y in range(x + 1, len(members)):
            i, j = members[x], members[y]
            if uf.find(i) != uf.find(j) and hamming(items[i].dhash, items[j].dhash) <= max_distance:
              uf.union(i, j)
  return [uf.find(i) for i in range(len(items))]


def _score(key: str, salt: str) -> float:
  return int(hashlib.sha256(f'{salt}/{key}'.encode()).hexdigest()[:16], 16) / 2.0 ** 64


def assign(items: Iterable[Item], validation_fraction: float = 0.1, max_distance: int = 6,
           salt: str = 'cropjax') -> dict[str, str]:
  """key -> 'train' or 'validation', near-duplicates together, deterministic."""
  items = sorted(items, key=lambda it: it.key)
  if len({it.key for it in items}) != len(items):
    raise ValueError('split keys must be unique')
  if not 0.0 <= validation_fraction <= 1.0:
    raise ValueError(f'validation_fraction must be in [0, 1], got {validation_fraction}')
  labels = groups(items, max_distance)
  members: dict[int, list[str]] = collections.defaultdict(list)
  for item, label in zip(items, labels):
    members[label].append(item.key)
  scores = {label: _score(min(keys), salt) for label, keys in members.items()}
  split = {label: VALIDATION if s < validation_fraction else TRAIN for label, s in scores.items()}
  if len(split) >= 2 and 0.0 < validation_fraction < 1.0:
    if VALIDATION not in split.values():
      split[min(scores, key=scores.get)] = VALIDATION
    if TRAIN not in split.values():
      split[max(scores, key=scores.get)] = TRAIN
  return {key: split[label] for label, keys in members.items() for key in keys}
