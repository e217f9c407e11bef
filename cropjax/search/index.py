"""The on-disk index of a library: region descriptors of every photo, kept up to date.

    index = update_index(['~/Pictures'], 'pictures.cropjax-index', model=model)
    index.photos[i].path, index.regions, index.descriptors, index.queries

A folder holding `manifest.json` (the format, the model's fingerprint, the
descriptor settings and one entry per photo: path, size, modification time,
SHA-256 of its bytes, upright size and its rows) and the arrays of one
generation (`descriptors-G.npy`: float16 [R, D] unit-length region
descriptors; `regions-G.npy`: float32 [R, 5] photo index and box as
fractions; `queries-G.npy`: float16 [P, S, D] each photo's own descriptors at
the query scales; `thumbs-G.npy`: uint8 [P, T, T] each photo's grey thumbnail, for
re-ranking candidates (`cropjax.search.rerank`); `hubness-G.npy`: float32 [R], each
region's `hubness`, written by the last save of a build, with what it was made with under
`derived` in the manifest).
Arrays are written first, under a new generation, then the
manifest that names them, each through a temporary file renamed over the
target: a run killed at any point leaves the previous index whole, and the
next run resumes from what the last save kept (every `save_every` photos).
The manifest records each array's SHA-256; a changed or truncated array, an
unreadable manifest, or an index built by another model or with other
settings is refused with `SearchIndexError`, never used silently.

Running again encodes only new and changed photos: a file whose size and
modification time are unchanged is kept; one that changed is hashed, and
kept if its bytes are the same (a photo touched or moved is not encoded
again); files gone are forgotten. Library files are only read.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from cropjax import metadata
from cropjax.library import raw
from cropjax.search import descriptors
from cropjax.search import neighbours as neighbours_lib

FORMAT = 2  # 2: with thumbnails
MANIFEST = 'manifest.json'
ARRAYS = ('descriptors', 'regions', 'queries', 'thumbs')
DERIVED = ('hubness',)  # computed from the arrays; saved by a build's last save, else made on use
# Hubness (CSLS, Conneau et al. 2018, its published k and weight): a region's mean cosine with
# its HUB_NEIGHBOURS nearest photos, each seen whole at the query scales (its own photo left
# out; at most HUB_REFERENCE such vectors, evenly spaced, so the cost grows with the library,
# not its square); retrieval scores cosine - HUB_WEIGHT * hubness.
HUB_NEIGHBOURS = 10
HUB_WEIGHT = 0.5
HUB_REFERENCE = 10000


def _derived_settings() -> dict[str, Any]:
  """What a saved hubness was computed with: one made otherwise is made again, not used."""
  return {'hubness': {'neighbours': HUB_NEIGHBOURS, 'reference': HUB_REFERENCE}}


class SearchIndexError(ValueError):
  """An index that cannot be used: the message names the folder and says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Photo:
  path: str          # absolute path of the file
  size: int          # bytes
  mtime_ns: int
  sha256: str        # of the file's bytes
  width: int         # upright (EXIF orientation applied)
  height: int
  rows: tuple[int, int]  # its region rows [start, end) in the arrays


