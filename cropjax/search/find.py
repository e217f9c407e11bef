"""Which library photo is each query cut from, and where: retrieval, then verification.

For each query the index's region descriptors are compared with the query's
descriptors (cosine after PCA whitening learned from the index itself, less half
each region's hubness, `Index.hubness`: CSLS, so regions that resemble every
photo stop crowding out the original; exactly, by a
matrix product over the region vectors held in memory, or through faiss's
HNSW graph for large indexes; see `neighbours`), each photo scoring its best
region; the `RERANK` best photos
are ordered by how well the query, brought to a few sizes, matches a piece of
each one's thumbnail (`rerank`: normalised cross-correlation), and the `top`
first go through `cropjax.predict_pairs` (the matching model, alignment both
ways and the verdict), and only pairs the verdict accepts are reported, with the box
alignment found, in the original's upright pixels. A query's best-ranked candidate
is verified first; where it is the query's original, the others are verified only
where they match the query about as well by template (another copy of the original,
`COPY_MARGIN`), which spares most of the time of a query whose original is in the library.
A library photo that is a copy of the query's whole picture (`inference.whole_frame`: the
query resized or re-encoded) is reported whichever has more pixels, and does not count as
the query's original for that: the photo it was cut from may be another.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from cropjax.search import descriptors
from cropjax.search import neighbours
from cropjax.search import rerank as rerank_lib
from cropjax.search.index import Index

# Photos re-ranked by template matching per query (descriptors' best first): the most that keeps
# a query, reading and encoding included, under 100 ms at 10,000 photos on 2 cores. Chosen on
# development crops of photos that are not the yardstick's (recall of 5-10 % crops still rising
# from 100 to 400: docs/search.md, ninth session).
RERANK = 300


@dataclasses.dataclass(frozen=True)
class Match:
  """A crop and the photo it was cut from."""
  query: str                    # the crop (a query, or a library photo)
  original: str                 # the library photo it was cut from
  box: tuple[float, float, float, float]   # x0, y0, x1, y1 in the original's upright pixels
  box_fraction: tuple[float, float, float, float]
  angle: float                  # degrees the crop is turned in the original (Lightroom's sign)
  score: float                  # the verdict's probability
  alignment_score: float | None
  similarity: float             # the retrieval's cosine (what put it among the candidates)
  original_size: tuple[int, int]

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def similarities(index: Index, queries: np.ndarray, chunk: int = 65536,
                 held: bool = False) -> np.ndarray:
  """[n, P]: for queries [n, S, D], each photo's best region score over the query's scales:
  the whitened cosine less HUB_WEIGHT x the region's hubness (`Index.search_vectors`);
  `held`: the region vectors from `Index.search_matrix` (made once, kept), else made
  chunk by chunk."""
  n, photos = len(queries), len(index.photos)
  best = np.full((photos, n), -np.inf, np.float32)
  if not photos or not n:
    return best.T
  scales = queries.shape[1]
  # Scale-major [S * n, D + 1]: a chunk's scores [rows, S * n] hold each scale's n columns
  # together, so the best over scales is S - 1 elementwise maxima of contiguous blocks (numpy's
  # max over a trailing axis of 3 took 8x the matrix product: 32 of 36 ms a query).
  q = index.query_vectors(np.swapaxes(queries, 0, 1).reshape(-1, queries.shape[-1]))
  owner = index.regions[:, 0].astype(np.int64)
  held_vectors = index.search_matrix if held else None
  for start in range(0, len(index.descriptors), chunk):
    d = (held_vectors[start:start + chunk] if held_vectors is not None
         else index.search_vectors(start, start + chunk))
    scores = d @ q.T                                                  # [rows, S * n]
    s = scores[:, :n].copy()                                          # [rows, n]
    for k in range(1, scales):
      np.maximum(s, scores[:, k * n:(k + 1) * n], out=s)
    o = owner[start:start + chunk]
    firsts = np.r_[0, np.flatnonzero(np.diff(o)) + 1]                # rows of a photo are together
    per = np.maximum.reduceat(s, firsts, axis=0)                     # [photos in chunk, n]
    np.maximum.at(best, o[firsts], per)
  return best.T


def candidates(index: Index, queries: np.ndarray, top: int,
               exclude: Sequence[int | None] | None = None,
               search: str = 'auto') -> list[list[tuple[int, float]]]:
  """The `top` photos (index, cosine) for each query, best first; `exclude[i]`: a photo to
  leave out for query i (itself, when the library is searched against itself). `search`:
  'flat' or 'numpy' (both exact: the same photos) or faiss's 'hnsw' (approximate), 'auto'
  by whether faiss is installed, by size and by the number of queries (`neighbours.choose`)."""
  kind = neighbours.choose(len(index.descriptors), search, len(queries))
  if kind == 'hnsw' and len(index.descriptors) and len(queries):
    return _nearest_photos(index, queries, top, exclude, kind)
  sims = similarities(index, queries, held=kind == 'flat')
  if exclude is not None:
    for i, k in enumerate(exclude):
      if k is not None:
        sims[i, k] = -np.inf
  out = []
  for row in sims:
    best = np.argpartition(-row, top - 1)[:top] if 0 < top < len(row) else np.arange(len(row))
    order = best[np.lexsort((best, -row[best]))][:top]           # best first; ties: lower photo
    out.append([(int(k), float(row[k])) for k in order if np.isfinite(row[k])])
  return out


def _nearest_photos(index: Index, queries: np.ndarray, top: int,
                    exclude: Sequence[int | None] | None, kind: str
                    ) -> list[list[tuple[int, float]]]:
  """`candidates` through a faiss index (the graph; scripts/bench.py also times the flat
  index this way): each query descriptor's nearest regions, each photo scoring its best.
  Asking for (top + 1) x the most regions a photo has makes the flat index exact: a photo
  among a query's `top` best (by its best scale) is among the `top` best of that scale,
  whose best regions all lie within that many regions of its ranking."""
  n, scales, dim = queries.shape
  per_photo = max(p.rows[1] - p.rows[0] for p in index.photos)
  scores, rows = index.neighbours(kind).search(index.query_vectors(queries.reshape(-1, dim)),
                                               (top + 1) * per_photo)
  scores, rows = scores.reshape(n, -1), rows.reshape(n, -1)
  owner = index.regions[:, 0].astype(np.int64)
  out = []
  for i in range(n):
    found = rows[i] >= 0
    s, o = scores[i][found], owner[rows[i][found]]
    if exclude is not None and exclude[i] is not None:
      s, o = s[o != exclude[i]], o[o != exclude[i]]
    order = np.lexsort((o, -s))                        # best first; ties: the lower photo
    _, first = np.unique(o[order], return_index=True)
    best = np.sort(first)[:top]                        # each photo at its best region
    out.append([(int(o[order][j]), float(s[order][j])) for j in best])
  return out


def shortlist(index: Index, queries: np.ndarray, greys: Sequence[np.ndarray | None], top: int,
              rerank: int = RERANK, exclude: Sequence[int | None] | None = None,
              search: str = 'auto', with_template: bool = False) -> list[list[tuple]]:
  """The `top` photos (index, cosine) to verify for each query (descriptors [n, S, D], grey
  image `rerank.query_grey`, or None for library photo i, whose thumbnail stands in): the
  `rerank` best by descriptor (`candidates`), ordered by template matching on their
  thumbnails (`rerank.order`; `rerank=0`: by descriptor alone), the descriptors' own first
  kept among them (`KEEP_DESCRIPTORS_FIRST`). `with_template`: (index, cosine, template
  score) triples, the score NaN where not re-ranked."""
  found = candidates(index, queries, max(top, rerank), exclude, search)
  out = []
  for i, cands in enumerate(found):
    if rerank:
      grey = rerank_lib.photo_grey(index, i) if greys[i] is None else greys[i]
      ranked = [(*cands[j], t) for j, t in rerank_lib.order(index, grey, [k for k, _ in cands])]
    else:
      ranked = [(k, sim, float('nan')) for k, sim in cands]
    chosen = ranked[:top]
    if KEEP_DESCRIPTORS_FIRST and top > 1 and cands and cands[0][0] not in [c[0] for c in chosen]:
      chosen = chosen[:top - 1] + [next(c for c in ranked if c[0] == cands[0][0])]
    out.append([c if with_template else c[:2] for c in chosen])
  return out


# The descriptors' first candidate stays among those a query verifies (in the last place) where
# the re-ranking put it lower: the re-ranking's templates are unturned, so a straightened crop's
# original can fall out of its first places while the region descriptors still rank it first.
# Chosen on development queries (`.dev/turnrank39.py`: crops of the 23 development wallpapers,
# none of them the yardstick's, among 1,000 distractors; docs/search.md, "Photos no session had
# used, as a library"): in the top 5, straightened crops 0.957 -> 1.000, plain crops 0.971 ->
# 0.986, small ones 0.986 either way; no more candidates verified, no more re-ranking.
KEEP_DESCRIPTORS_FIRST = True


def find(index: Index, queries: Sequence[str | Path] | None = None, *, model, top: int = 5,
         rerank: int = RERANK, progress: Callable[[int, int], None] | None = None,
         batch_size: int = 32, search: str = 'auto', verify_all: bool = False
         ) -> tuple[list[Match], list[tuple[str, str]]]:
  """(matches, skipped queries as (path, why)): each query's verified originals in the index, or
  with `queries=None` the crop relations inside the library itself (each pair once). The
  `rerank` best photos by descriptor (`candidates`; `search`: its nearest-neighbour search)
  are ordered by template matching on their thumbnails (`cropjax.search.rerank`; 0: not),
  and the `top` first are verified: a query's best-ranked candidate first, then the others
  where it is not the query's original, or where they match the query about as well
  (`COPY_MARGIN`: another copy of the original); `verify_all` (and a library searched against
  itself): all of them at once. A library photo that is a copy of a query's whole picture is
  reported whichever has more pixels, and is not taken for the query's original; in a library
  searched against itself one capture's files (a raw file and its JPEG) are not compared."""
  settings = index.settings
  skipped: list[tuple[str, str]] = []
  if queries is None:
    names = [p.path for p in index.photos]
    query_desc = index.queries.astype(np.float32)
    greys = [None] * len(names)  # each photo's own thumbnail, when it is needed
    exclude: list[int | None] = list(range(len(names)))
  else:
    names, images = [], []
    for q in queries:
      try:
        images.append(descriptors.read_photo(q, max(settings['query_sides']))[0])
        names.append(str(q))
      except Exception as e:  # noqa: BLE001 -- unreadable query: skipped and listed
        skipped.append((str(q), descriptors.unreadable(q, e)))
    greys = [rerank_lib.query_grey(im, 2 * settings['thumb_side']) for im in images]
    query_desc = (descriptors.query_descriptors(images, model, settings) if images
                  else np.zeros((0, len(settings['query_sides']), settings['dim']), np.float32))
    exclude = [None] * len(names)
  found = shortlist(index, query_desc, greys, top, rerank, exclude, search, with_template=True)
  jobs, seen = [], set()
  for i, cands in enumerate(found):
    for rank, (k, sim, template) in enumerate(cands):
      photo = index.photos[k]
      pair = frozenset((names[i], photo.path))
      if queries is None and (pair in seen or _siblings(names[i], photo.path)):
        continue
      seen.add(pair)
      jobs.append(_Job(names[i], photo.path, sim, template, i, rank, (photo.width, photo.height)))
  verifier = _Verifier(model, batch_size, progress, len(jobs))
  if queries is None or verify_all:
    matches = verifier(jobs, library=queries is None)
  else:
    matches = verifier([j for j in jobs if j.rank == 0])
    firsts = {j.query_number: j.template for j in jobs if j.rank == 0}
    rest = [j for j in jobs if j.rank and _worth_verifying(
        j, firsts[j.query_number], j.query_number in verifier.found)]
    verifier.total = len(firsts) + len(rest)
    matches += verifier(rest)
  matches.sort(key=lambda m: -m.score)
  return matches, skipped


