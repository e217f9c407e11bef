"""The annotator: photo libraries -> a dataset of cropped photos and their crops.

    summary = annotate(['~/Pictures/2019', '~/Pictures/2020'], 'data/crops', size=512)

Walks each library recursively (symbolic links to folders are not followed),
reads every photo's crop with `cropjax.metadata`, and for each cropped photo
writes `DATASET/images/<id>.jpg` (the upright photo, resized so that its long
side is `size` pixels with the aspect ratio kept, up or down, JPEG quality 95)
and appends one line to `DATASET/manifest.jsonl`:

    {"id": "9c41...", "sha256": "3f2a...", "source": "/abs/IMG_0042.jpg",
     "image": "images/9c41....jpg", "width": 512, "height": 341,
     "original_size": [6000, 4000], "stored_size": [6000, 4000], "orientation": 1,
     "crop": {"left": 0.1, "top": 0.05, "right": 0.9, "bottom": 0.95, "angle": -1.5},
     "xmp": "/abs/IMG_0042.xmp", "capture_time": "2020-06-01T12:34:56",
     "dhash": "f0e1...", "edits": {"exposure": 0.35}}

`sha256` is the file's content hash. The crop is the canonical label of
`cropjax.metadata` (upright frame; `original_size` is the upright size, in
pixels). `id` (16 hex digits) hashes the content and the label together: a
photo already in the manifest with the same crop, met again (a re-run, a copy
in another folder) is skipped, so running again, or on another folder, only
adds; a byte-identical file with a different crop is another example. When a
photo is re-cropped (its sidecar changed), a new record is appended; readers
keep the last record per (sha256, source). The manifest is opened for
appending and flushed after every record, images are written to a temporary
name and renamed: an interrupted run keeps what it finished. Libraries are
only read, never written. Bad files are reported even when a byte-identical
copy is already in the dataset (the metadata is read before the manifest is
consulted).

Raw files (CR2, NEF, ARW, DNG, ...) are read through rawpy (`cropjax.library.raw`,
the extra `pip install -e '.[raw]'`): the embedded preview when its long side
is at least `size`, else a demosaic. Without rawpy they are skipped as
'unsupported format', and the first one is reported with the install command.

A Lightroom Classic catalog (`catalog=`, `cropjax.library.catalog`) is read
instead of, or besides, libraries: every photo and virtual copy the catalog
knows, with the crop of its develop settings (the catalog is only read, even
while Lightroom has it open). Root folders that moved are remapped (`remap=`,
'OLD=NEW'). Its records carry `"catalog": "/abs/Catalog.lrcat"` (and no
`xmp`, unless a newer sidecar won over the catalog), `catalog_image` (the
catalog's image id) and, for a virtual copy, `virtual_copy` (its name; the
`source` is the master's file, the `id` differs from the master's). Photos the
catalog has but the disk does not are reported as 'missing file', with both
the catalog's path and the remapped one. Files of the libraries that the
catalog covers are read through the catalog only.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from PIL import Image, ImageCms

from cropjax import metadata
from cropjax.datasets import splits
from cropjax.library import catalog as lrcat
from cropjax.library import raw as raw_files

MANIFEST = 'manifest.jsonl'
IMAGES = 'images'
JPEG_QUALITY = 95

# Skip reasons, in the order the summary lists them.
NO_CROP = 'no crop'
ALREADY_APPLIED = 'already applied'
UNREADABLE = metadata.ImageReadError.reason      # 'unreadable image'
INVALID = metadata.CropValueError.reason         # 'invalid crop values'
BAD_XML = metadata.XMPError.reason               # 'bad XML'
UNSUPPORTED = 'unsupported format'
REASONS = (NO_CROP, ALREADY_APPLIED, UNREADABLE, INVALID, BAD_XML, UNSUPPORTED)
# Catalog runs only; listed when they happened.
MISSING = 'missing file'                         # in the catalog, not on disk
BAD_CATALOG = 'bad catalog entry'                # a value of the wrong type, unreadable settings
CATALOG_REASONS = (MISSING, BAD_CATALOG)
# Reasons reported file by file (the others are normal and only counted).
PROBLEMS = (UNREADABLE, INVALID, BAD_XML, MISSING, BAD_CATALOG)


class AnnotateError(RuntimeError):
  """The run cannot start (a missing library, a dataset inside a library, ...)."""


@dataclasses.dataclass
class Problem:
  path: str
  reason: str
  detail: str

  def __str__(self) -> str:
    return f'{self.path}: {self.reason}: {self.detail}'


@dataclasses.dataclass
class Summary:
  """What a run did."""
  scanned: int = 0                      # photo files examined (images and raw)
  added: int = 0                        # cropped photos written to the dataset
  known: int = 0                        # already in the manifest (same content and crop)
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  problems: list[Problem] = dataclasses.field(default_factory=list)
  orphan_sidecars: int = 0              # .xmp files with no photo beside them
  seconds: float = 0.0
  records: int = 0                      # manifest records after the run
  catalog: str | None = None            # the Lightroom catalog read, if any
  # A sidecar and the catalog disagreed: which one won (the newer), how often.
  conflicts: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  @property
  def readable(self) -> int:
    """Photos whose file could be read (everything but unreadable, missing and unsupported)."""
    return self.scanned - self.skipped[UNREADABLE] - self.skipped[UNSUPPORTED] - self.skipped[MISSING]

  def to_json(self) -> dict[str, Any]:
    skipped = {r: self.skipped[r] for r in REASONS}
    if self.catalog is not None:
      skipped.update({r: self.skipped[r] for r in CATALOG_REASONS})
    out = {'scanned': self.scanned, 'added': self.added, 'already_in_dataset': self.known,
           'skipped': skipped, 'orphan_sidecars': self.orphan_sidecars,
           'problems': [dataclasses.asdict(p) for p in self.problems],
           'seconds': round(self.seconds, 3), 'records': self.records}
    if self.catalog is not None:
      out['catalog'] = {'path': self.catalog, 'sidecar_and_catalog_disagreed': {
          'sidecar_newer': self.conflicts['sidecar'], 'catalog_newer': self.conflicts['catalog']}}
    return out

  def format(self) -> str:
    rate = self.scanned / self.seconds if self.seconds > 0 else 0.0
    lines = [f'scanned {self.scanned} photos in {self.seconds:.1f} s ({rate:.1f} photos/s)',
             f'  cropped, added to the dataset: {self.added}',
             f'  cropped, already in the dataset: {self.known}']
    lines += [f'  skipped, {r}: {self.skipped[r]}' for r in REASONS]
    if self.catalog is not None:
      lines += [f'  skipped, {r}: {self.skipped[r]}' for r in CATALOG_REASONS]
      if self.conflicts:
        lines.append(f'  sidecar and catalog disagreed: {sum(self.conflicts.values())} '
                     f"(the newer won: sidecar {self.conflicts['sidecar']}, "
                     f"catalog {self.conflicts['catalog']})")
    if self.orphan_sidecars:
      lines.append(f'  sidecars without a photo: {self.orphan_sidecars}')
    lines.append(f'manifest: {self.records} records')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- manifest

class Manifest:
  """DATASET/manifest.jsonl: one JSON record per line, appended to, never rewritten."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = Path(directory)
    self.path = self.directory / MANIFEST
    self.ids: set[str] = set()
    self.count = 0
    self._file = None
    for record in read_manifest(self.directory, warn=lambda m: print(f'warning: {m}', file=sys.stderr)):
      self.ids.add(record['id'])
      self.count += 1

  def __contains__(self, ident: str) -> bool:
    return ident in self.ids

  def append(self, record: dict[str, Any]) -> None:
    if self._file is None:
      self.directory.mkdir(parents=True, exist_ok=True)
      needs_newline = (self.path.exists() and self.path.stat().st_size > 0
                       and not _ends_with_newline(self.path))
      self._file = open(self.path, 'a', encoding='utf-8')
      if needs_newline:  # a run killed mid-line
        self._file.write('\n')
    self._file.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + '\n')
    self._file.flush()
    self.ids.add(record['id'])
    self.count += 1

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