@dataclasses.dataclass
class Index:
  """An open index (see the module docstring)."""
  folder: Path
  fingerprint: str
  settings: dict[str, Any]
  photos: list[Photo]
  descriptors: np.ndarray  # float16 [R, D]
  regions: np.ndarray      # float32 [R, 5]: photo index, x0, y0, x1, y1 (fractions)
  queries: np.ndarray      # float16 [P, S, D]
  thumbs: np.ndarray       # uint8 [P, T, T]: grey thumbnails (descriptors.thumbnail)
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, why)
  generation: int = 0
  _neighbours: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False,
                                                  compare=False)

  def __len__(self) -> int:
    return len(self.photos)

  def neighbours(self, kind: str) -> 'neighbours_lib.Neighbours':
    """The faiss index ('flat' or 'hnsw') over the regions' `search_vectors`, built on
    first use and kept with this open index (see cropjax/search/neighbours.py)."""
    if kind not in self._neighbours:
      self._neighbours[kind] = neighbours_lib.Neighbours.build(
          kind, len(self.descriptors), self.descriptors.shape[1] + 1, self.search_vectors)
    return self._neighbours[kind]

  @functools.cached_property
  def whitening(self) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], map [D, D]): PCA whitening learned from the index's own region descriptors
    (no labels): centred, turned onto their principal axes and each axis scaled to unit
    spread, so the few directions every photo shares stop dominating the cosine."""
    d = self.descriptors
    if len(d) < 2:
      dim = d.shape[1]
      return np.zeros(dim, np.float32), np.eye(dim, dtype=np.float32)
    mean = np.zeros(d.shape[1], np.float64)
    for start in range(0, len(d), 65536):
      mean += d[start:start + 65536].astype(np.float64).sum(0)
    mean /= len(d)
    cov = np.zeros((d.shape[1],) * 2, np.float64)
    for start in range(0, len(d), 65536):
      x = d[start:start + 65536].astype(np.float64) - mean
      cov += x.T @ x
    values, vectors = np.linalg.eigh(cov / len(d))
    scale = 1.0 / (np.sqrt(np.clip(values, 0.0, None)) + 1e-3)
    return mean.astype(np.float32), (vectors * scale).astype(np.float32)

  def whiten(self, x: np.ndarray) -> np.ndarray:
    """Descriptors [..., D] -> whitened, unit-length (`whitening`)."""
    mean, w = self.whitening
    y = (x.astype(np.float32) - mean) @ w
    return y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-6)

  @functools.cached_property
  def hubness(self) -> np.ndarray:
    """float32 [R]: each region's mean whitened cosine with its `HUB_NEIGHBOURS` nearest
    whole photos of the library (their own descriptors at the query scales, its own photo
    left out). A region that resembles every photo (flat texture, a common layout) is near
    many queries of photos it is not in; retrieval discounts it (`search_vectors`). Loaded
    with the index where its last build saved it, else computed here."""
    return _hubness(self)

  def search_vectors(self, start: int, stop: int) -> np.ndarray:
    """float32 [stop - start, D + 1]: regions' whitened descriptors and -HUB_WEIGHT x their
    hubness, so that with `query_vectors` an inner product is cosine - HUB_WEIGHT x hubness."""
    d = self.whiten(self.descriptors[start:stop])
    return np.concatenate([d, -HUB_WEIGHT * self.hubness[start:stop, None]], 1)

  @functools.cached_property
  def search_matrix(self) -> np.ndarray:
    """float32 [R, D + 1]: every region's `search_vectors`, made on first use and kept with
    this open index (4 (D + 1) bytes a region, as a faiss flat index holds) for the exact
    'flat' search (`cropjax.search.find.similarities`)."""
    out = np.empty((len(self.descriptors), self.descriptors.shape[1] + 1), np.float32)
    for start in range(0, len(out), 65536):
      out[start:start + 65536] = self.search_vectors(start, start + 65536)
    return out

  def query_vectors(self, queries: np.ndarray) -> np.ndarray:
    """float32 [n, D + 1]: query descriptors whitened, and a 1 (see `search_vectors`)."""
    q = self.whiten(queries)
    return np.concatenate([q, np.ones((len(q), 1), np.float32)], 1)

  @property
  def bytes_per_photo(self) -> float:
    total = (self.descriptors.nbytes + self.regions.nbytes + self.queries.nbytes
             + self.thumbs.nbytes)
    total += 4 * len(self.descriptors)  # hubness
    return total / max(len(self.photos), 1)


def _hubness(index: Index, chunk: int = 16384) -> np.ndarray:
  """`Index.hubness`, through faiss's exact search where it is installed, else numpy."""
  photos, scales = index.queries.shape[:2]
  out = np.zeros(len(index.descriptors), np.float32)
  if photos < 2:
    return out
  reference = index.whiten(index.queries.reshape(photos * scales, -1))
  ref_owner = np.repeat(np.arange(photos), scales)
  take = np.unique(np.linspace(0, len(reference) - 1, min(len(reference), HUB_REFERENCE))
                   .round().astype(np.int64))
  reference, ref_owner = np.ascontiguousarray(reference[take], np.float32), ref_owner[take]
  k = min(HUB_NEIGHBOURS, len(reference) - scales)  # at least one photo besides its own
  if k < 1:
    return out
  want = min(len(reference), k + scales)  # its own photo's come out after the search
  owner = index.regions[:, 0].astype(np.int64)
  flat = None
  if neighbours_lib.available():
    flat = neighbours_lib.Neighbours.build('flat', len(reference), reference.shape[1],
                                           lambda start, stop: reference[start:stop])
  else:  # numpy holds a [chunk, reference] block of scores and its ranking
    chunk = max(1, min(chunk, (1 << 28) // (12 * len(reference))))
  for start in range(0, len(out), chunk):
    d = np.ascontiguousarray(index.whiten(index.descriptors[start:start + chunk]), np.float32)
    if flat is not None:
      scores, rows = flat.search(d, want)
    else:
      s = d @ reference.T
      rows = np.argpartition(-s, want - 1, axis=1)[:, :want] if want < s.shape[1] else \
          np.broadcast_to(np.arange(s.shape[1]), s.shape)
      scores = np.take_along_axis(s, rows, 1)
    scores = np.where(ref_owner[rows] == owner[start:start + chunk, None], -np.inf, scores)
    best = -np.sort(-scores, axis=1)[:, :k]
    out[start:start + chunk] = best.mean(1)
  return out


# ------------------------------------------------------------------ reading


def _sha256_file(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def _read_array(folder: Path, name: str, gen: int, digest: str) -> np.ndarray:
  """One array of generation `gen`, checked against the manifest's SHA-256."""
  file = folder / f'{name}-{gen}.npy'
  if not file.is_file():
    raise ValueError(f'{file.name} is missing')
  if _sha256_file(file) != digest:
    raise ValueError(f'{file.name} does not match its checksum (changed or truncated)')
  return np.load(file, allow_pickle=False)


def open_index(folder: str | os.PathLike, *, fingerprint: str | None = None,
               settings: dict[str, Any] | None = None) -> Index:
  """Reads an index; SearchIndexError when it is corrupt, or (given `fingerprint` and
  `settings`) built by another model or with other settings."""
  folder = Path(folder).expanduser()
  path = folder / MANIFEST
  if not path.is_file():
    raise SearchIndexError(f'{folder}: no cropjax index here ({MANIFEST} missing)')
  try:
    m = json.loads(path.read_text())
    if isinstance(m, dict) and isinstance(m.get('format'), int) and m['format'] < FORMAT:
      raise SearchIndexError(f'{folder}: an index of an older cropjax (format {m["format"]}, '
                             f'this cropjax reads {FORMAT}); pass --rebuild to build it again')
    if m.get('format') != FORMAT:
      raise ValueError(f'index format {m.get("format")!r}, this cropjax reads {FORMAT}')
    gen = int(m['generation'])
    arrays = {name: _read_array(folder, name, gen, m['arrays'][name]) for name in ARRAYS}
    made_as = m.get('derived', {})
    # Saved by the build's last save with today's settings; else made when first used.
    derived = {name: _read_array(folder, name, gen, m['arrays'][name]) for name in DERIVED
               if name in m['arrays'] and made_as.get(name) == _derived_settings()[name]}
    for name, a in derived.items():
      if a.shape != (len(arrays['descriptors']),):
        raise ValueError(f'{name}-{gen}.npy disagrees with the descriptors in length')
    photos = [Photo(**{**p, 'rows': tuple(p['rows'])}) for p in m['photos']]
    if photos and photos[-1].rows[1] != len(arrays['descriptors']):
      raise ValueError('its photos and its arrays disagree')
    if (len(arrays['queries']) != len(photos) or len(arrays['thumbs']) != len(photos)
        or len(arrays['regions']) != len(arrays['descriptors'])):
      raise ValueError('its arrays disagree in length')
  except SearchIndexError:
    raise
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise SearchIndexError(f'{folder}: a corrupt cropjax index ({e}); delete the folder (or '
                           'pass --rebuild) to build it again') from None
  index = Index(folder, m['fingerprint'], m['settings'], photos, arrays['descriptors'],
                arrays['regions'], arrays['queries'], arrays['thumbs'],
                [tuple(s) for s in m.get('skipped', [])], gen)
  index.__dict__.update(derived)  # the cached properties, as saved
  if fingerprint is not None and index.fingerprint != fingerprint:
    raise SearchIndexError(f'{folder}: built by another model (fingerprint '
                           f'{index.fingerprint[:12]}, this model {fingerprint[:12]}); its '
                           'descriptors cannot be compared: use --rebuild or another --index')
  if settings is not None and index.settings != settings:
    raise SearchIndexError(f'{folder}: built with other descriptor settings '
                           f'({index.settings}, now {settings}); use --rebuild or another --index')
  return index


# ------------------------------------------------------------------ writing


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = 'wb') -> str:
  """Writes through a temporary file renamed over `path`; returns the SHA-256 of what was written."""
  fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}-', dir=path.parent)
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    digest = _sha256_file(Path(tmp))
    os.replace(tmp, path)
    return digest
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def save(index: Index, derived: bool = True) -> None:
  """Writes the index as a new generation (see the module docstring), then drops the old one.
  `derived`: with `hubness` (computed if need be; a build's intermediate saves leave it out, as
  it depends on every photo)."""
  folder = index.folder
  folder.mkdir(parents=True, exist_ok=True)
  gen = index.generation + 1
  names = ARRAYS + (DERIVED if derived else ())
  digests = {name: _atomic_write(folder / f'{name}-{gen}.npy',
                                 lambda f, a=getattr(index, name): np.save(f, a))
             for name in names}
  manifest = {'format': FORMAT, 'generation': gen, 'fingerprint': index.fingerprint,
              'settings': index.settings, 'arrays': digests,
              'derived': {k: v for k, v in _derived_settings().items() if k in digests},
              'photos': [dataclasses.asdict(p) for p in index.photos],
              'skipped': [list(s) for s in index.skipped]}
  _atomic_write(folder / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1)), 'w')
  for old in folder.glob('*-*.npy'):
    stem = old.stem.rsplit('-', 1)
    if stem[0] in ARRAYS + DERIVED and stem[1] != str(gen):
      old.unlink(missing_ok=True)
  index.generation = gen