# Once a query's best-ranked candidate is verified as its original, another candidate is verified
# only where its template score (`rerank`) is within this of that one's: a second copy of the
# original (an export at another size) matches the query about as well. On development queries
# (`.dev/cascade27.py`: 8 photos exported again at 0.6x and quality 80 in a library of 1,079,
# none of them the yardstick's) the two copies' scores were within 0.005 for each of the 24
# queries cut from them, and every query reported what verifying all its candidates did, both
# copies included, less one wrong pair (docs/search.md, "A query's best candidate first").
COPY_MARGIN = 0.05


def _siblings(a: str, b: str) -> bool:
  """Whether two library files are one capture's (IMG_1.CR2 and IMG_1.JPG: the same folder and
  name, another format): the same picture by construction, so a library searched against
  itself does not report them as a crop pair."""
  pa, pb = Path(a), Path(b)
  return pa.parent == pb.parent and pa.stem.lower() == pb.stem.lower()


class _Job(NamedTuple):
  query: str
  photo: str
  similarity: float
  template: float       # the re-ranking's template score (NaN where not re-ranked)
  query_number: int
  rank: int
  size: tuple[int, int]  # the library photo's upright (width, height)


def _worth_verifying(job: _Job, first: float, first_is_original: bool) -> bool:
  """Whether a lower-ranked candidate still needs verifying after the query's first one (its
  template score `first`) was, or was not, verified as the query's original."""
  return (not first_is_original or not np.isfinite(first) or not np.isfinite(job.template)
          or job.template >= first - COPY_MARGIN)