def _ends_with_newline(path: Path) -> bool:
  with open(path, 'rb') as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b'\n'


def read_manifest(directory: str | os.PathLike,
                  warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
  """The records of DATASET/manifest.jsonl (empty if there is none).

  Unparsable lines (a run killed mid-write) are passed over with a warning.
  """
  path = Path(directory) / MANIFEST
  if not path.exists():
    return []
  records = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        if not isinstance(record, dict) or 'sha256' not in record or 'id' not in record:
          raise ValueError('not a cropjax record')
      except ValueError as e:
        if warn is not None:
          warn(f'{path}:{number}: unreadable manifest line skipped ({e})')
        continue
      records.append(record)
  return records


# ----------------------------------------------------------------------------- library walk

def walk(library: str | os.PathLike) -> Iterator[tuple[Path, list[str], list[str]]]:
  """(folder, photo file names, all file names) for every folder of `library`, sorted."""
  for dirpath, dirnames, filenames in os.walk(library, onerror=None):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    names = sorted(filenames)
    photos = [n for n in names
              if not n.startswith('.') and Path(n).suffix.lower() in metadata.PHOTO_EXTENSIONS]
    yield Path(dirpath), photos, names


def _orphan_sidecars(photos: Sequence[str], names: Sequence[str]) -> list[str]:
  stems = {Path(p).stem.lower() for p in photos} | {p.lower() for p in photos}
  return [n for n in names if n.lower().endswith('.xmp') and not n.startswith('.')
          and n[:-4].lower() not in stems]


# ----------------------------------------------------------------------------- one photo

def _to_rgb(image: Image.Image) -> Image.Image:
  """8-bit sRGB-ish RGB: ICC profiles converted where possible, 16-bit scaled."""
  icc = image.info.get('icc_profile')
  if image.mode in ('I;16', 'I;16B', 'I;16L', 'I', 'F'):
    import numpy as np
    a = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith('I;16') or a.max() > 255 else 255.0
    image = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), 'L')
  if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
    rgba = image.convert('RGBA')
    background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    image = Image.alpha_composite(background, rgba)
  if icc and image.mode in ('RGB', 'CMYK', 'L', 'RGBA'):
    try:
      source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
      return ImageCms.profileToProfile(image, source, ImageCms.createProfile('sRGB'), outputMode='RGB')
    except Exception:  # noqa: BLE001 -- a broken profile: fall back to a plain conversion
      pass
  return image.convert('RGB')