# ------------------------------------------------------------------ building


# What `library_files` lists: photos (camera raw and HEIF too) and the web's and scanners'
# GIF and BMP files (a crop saved from a page; Pillow reads a GIF's first frame).
SEARCHED_EXTENSIONS = metadata.PHOTO_EXTENSIONS | {'.gif', '.bmp'}


def library_files(roots: Sequence[str | os.PathLike]) -> list[Path]:
  """The image files under each root (a folder, searched recursively, or one file), sorted;
  hidden files and folders left out (`SEARCHED_EXTENSIONS`). Camera raw and HEIF files are
  listed too: read where rawpy is installed (raw), else skipped and listed as the build reads
  them."""
  out = []
  for root in roots:
    root = Path(root).expanduser()
    if root.is_file():
      out.append(root.resolve())
      continue
    if not root.is_dir():
      raise FileNotFoundError(f'{root}: no such file or folder')
    for dirpath, dirnames, filenames in os.walk(root):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
      out += [Path(dirpath, n).resolve() for n in sorted(filenames)
              if not n.startswith('.') and Path(n).suffix.lower() in SEARCHED_EXTENSIONS]
  return sorted(dict.fromkeys(out))


def update_index(roots: Sequence[str | os.PathLike], folder: str | os.PathLike, *, model,
                 rebuild: bool = False, save_every: int = 256, batch_size: int = 16,
                 progress: Callable[[int, int], None] | None = None) -> Index:
  """Brings the index in `folder` up to date with the photos under `roots` (see the module
  docstring) and returns it. `progress(done, total)` is called as photos are encoded."""
  folder = Path(folder).expanduser()
  index, todo = plan_update(roots, folder, fingerprint=descriptors.fingerprint(model),
                            settings=descriptors.settings(model), rebuild=rebuild)
  settings = index.settings
  pending: list[tuple[Photo, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
  done = 0
  chunks = [todo[start:start + batch_size] for start in range(0, len(todo), batch_size)]
  read = lambda chunk: descriptors.read_photos([Path(f) for f, *_ in chunk],
                                                  settings['library_side'])
  # The next chunk's files are decoded while this one's are encoded.
  with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='cropjax-read') as reader:
    ahead = reader.submit(read, chunks[0]) if chunks else None
    for k, chunk in enumerate(chunks):
      photos, failures = ahead.result()
      ahead = reader.submit(read, chunks[k + 1]) if k + 1 < len(chunks) else None
      index.skipped += failures
      for (f, size, mtime_ns, digest), (width, height), arrays in descriptors.describe_read(
          chunk, photos, model, settings):
        pending.append((Photo(f, size, mtime_ns, digest, width, height, (0, 0)), *arrays))
      done += len(chunk)
      if progress:
        progress(done, len(todo))
      if done % save_every < batch_size and done < len(todo):
        add_photos(index, pending)
        save(index, derived=False)  # a run killed from here on resumes after these photos
  add_photos(index, pending)
  save(index)
  return index


def plan_update(roots: Sequence[str | os.PathLike], folder: str | os.PathLike, *,
                fingerprint: str, settings: dict[str, Any], rebuild: bool = False
                ) -> tuple[Index, list[tuple[str, int, int, str]]]:
  """What `update_index` has to do: (the index with the photos kept as they are, not yet
  saved; the files to encode, as (path, size, mtime_ns, SHA-256), in library order). Refuses
  an index folder inside the library, and an existing index of another model or settings."""
  folder = Path(folder).expanduser()
  files = library_files(roots)
  where = folder.resolve()
  for root in map(lambda r: Path(r).expanduser().resolve(), roots):
    if root.is_dir() and (where == root or root in where.parents):
      raise SearchIndexError(f'{folder}: the index folder lies inside the library {root}, '
                             'which cropjax only reads; put the index elsewhere (--index)')
  if (folder / MANIFEST).exists() and not rebuild:
    old = open_index(folder, fingerprint=fingerprint, settings=settings)
  else:
    old = Index(folder, fingerprint, settings, [], np.zeros((0, settings['dim']), np.float16),
                np.zeros((0, 5), np.float32),
                np.zeros((0, len(settings['query_sides']), settings['dim']), np.float16),
                np.zeros((0, settings['thumb_side'], settings['thumb_side']), np.uint8))
    if (folder / MANIFEST).exists():  # --rebuild: the old generation is replaced on save
      try:
        old.generation = int(json.loads((folder / MANIFEST).read_text())['generation'])
      except (OSError, ValueError, KeyError, TypeError):
        pass
  by_path = {p.path: (k, p) for k, p in enumerate(old.photos)}
  by_hash = {p.sha256: (k, p) for k, p in enumerate(old.photos)}
  kept: list[tuple[int, Photo]] = []   # (old photo index, its entry now)
  todo: list[tuple[str, int, int, str]] = []
  skipped: list[tuple[str, str]] = []
  no_raw = not raw.available()
  for f in files:
    if no_raw and f.suffix.lower() in metadata.RAW_EXTENSIONS:  # listed, never hashed or read
      skipped.append((str(f), f'RawSupportError: {raw.INSTALL_HINT}'))
      continue
    st = f.stat()
    hit = by_path.get(str(f))
    if hit and hit[1].size == st.st_size and hit[1].mtime_ns == st.st_mtime_ns:
      kept.append(hit)
      continue
    digest = _sha256_file(f)
    same = by_hash.get(digest)
    if same:  # the same bytes, touched or moved
      kept.append((same[0], dataclasses.replace(same[1], path=str(f), size=st.st_size,
                                                mtime_ns=st.st_mtime_ns)))
    else:
      todo.append((str(f), st.st_size, st.st_mtime_ns, digest))
  index = _subset(old, kept)
  index.skipped = skipped
  return index, todo


def _subset(index: Index, kept: Iterable[tuple[int, Photo]]) -> Index:
  """The index with only the `kept` photos (old index, new entry), rows renumbered."""
  kept = list(kept)
  rows = [np.arange(*index.photos[k].rows) for k, _ in kept]
  take = np.concatenate(rows) if rows else np.zeros(0, np.int64)
  regions = index.regions[take].copy()
  photos, start = [], 0
  for i, ((_, p), r) in enumerate(zip(kept, rows)):
    regions[start:start + len(r), 0] = i
    photos.append(dataclasses.replace(p, rows=(start, start + len(r))))
    start += len(r)
  return Index(index.folder, index.fingerprint, index.settings, photos,
               index.descriptors[take], regions,
               index.queries[[k for k, _ in kept]].reshape(-1, *index.queries.shape[1:]),
               index.thumbs[[k for k, _ in kept]].reshape(-1, *index.thumbs.shape[1:]),
               list(index.skipped), index.generation)


def add_photos(index: Index, pending: list) -> None:
  """Moves the pending (photo, descriptors, boxes, query descriptors, thumbnail) into the
  index."""
  if not pending:
    return
  index._neighbours.clear()               # built from the old descriptors
  index.__dict__.pop('whitening', None)
  index.__dict__.pop('hubness', None)
  index.__dict__.pop('search_matrix', None)
  n, first = len(index.descriptors), len(index.photos)
  blocks, regions = [index.descriptors], [index.regions]
  for k, (photo, d, boxes, *_) in enumerate(pending):
    index.photos.append(dataclasses.replace(photo, rows=(n, n + len(d))))
    n += len(d)
    blocks.append(d.astype(np.float16))
    regions.append(np.concatenate([np.full((len(boxes), 1), first + k, np.float32),
                                   boxes.astype(np.float32)], 1))
  index.descriptors = np.concatenate(blocks)
  index.regions = np.concatenate(regions)
  index.queries = np.concatenate([index.queries,
                                  np.stack([q for *_, q, _ in pending]).astype(np.float16)])
  index.thumbs = np.concatenate([index.thumbs, np.stack([t for *_, t in pending])])
  pending.clear()


def eta(done: int, total: int, started: float) -> str:
  """'done/total, X/s, about M:SS left' for a progress line."""
  elapsed = max(time.perf_counter() - started, 1e-9)
  rate = done / elapsed
  left = (total - done) / rate if rate > 0 else float('inf')
  when = f'{int(left // 60)}:{int(left % 60):02d}' if np.isfinite(left) else '?'
  return f'{done}/{total}, {rate:.1f}/s, about {when} left'
