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
# Reasons reported file by file (the others are normal and only counted).
PROBLEMS = (UNREADABLE, INVALID, BAD_XML)


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

  @property
  def readable(self) -> int:
    """Photos whose file could be read (everything but unreadable and unsupported)."""
    return self.scanned - self.skipped[UNREADABLE] - self.skipped[UNSUPPORTED]

  def to_json(self) -> dict[str, Any]:
    return {'scanned': self.scanned, 'added': self.added, 'already_in_dataset': self.known,
            'skipped': {r: self.skipped[r] for r in REASONS}, 'orphan_sidecars': self.orphan_sidecars,
            'problems': [dataclasses.asdict(p) for p in self.problems],
            'seconds': round(self.seconds, 3), 'records': self.records}

  def format(self) -> str:
    rate = self.scanned / self.seconds if self.seconds > 0 else 0.0
    lines = [f'scanned {self.scanned} photos in {self.seconds:.1f} s ({rate:.1f} photos/s)',
             f'  cropped, added to the dataset: {self.added}',
             f'  cropped, already in the dataset: {self.known}']
    lines += [f'  skipped, {r}: {self.skipped[r]}' for r in REASONS]
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


def record_id(sha256: str, info: metadata.PhotoMetadata) -> str:
  """A record's id: the file's content and its label (a byte-identical copy with another crop is
  another example; the same photo with the same crop, met again, is not)."""
  c = info.crop
  label = f'{sha256}|{info.orientation}|{c.left:.6f},{c.top:.6f},{c.right:.6f},{c.bottom:.6f},{c.angle:.6f}'
  return hashlib.sha256(label.encode()).hexdigest()[:16]


def process_photo(path: Path, data: bytes, sha256: str, names: metadata.FolderIndex | Sequence[str],
                  out: Path, size: int, known: Callable[[str], bool] = lambda ident: False
                  ) -> tuple[str | None, dict[str, Any] | None, str]:
  """One photo -> (skip reason, or None when added or `known`; manifest record or None; detail).

  Raises MetadataError (with its skip reason) for bad files. Every photo that is
  not already known is decoded, cropped or not, so that a truncated file is reported.
  """
  image = metadata.open_image(path, data)
  info = metadata.read_photo(path, data=data, image=image, names=names)
  ident = record_id(sha256, info) if info.status == 'cropped' else None
  if ident is not None and known(ident):
    return None, None, 'known'
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
  return None, record, ''


# ----------------------------------------------------------------------------- the run

def _check_paths(libraries: Sequence[Path], out: Path) -> None:
  if not libraries:
    raise AnnotateError('no library given')
  out_real = Path(os.path.realpath(out))
  for library in libraries:
    if not library.is_dir():
      raise AnnotateError(f'{library}: not a folder')
    real = Path(os.path.realpath(library))
    if out_real == real or real in out_real.parents:
      raise AnnotateError(f'{out}: the dataset must not be inside the library {library} '
                          '(the annotator never writes into a library)')
    if out_real in real.parents:
      raise AnnotateError(f'{library}: a library inside the dataset folder {out} is not allowed')


def annotate(libraries: Iterable[str | os.PathLike], out: str | os.PathLike, size: int = 512, *,
             report: Callable[[Problem], None] | None = None,
             progress: Callable[[Summary, Path], None] | None = None,
             progress_every: float = 2.0) -> Summary:
  """Adds the cropped photos of `libraries` to the dataset folder `out`; returns the summary.

  `report` is called for every bad file (unreadable image, invalid crop values,
  bad XML), `progress` at most every `progress_every` seconds.
  """
  if size < 16:
    raise AnnotateError(f'size must be at least 16 pixels, got {size}')
  libraries = [Path(p).expanduser() for p in libraries]
  out = Path(out).expanduser()
  _check_paths(libraries, out)
  # A library inside another one given too would be walked twice.
  real = [Path(os.path.realpath(p)) for p in libraries]
  libraries = [p for i, (p, r) in enumerate(zip(libraries, real))
               if not any(o in r.parents for o in real) and r not in real[:i]]
  (out / IMAGES).mkdir(parents=True, exist_ok=True)
  manifest = Manifest(out)
  summary = Summary()
  start = last = time.monotonic()

  def skip(path: Path, reason: str, detail: str) -> None:
    summary.skipped[reason] += 1
    if reason in PROBLEMS:
      problem = Problem(str(path), reason, detail)
      summary.problems.append(problem)
      if report is not None:
        report(problem)

  try:
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
          summary.scanned += 1
          if Path(name).suffix.lower() not in metadata.IMAGE_EXTENSIONS:
            skip(path, UNSUPPORTED, f'{Path(name).suffix} files are not read (JPEG, TIFF, PNG, WebP are)')
          else:
            _one(path, index, out, size, manifest, summary, skip)
          now = time.monotonic()
          if progress is not None and now - last >= progress_every:
            last = now
            summary.seconds = now - start
            progress(summary, path)
  finally:
    manifest.close()
  summary.seconds = time.monotonic() - start
  summary.records = manifest.count
  return summary


def _one(path: Path, names: metadata.FolderIndex, out: Path, size: int, manifest: Manifest,
         summary: Summary, skip: Callable[[Path, str, str], None]) -> None:
  try:
    data = path.read_bytes()
  except OSError as e:
    skip(path, UNREADABLE, f'cannot read file ({e.strerror or e})')
    return
  sha256 = hashlib.sha256(data).hexdigest()
  try:
    reason, record, detail = process_photo(path, data, sha256, names, out, size,
                                           known=manifest.__contains__)
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