def target_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
  """(width, height) with the long side `long_side` and the aspect ratio kept."""
  w, h = size
  scale = long_side / max(w, h)
  return max(1, round(w * scale)), max(1, round(h * scale))


def load_upright(image: Image.Image, orientation: int, long_side: int,
                 where: str | os.PathLike) -> Image.Image:
  """Decodes `image` (JPEGs at a reduced scale when that is enough), upright, resized, RGB."""
  out_w, out_h = target_size(metadata.upright_size(metadata.pixel_array_size(image), orientation),
                             long_side)
  stored_w, stored_h = (out_h, out_w) if orientation in metadata.TRANSPOSING else (out_w, out_h)
  try:
    if image.format == 'JPEG':
      image.draft('RGB', (stored_w, stored_h))
    # Pillow turns TIFFs upright while loading them (and drops the tag): undo
    # that, so that `orientation` (which may come from XMP) is applied once.
    before = image.getexif().get(0x0112) if image.format == 'TIFF' else None
    image.load()
    pixels = _to_rgb(image)
    if before in metadata.PIL_TRANSPOSE and image.getexif().get(0x0112) is None:
      pixels = metadata.orient_image(pixels, metadata.INVERSE_ORIENTATION[before])
  except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
    raise metadata.ImageReadError(where, f'cannot decode image ({type(e).__name__}: {e})') from None
  pixels = metadata.orient_image(pixels, orientation)
  if pixels.size != (out_w, out_h):
    pixels = pixels.resize((out_w, out_h), Image.Resampling.LANCZOS)
  return pixels


