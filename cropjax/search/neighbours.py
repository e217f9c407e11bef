"""Nearest regions for retrieval: an exact matrix product, or faiss's graph for large indexes.

    kind = neighbours.choose(len(index.descriptors))      # 'numpy', 'flat' or 'hnsw'
    photos = find.candidates(index, queries, top, search=kind)

The index's whitened, unit-length region descriptors, each with its hubness
appended (`Index.search_vectors`), are scored by inner product with the
query's (cosine less half the hubness: CSLS) and each photo keeps its best
region. 'flat' (exact) holds those vectors in memory after the first search
(`Index.search_matrix`, as faiss's flat index would) and scores them all by
one matrix product, a photo's best region by a maximum over its rows: the
cost does not grow with the number of photos asked for (faiss's
`IndexFlatIP` must be asked for (top + 1) x 88 regions a query to be exact,
and its top-k selection over that many costs more than the product: 26 ms a
query for the best 100 photos of 10,000, 84 ms for 300; see
docs/search.md). 'numpy' is the same search making the vectors chunk by chunk
on every call (no memory held). 'hnsw' (`pip install -e '.[faiss]'`) is faiss's
`IndexHNSWFlat` (a graph: no training, approximate, recall@10 against the
exact search above 0.95 on photo-like sets, see tests/test_search_neighbours.py),
chosen above `APPROXIMATE_FROM` regions when there are enough queries to pay for
building it (about 100 s a million regions on 2 cores); without faiss the
exact search serves there too, with one line on stderr. The graph is built
in memory the first time an open index is searched and kept with it, never
written to disk.
"""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np

APPROXIMATE_FROM = 1_000_000  # regions (about 11,000 photos of 88 windows): a graph from here
# ... for this many queries at least: building the graph (about 100 us a region on 2 cores)
# costs as much as searching the flat index (about 0.15 us a region) for about 700 queries.
GRAPH_PAYS_FROM = 700
SLOW_WITHOUT_FAISS = APPROXIMATE_FROM  # regions from which the exact search is worth a word
HNSW_M = 32                   # graph neighbours a node (faiss's M)
HNSW_EF_SEARCH = 128          # candidates kept while searching the graph (at least k)
# Fewer query vectors than this are searched on one thread: OpenMP's threads waking for a
# few vectors, between numpy's own, cost more than the search (2-core host: one query at
# 100,000 regions 16-24 ms on 2 threads, 5-7 ms on one; batches of 100 the same either way).
SINGLE_THREAD_BELOW = 64
KINDS = ('auto', 'numpy', 'flat', 'hnsw')
_told: list[bool] = []


def available() -> bool:
  """Whether faiss can be imported."""
  try:
    import faiss  # noqa: F401
  except ImportError:
    return False
  return True


def choose(regions: int, kind: str = 'auto', queries: int | None = None) -> str:
  """The search for an index of `regions` region descriptors: 'flat' (exact, the vectors held),
  'numpy' (exact, the vectors made on each search) or 'hnsw' (faiss, approximate); `kind`
  'auto' picks 'hnsw' by size and, given the number of `queries`, whether building the graph
  pays, where faiss is installed, and 'flat' otherwise; anything else is taken as asked
  (ValueError when faiss is asked for and missing)."""
  if kind not in KINDS:
    raise ValueError(f'unknown nearest-neighbour search {kind!r}; choose from {list(KINDS)}')
  if kind in ('numpy', 'flat'):
    return kind
  if not available():
    if kind != 'auto':
      raise ValueError(f"the {kind!r} search needs faiss: pip install -e '.[faiss]' "
                       '(or choose flat)')
    if regions >= SLOW_WITHOUT_FAISS and not _told:
      _told.append(True)
      print(f'cropjax.search: faiss is not installed; exact search over {regions:,} '
            "regions (pip install -e '.[faiss]' for faster retrieval in large libraries)",
            file=sys.stderr)
    return 'flat'
  large = regions >= APPROXIMATE_FROM and (queries is None or queries >= GRAPH_PAYS_FROM)
  return 'hnsw' if large else 'flat'


class Neighbours:
  """A faiss index ('flat' or 'hnsw') over vectors (rows in the order added): the graph for
  retrieval in large indexes, the flat index for the hubness's reference search."""

  def __init__(self, kind: str, dim: int):
    import faiss
    if kind == 'flat':
      self.faiss = faiss.IndexFlatIP(dim)
    elif kind == 'hnsw':
      self.faiss = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
      self.faiss.hnsw.efSearch = HNSW_EF_SEARCH
    else:
      raise ValueError(f'Neighbours: kind {kind!r} is not a faiss index (flat or hnsw)')
    self.kind = kind

  @classmethod
  def build(cls, kind: str, rows: int, dim: int, block: Callable[[int, int], np.ndarray],
            chunk: int = 65536) -> Neighbours:
    """From `rows` vectors, given as `block(start, stop)` -> float32 [stop - start, dim]."""
    out = cls(kind, dim)
    for start in range(0, rows, chunk):
      out.faiss.add(np.ascontiguousarray(block(start, min(start + chunk, rows)), np.float32))
    return out

  def __len__(self) -> int:
    return int(self.faiss.ntotal)

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosines [m, k] float32, rows [m, k] int64) of each query's k nearest rows, best first;
    rows -1 (cosine -inf) where fewer were found."""
    import faiss
    k = max(1, min(k, len(self)))
    graph = self.kind == 'hnsw'
    ef, threads = (self.faiss.hnsw.efSearch if graph else 0), faiss.omp_get_max_threads()
    if graph:
      self.faiss.hnsw.efSearch = max(ef, k)
    if len(queries) < SINGLE_THREAD_BELOW:
      faiss.omp_set_num_threads(1)
    try:
      scores, rows = self.faiss.search(np.ascontiguousarray(queries, np.float32), k)
    finally:
      faiss.omp_set_num_threads(threads)
      if graph:
        self.faiss.hnsw.efSearch = ef
    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
    return scores, rows.astype(np.int64)

  @property
  def nbytes(self) -> int:
    """The faiss index's size serialised (about its memory)."""
    import faiss
    return int(faiss.serialize_index(self.faiss).nbytes)