class _Verifier:
  """Pairs (query, library photo) through `cropjax.predict_pairs`, `batch_size` at a time, into
  `Match`es; `progress(done, total)` after each batch."""

  def __init__(self, model, batch_size: int, progress: Callable[[int, int], None] | None,
               total: int):
    self.model, self.batch_size, self.progress = model, batch_size, progress
    self.done, self.total = 0, total
    self.found: set[int] = set()  # the query numbers of the jobs that gave a match

  def __call__(self, jobs: Sequence[_Job], library: bool = False) -> list[Match]:
    """Matches among `jobs`; `library`: either may be the crop of the other (else only the
    query a crop of the library photo)."""
    from cropjax import inference
    matches: list[Match] = []
    for start in range(0, len(jobs), self.batch_size):
      chunk = jobs[start:start + self.batch_size]
      results = inference.predict_pairs([(j.query, j.photo) for j in chunk], model=self.model,
                                        batch_size=self.batch_size)
      for j, r in zip(chunk, results):
        if not r.is_crop:
          continue
        q, o = j.query, j.photo
        box, fraction, size, angle = r.box, r.box_fraction, r.original_size, r.angle
        copy = inference.whole_frame(fraction)
        if r.original == 'a' and library:  # the library photo j.photo is the crop
          q, o = o, q
        elif r.original == 'a':  # the query holds the library photo
          if not copy:
            continue            # a query that is the original of a library photo: not asked for
          # a copy of the query's whole picture, with fewer pixels: given as its whole frame
          box, fraction, size = (0.0, 0.0, *map(float, j.size)), (0.0, 0.0, 1.0, 1.0), j.size
          angle = -angle + 0.0
        if not copy:  # a copy of the query's own frame: its original may be another photo
          self.found.add(j.query_number)
        matches.append(Match(query=q, original=o, box=box, box_fraction=fraction,
                             angle=angle, score=r.probability,
                             alignment_score=r.alignment_score, similarity=j.similarity,
                             original_size=size))
      self.done += len(chunk)
      if self.progress:
        self.progress(self.done, max(self.total, self.done))
    return matches