def load_raw_upright(path: str | os.PathLike, data: bytes | None, info: metadata.PhotoMetadata,
                     long_side: int) -> Image.Image:
  """A raw file's picture (preview or demosaic), upright by `info.orientation`, resized, RGB."""
  out_w, out_h = target_size(info.size, long_side)
  pixels = raw_files.read(path, long_side, data=data, orientation=info.orientation).image
  if pixels.size != (out_w, out_h):
    pixels = pixels.resize((out_w, out_h), Image.Resampling.LANCZOS)
  return pixels


def _write_jpeg(image: Image.Image, path: Path) -> None:
  fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.jpg', dir=path.parent)
  try:
    with os.fdopen(fd, 'wb') as f:
      image.save(f, 'JPEG', quality=JPEG_QUALITY)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def record_id(sha256: str, info: metadata.PhotoMetadata, variant: str = '') -> str:
  """A record's id: the file's content and its label (a byte-identical copy with another crop is
  another example; the same photo with the same crop, met again, is not). A `variant` (a
  catalog's virtual copy) makes another example of the same file and crop."""
  c = info.crop
  label = f'{sha256}|{info.orientation}|{c.left:.6f},{c.top:.6f},{c.right:.6f},{c.bottom:.6f},{c.angle:.6f}'
  if variant:
    label += f'|{variant}'
  return hashlib.sha256(label.encode()).hexdigest()[:16]


def process_photo(path: Path, data: bytes, sha256: str, names: metadata.FolderIndex | Sequence[str],
                  out: Path, size: int, known: Callable[[str], bool] = lambda ident: False, *,
                  read_info: Callable[[Image.Image | None, bytes], metadata.PhotoMetadata] | None = None,
                  variant: str = '',
                  extra: Callable[[metadata.PhotoMetadata], dict[str, Any]] | None = None
                  ) -> tuple[str | None, dict[str, Any] | None, str]:
  """One photo -> (skip reason, or None when added or `known`; manifest record or None; detail).

  Raises MetadataError (with its skip reason) for bad files. Every photo that is
  not already known is decoded, cropped or not, so that a truncated file is reported.
  `read_info(image, data)` replaces `metadata.read_photo` (image None for raw
  files), `variant` goes into the id (`record_id`), `extra(info)` adds fields
  to the record (None removes one).
  """
  image = None if raw_files.is_raw(path) else metadata.open_image(path, data)
  if read_info is None:
    info = metadata.read_photo(path, data=data, image=image, names=names)
  else:
    info = read_info(image, data)
  ident = record_id(sha256, info, variant) if info.status == 'cropped' else None
  if ident is not None and known(ident):
    return None, None, 'known'
  if raw_files.is_raw(path):
    pixels = load_raw_upright(path, data, info, size)
  else:
    pixels = load_upright(image, info.orientation, size, path)
  if info.status == 'already applied':
    return ALREADY_APPLIED, None, f'crs:AlreadyApplied in {info.source}'
  if info.status != 'cropped':
    return NO_CROP, None, ''
  relative = f'{IMAGES}/{ident}.jpg'
  _write_jpeg(pixels, out / relative)
  record = {
      'id': ident, 'sha256': sha256, 'source': os.path.abspath(path), 'image': relative,
      'width': pixels.width, 'height': pixels.height,
      'original_size': list(info.size), 'stored_size': list(info.stored_size),
      'orientation': info.orientation, 'crop': info.crop.to_json(),
      'xmp': info.source, 'capture_time': info.capture_time,
      'dhash': f'{splits.dhash(pixels):016x}', 'edits': info.edits,
  }
  for key, value in (extra(info) if extra is not None else {}).items():
    if value is None:
      record.pop(key, None)
    else:
      record[key] = value
  return None, record, ''


# ----------------------------------------------------------------------------- the run

def _check_paths(libraries: Sequence[Path], out: Path, roots: Sequence[Path] = (),
                 catalog: bool = False) -> None:
  """`roots`: a catalog's root folders (those on disk), libraries too."""
  if not libraries and not catalog:
    raise AnnotateError('no library given')
  out_real = Path(os.path.realpath(out))
  for library in libraries:
    if not library.is_dir():
      raise AnnotateError(f'{library}: not a folder')
  for library in [*libraries, *roots]:
    real = Path(os.path.realpath(library))
    if out_real == real or real in out_real.parents:
      raise AnnotateError(f'{out}: the dataset must not be inside the library {library} '
                          '(the annotator never writes into a library)')
    if out_real in real.parents:
      raise AnnotateError(f'{library}: a library inside the dataset folder {out} is not allowed')


def annotate(libraries: Iterable[str | os.PathLike], out: str | os.PathLike, size: int = 512, *,
             catalog: str | os.PathLike | None = None, remap: Iterable[str | tuple[str, str]] = (),
             report: Callable[[Problem], None] | None = None,
             progress: Callable[[Summary, Path], None] | None = None,
             progress_every: float = 2.0) -> Summary:
  """Adds the cropped photos of `libraries` to the dataset folder `out`; returns the summary.

  `catalog`: a Lightroom Classic catalog whose photos are added too (`libraries`
  may then be empty); `remap`: 'OLD=NEW' strings or (OLD, NEW) pairs for its
  root folders that moved. A catalog that cannot be read is an AnnotateError
  naming it, raised before anything is written. `report` is called for every
  bad file (unreadable image, invalid crop values, bad XML, missing file, bad
  catalog entry), `progress` at most every `progress_every` seconds.
  """
  if size < 16:
    raise AnnotateError(f'size must be at least 16 pixels, got {size}')
  libraries = [Path(p).expanduser() for p in libraries]
  out = Path(out).expanduser()
  remap = list(remap)
  if remap and catalog is None:
    raise AnnotateError('remap is for the root folders of a catalog: give the catalog too')
  cat = None
  if catalog is not None:
    try:
      cat = lrcat.read_catalog(catalog, remap)
    except (lrcat.CatalogError, ValueError) as e:
      raise AnnotateError(str(e)) from None
  _check_paths(libraries, out, [p for _, p in cat.roots if p.is_dir()] if cat else (), cat is not None)
  # A library inside another one given too would be walked twice.
  real = [Path(os.path.realpath(p)) for p in libraries]
  libraries = [p for i, (p, r) in enumerate(zip(libraries, real))
               if not any(o in r.parents for o in real) and r not in real[:i]]
  (out / IMAGES).mkdir(parents=True, exist_ok=True)
  manifest = Manifest(out)
  summary = Summary(catalog=None if cat is None else str(cat.path))
  start = last = time.monotonic()

  hinted = False  # rawpy missing: said once, with the install command; later raw files only counted

  def skip(path: Path, reason: str, detail: str) -> None:
    nonlocal hinted
    summary.skipped[reason] += 1
    first_raw = detail == raw_files.INSTALL_HINT and not hinted
    hinted = hinted or first_raw
    if reason in PROBLEMS or first_raw:
      problem = Problem(str(path), reason, detail)
      summary.problems.append(problem)
      if report is not None:
        report(problem)

  def tick(path: Path) -> None:
    nonlocal last
    now = time.monotonic()
    if progress is not None and now - last >= progress_every:
      last = now
      summary.seconds = now - start
      progress(summary, path)

  covered = set()  # files the catalog has: not read again from the libraries
  try:
    if cat is not None:
      covered = {os.path.normcase(os.path.abspath(p.path)) for p in cat.photos if p.path is not None}
      indexes: dict[Path, metadata.FolderIndex] = {}
      for photo in cat.photos:
        summary.scanned += 1
        _catalog_one(cat, photo, indexes, out, size, manifest, summary, skip)
        tick(photo.path or cat.path)
    for library in libraries:
      for folder, photos, names in walk(library):
        for orphan in _orphan_sidecars(photos, names):
          summary.orphan_sidecars += 1
          try:  # a bad sidecar is reported even with no photo beside it
            metadata.parse_xmp(metadata.read_xmp_file(folder / orphan), str(folder / orphan))
          except metadata.XMPError as e:
            problem = Problem(str(folder / orphan), BAD_XML, f'{e.problem} (sidecar without a photo)')
            summary.problems.append(problem)
            if report is not None:
              report(problem)
          except OSError:
            pass
        index = metadata.FolderIndex(names)
        for name in photos:
          path = folder / name
          if covered and os.path.normcase(os.path.abspath(path)) in covered:
            continue
          summary.scanned += 1
          suffix = Path(name).suffix.lower()
          if suffix not in metadata.IMAGE_EXTENSIONS and suffix not in metadata.RAW_EXTENSIONS:
            skip(path, UNSUPPORTED, f'{Path(name).suffix} files are not read '
                 '(JPEG, TIFF, PNG, WebP and camera raw files are)')
          else:
            _one(path, index, out, size, manifest, summary, skip)
          tick(path)
  finally:
    manifest.close()
  summary.seconds = time.monotonic() - start
  summary.records = manifest.count
  return summary


def _one(path: Path, names: metadata.FolderIndex, out: Path, size: int, manifest: Manifest,
         summary: Summary, skip: Callable[[Path, str, str], None], **options: Any) -> None:
  """One photo file; `options` go to `process_photo` (read_info, variant, extra)."""
  try:
    data = path.read_bytes()
  except OSError as e:
    skip(path, UNREADABLE, f'cannot read file ({e.strerror or e})')
    return
  sha256 = hashlib.sha256(data).hexdigest()
  try:
    reason, record, detail = process_photo(path, data, sha256, names, out, size,
                                           known=manifest.__contains__, **options)
  except metadata.MetadataError as e:
    skip(path, e.reason, e.problem if e.path == str(path) else str(e))
    return
  except Exception as e:  # noqa: BLE001 -- Pillow's decoders raise many kinds on corrupt data
    skip(path, UNREADABLE, f'{type(e).__name__}: {e}')
    return
  if detail == 'known':
    summary.known += 1
    return
  if record is None:
    skip(path, reason, detail)
    return
  manifest.append(record)
  summary.added += 1


def _catalog_one(cat: lrcat.Catalog, photo: lrcat.CatalogPhoto, indexes: dict[Path, metadata.FolderIndex],
                 out: Path, size: int, manifest: Manifest, summary: Summary,
                 skip: Callable[[Path, str, str], None]) -> None:
  """One photo (or virtual copy) of a Lightroom catalog."""
  where = f'{photo.label} in {cat.path}'
  if photo.problem is not None:
    skip(photo.path or Path(f'{cat.path} ({photo.label})'), BAD_CATALOG, f'{photo.problem} ({where})')
    return
  path = photo.path
  if path.suffix.lower() not in metadata.IMAGE_EXTENSIONS and not raw_files.is_raw(path):
    skip(path, UNSUPPORTED, f'{path.suffix} files are not read ({where})')
    return
  if not path.is_file():
    hint = '' if str(path) == photo.catalog_path else f', {photo.catalog_path} in the catalog'
    skip(path, MISSING, f'not on disk ({where}{hint}; --remap OLD=NEW if its folder moved)')
    return
  if path.parent not in indexes:
    indexes.clear()  # the photos come folder by folder
    indexes[path.parent] = metadata.FolderIndex.of(path.parent)
  names = indexes[path.parent]

  def read_info(image: Image.Image | None, data: bytes) -> metadata.PhotoMetadata:
    info, winner = lrcat.photo_metadata(cat, photo, data=data, image=image, names=names)
    if winner is not None:
      summary.conflicts[winner] += 1
    return info

  def extra(info: metadata.PhotoMetadata) -> dict[str, Any]:
    return {'catalog': str(cat.path), 'catalog_image': photo.image_id,
            'xmp': None if info.source == str(cat.path) else info.source,
            'virtual_copy': photo.copy_name if photo.is_virtual_copy else None}

  variant = f'virtual copy {photo.image_id}' if photo.is_virtual_copy else ''
  _one(path, names, out, size, manifest, summary, skip, read_info=read_info, variant=variant, extra=extra)
