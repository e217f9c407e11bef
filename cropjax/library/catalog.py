"""Crops from a Lightroom Classic catalog (`.lrcat`, an SQLite database).

    catalog = read_catalog('~/Pictures/Lightroom/Catalog.lrcat',
                           remap=[('C:/Users/me/Pictures', '/mnt/photos')])
    for photo in catalog.photos:        # CatalogPhoto: masters and virtual copies
      photo.path, photo.copy_name, photo.settings

Lightroom Classic keeps every photo's develop settings in its catalog and
writes XMP sidecars only when asked to. `read_catalog` reads, for every photo
of the catalog, its file's path (root folder + folder + file name, with moved
root folders remapped), its orientation, its virtual-copy name and the crop
values of its develop settings; `photo_metadata` turns one of them into the
`cropjax.metadata.PhotoMetadata` the annotator writes, with the crop in the
upright frame, exactly as the XMP path does: `metadata.lightroom_to_crop` in
the stored (unrotated) frame, then `metadata.orient_crop` with the catalog's
orientation. When an XMP sidecar of the same photo holds another crop, the
newer of the two wins (the sidecar's modification time against the image's
`touchTime` in the catalog).

The catalog is only read: it is opened with `mode=ro` and `PRAGMA query_only`,
never locked for writing, and read while Lightroom may hold it open (a writer's
uncommitted transaction does not block readers in SQLite's rollback-journal
mode; a lock held longer than `timeout` seconds is a CatalogError). The
develop settings are Lua table text (`s = { CropLeft = 0.1, ... }`); a small
parser reads only the flat top-level `Key = value` entries it needs (numbers,
booleans, strings), skips nested tables, never evaluates anything, and refuses
texts longer than `MAX_SETTINGS_BYTES` (an error for that photo only).

Where the schema facts come from (Lightroom's schema is not documented by Adobe):
  * Tables and columns: `Adobe_images` (id_local, rootFile, masterImage,
    copyName, orientation, captureTime, touchTime), `AgLibraryFile` (id_local,
    baseName, extension, idx_filename, folder), `AgLibraryFolder` (id_local,
    pathFromRoot, rootFolder), `AgLibraryRootFolder` (id_local, absolutePath,
    name), `Adobe_imageDevelopSettings` (image, text, croppedWidth,
    croppedHeight, digest): hfiguiere/lrcat-extractor doc/lrcat_format.md (Lr 4
    and 6), alfanick/lrcat.rb lib/lrcat/catalog/*.rb (Lr 5 column list), and a
    public schema dump of a 2024 Lightroom Classic catalog ("Dump of Lightroom
    Catalog schema - as of 8/28/2024").
  * `touchTime` counts seconds since 2001-01-01 00:00 UTC (Apple's reference
    date): its default in that dump, -63113817600, is exactly 0001-01-01.
  * Orientation codes: AB=1, BC=6, CD=3, DA=8 in hfiguiere/lrcat-extractor
    src/images.rs (`exif_orientation`), and the same turns in
    musselwhizzle/Focus-Points DefaultPointRenderer.lua
    (`getUserRotationAndMirroring`), which also lists the mirrored codes BA,
    CB, DC, AD. The letters say where the stored image's top-left and top-right
    corners end up on screen, corners named A, B, C, D clockwise from the top
    left: that rule gives the four turns above, and BA=2 (mirrored left-right),
    DC=4 (mirrored top-bottom), AD=5 (transposed), CB=7 (transversed). The
    mirrored codes are derived, not checked on a real catalog (Focus-Points
    composes the turn and the mirror of AD and CB the other way round, which
    would swap 5 and 7); mirrored photos are rare.
  * Crop frame: the catalog's settings are the `crs` settings Lightroom writes
    into sidecars, CropLeft/Top/Right/Bottom fractions of the stored frame;
    "LR inverts width and height but does NOT change cropLeft and cropTop" when
    a photo is turned (Focus-Points, `getNormalizedDimensions`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image

from cropjax import metadata

# Lightroom's orientation code -> EXIF Orientation (sources in the module docstring).
ORIENTATIONS: dict[str, int] = {'AB': 1, 'BA': 2, 'CD': 3, 'DC': 4, 'AD': 5, 'BC': 6, 'CB': 7, 'DA': 8}

MAX_SETTINGS_BYTES = 4 << 20   # a longer develop-settings text is refused (for that photo)
APPLE_EPOCH = 978307200        # 2001-01-01T00:00:00Z in Unix seconds (touchTime's origin)
SQLITE_MAGIC = b'SQLite format 3\x00'

CROP_KEYS = ('HasCrop', 'CropLeft', 'CropTop', 'CropRight', 'CropBottom', 'CropAngle')
# The annotator's edit fields (metadata.FIELDS, role 'edit') that are crs settings.
EDIT_KEYS = {f.tag.split(':', 1)[1]: f for f in metadata.FIELDS
             if f.role == 'edit' and f.tag.startswith('crs:')}

# The columns that must be there; masterImage, copyName, captureTime, touchTime and
# idx_filename are read when present.
_REQUIRED = {
    'Adobe_images': ('id_local', 'rootFile', 'orientation'),
    'AgLibraryFile': ('id_local', 'baseName', 'extension', 'folder'),
    'AgLibraryFolder': ('id_local', 'pathFromRoot', 'rootFolder'),
    'AgLibraryRootFolder': ('id_local', 'absolutePath'),
    'Adobe_imageDevelopSettings': ('image', 'text'),
}


class CatalogError(RuntimeError):
  """The catalog as a whole cannot be read (not SQLite, a table missing, locked, ...)."""


class SettingsError(ValueError):
  """A develop-settings text that cannot be read."""


# ----------------------------------------------------------------------------- develop settings

_WS = re.compile(r'\s*')
_NAME = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)')
_NUMBER = re.compile(r'-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.])')
_WORD = re.compile(r'(true|false|nil)(?![A-Za-z0-9_])')
_DQ = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_SQ = re.compile(r"'(?:[^'\\]|\\.)*'", re.S)
_LONG_OPEN = re.compile(r'\[(=*)\[')
_ROOT = re.compile(r'\s*[A-Za-z_][A-Za-z0-9_]*\s*=\s*\{')
_ZSTR = re.compile(r'ZSTR\s*')
_INNER = re.compile(r'[{}"\'\[]')
_ESCAPES = {'n': '\n', 't': '\t', 'r': '\r', '\\': '\\', '"': '"', "'": "'", '\n': '\n'}


def _string(text: str, pos: int) -> tuple[str, int]:
  """A Lua string literal at `pos` -> (its value, the position after it)."""
  if text.startswith('[', pos):
    m = _LONG_OPEN.match(text, pos)
    if m is None:
      raise SettingsError(f'unexpected {text[pos:pos + 20]!r} at offset {pos}')
    close = ']' + m.group(1) + ']'
    end = text.find(close, m.end())
    if end < 0:
      raise SettingsError(f'unterminated long string at offset {pos}')
    return text[m.end():end], end + len(close)
  m = (_DQ if text[pos] == '"' else _SQ).match(text, pos)
  if m is None:
    raise SettingsError(f'unterminated string at offset {pos}')
  body = m.group(0)[1:-1]
  value = re.sub(r'\\(.)', lambda e: _ESCAPES.get(e.group(1), e.group(1)), body, flags=re.S)
  return value, m.end()


def _skip_table(text: str, pos: int) -> int:
  """The position after the table whose '{' is at `pos` (nested tables and strings skipped)."""
  depth = 0
  while True:
    m = _INNER.search(text, pos)
    if m is None:
      raise SettingsError('unterminated table')
    c, pos = m.group(0), m.start()
    if c == '{':
      depth, pos = depth + 1, pos + 1
    elif c == '}':
      depth, pos = depth - 1, pos + 1
      if depth == 0:
        return pos
    elif c == '[':
      pos = _string(text, pos)[1] if _LONG_OPEN.match(text, pos) else pos + 1
    else:
      pos = _string(text, pos)[1]


def _value(text: str, pos: int) -> tuple[Any, int]:
  """A value at `pos` -> (number, bool, str, None; or `dict` for a skipped table; position after)."""
  if pos >= len(text):
    raise SettingsError('text ends where a value was expected')
  c = text[pos]
  if c == '{':
    return {}, _skip_table(text, pos)
  if c in '"\'[':
    return _string(text, pos)
  m = _ZSTR.match(text, pos)
  if m is not None and m.end() < len(text) and text[m.end()] in '"\'':
    return _string(text, m.end())
  m = _NUMBER.match(text, pos)
  if m is not None:
    number = float(m.group(0))
    whole = re.fullmatch(r'-?\d+', m.group(0)) and abs(number) < 2 ** 53
    return (int(number) if whole else number), m.end()
  m = _WORD.match(text, pos)
  if m is not None:
    return {'true': True, 'false': False, 'nil': None}[m.group(1)], m.end()
  raise SettingsError(f'unexpected {text[pos:pos + 20]!r} at offset {pos}')


def parse_settings(text: str, keys: Iterable[str] | None = None,
                   limit: int = MAX_SETTINGS_BYTES) -> dict[str, Any]:
  """The flat top-level `Key = value` entries of a develop-settings text (`s = { ... }`).

  Only `keys` are kept (all when None); values are int, float, bool, str, None
  (nil), or `{}` for a nested table (its contents are skipped). Never evaluates
  anything. SettingsError for a text over `limit` characters or one that is not
  such a table.
  """
  if len(text) > limit:
    raise SettingsError(f'develop settings of {len(text)} characters, more than the {limit} accepted')
  wanted = None if keys is None else set(keys)
  m = _ROOT.match(text)
  if m is None:
    raise SettingsError(f'not a Lightroom settings table (starts with {text[:30]!r})')
  pos, found = m.end(), {}
  while True:
    pos = _WS.match(text, pos).end()
    if pos >= len(text):
      raise SettingsError('unterminated table')
    c = text[pos]
    if c == '}':
      if text[pos + 1:].strip():
        raise SettingsError(f'text after the settings table at offset {pos + 1}')
      return found
    if c in ',;':
      pos += 1
      continue
    name = _NAME.match(text, pos)
    if name is not None:
      value, pos = _value(text, _WS.match(text, name.end()).end())
      if wanted is None or name.group(1) in wanted:
        found[name.group(1)] = value
    elif c == '[' and not _LONG_OPEN.match(text, pos):  # ["key"] = value: not one we read
      key, pos = _value(text, _WS.match(text, pos + 1).end())
      pos = _WS.match(text, pos).end()
      if not text.startswith(']', pos):
        raise SettingsError(f"expected ']' at offset {pos}")
      pos = _WS.match(text, pos + 1).end()
      if not text.startswith('=', pos):
        raise SettingsError(f"expected '=' at offset {pos}")
      pos = _value(text, _WS.match(text, pos + 1).end())[1]
    else:  # a positional value
      pos = _value(text, pos)[1]


# ----------------------------------------------------------------------------- paths

def _normalize(path: str) -> str:
  """A catalog path with '/' separators and no trailing one (Windows catalogs may use '\\')."""
  path = path.replace('\\', '/')
  return path if path in ('/', '') or re.fullmatch(r'[A-Za-z]:/', path) else path.rstrip('/')


def _windows(path: str) -> bool:
  return bool(re.match(r'^(?:[A-Za-z]:/|//)', path))


def parse_remap(items: Iterable[str | tuple[str, str]]) -> list[tuple[str, str]]:
  """'OLD=NEW' strings (or pairs) -> [(OLD, NEW)], longest OLD first; ValueError if malformed."""
  pairs = []
  for item in items:
    if isinstance(item, str):
      old, sep, new = item.partition('=')
      if not sep:
        raise ValueError(f'--remap {item!r}: expected OLD=NEW')
    else:
      old, new = item
    old, new = _normalize(str(old).strip()), str(new).strip()
    if not old or not new:
      raise ValueError(f'--remap {item!r}: OLD and NEW must not be empty')
    pairs.append((old, os.path.expanduser(new)))
  return sorted(pairs, key=lambda p: -len(p[0]))


def remap_path(path: str, remap: Sequence[tuple[str, str]]) -> Path:
  """The local path of catalog path `path`: the longest matching OLD prefix replaced by NEW.

  Prefixes match whole components; Windows paths (a drive letter, or //server)
  match case-insensitively.
  """
  path = _normalize(path)
  for old, new in remap:
    a, b = (path.lower(), old.lower()) if _windows(old) or _windows(path) else (path, old)
    if a == b or a.startswith(b if b.endswith('/') else b + '/'):
      rest = path[len(old):].lstrip('/')
      return Path(new).joinpath(*[p for p in rest.split('/') if p])
  return Path(path)


# ----------------------------------------------------------------------------- the catalog

@dataclasses.dataclass(frozen=True)
class CatalogPhoto:
  """One photo of the catalog (a master or a virtual copy)."""
  image_id: int | str              # Adobe_images.id_local
  catalog_path: str | None         # the file as the catalog records it ('/' separators)
  path: Path | None                # where it is on this machine (remapped); None: unknown
  orientation: int | None          # EXIF Orientation from the catalog's code; None: none recorded
  settings: dict[str, Any] | None  # CROP_KEYS and EDIT_KEYS found; None: no develop settings
  master: int | None = None        # masterImage: set for virtual copies
  copy_name: str | None = None
  capture_time: str | None = None  # ISO 8601, as recorded
  touch_time: float | None = None  # Unix seconds of the last change in the catalog
  problem: str | None = None       # why this entry cannot be used (wrong types, huge settings, ...)

  @property
  def is_virtual_copy(self) -> bool:
    return self.master is not None

  @property
  def label(self) -> str:
    """How reports name it: the image id, and the virtual copy's name."""
    copy = f', virtual copy {self.copy_name!r}' if self.is_virtual_copy else ''
    return f'image {self.image_id}{copy}'


@dataclasses.dataclass(frozen=True)
class Catalog:
  """What `read_catalog` found."""
  path: Path                       # absolute path of the .lrcat
  photos: list[CatalogPhoto]       # folder by folder, each master before its virtual copies
  roots: list[tuple[str, Path]]    # (root folder as recorded, where it is on this machine)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
  return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
  with open(path, 'rb') as f:
    header = f.read(100)
  if not header.startswith(SQLITE_MAGIC):
    raise CatalogError(f'{path}: not a Lightroom catalog (not an SQLite database)')
  wal = len(header) >= 20 and header[18] == 2 and header[19] == 2
  query = {'mode': 'ro'}
  if wal and not os.path.exists(f'{path}-wal'):
    # A WAL database with no log: reading it read-only would need a -shm file;
    # with no writer around (there is no log) it can be read as immutable.
    query['immutable'] = '1'
  uri = f'{path.as_uri()}?{urllib.parse.urlencode(query)}'
  conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
  conn.execute('PRAGMA query_only=ON')
  return conn


def _text(value: Any, what: str) -> str:
  if isinstance(value, str):
    return value
  if value is None:
    return ''
  raise ValueError(f'{what} is {type(value).__name__} {value!r:.40}, expected text')


def read_catalog(path: str | os.PathLike, remap: Iterable[str | tuple[str, str]] = (), *,
                 timeout: float = 5.0, limit: int = MAX_SETTINGS_BYTES) -> Catalog:
  """The photos of a Lightroom Classic catalog, read in one read-only transaction.

  `remap`: 'OLD=NEW' strings or (OLD, NEW) pairs for root folders that moved.
  CatalogError (naming the catalog) when it is not a readable catalog; problems
  of single photos (a value of the wrong type, unreadable or oversized develop
  settings) are kept in their `problem`.
  """
  path = Path(os.path.abspath(os.path.expanduser(path)))
  pairs = parse_remap(remap)
  if not path.is_file():
    raise CatalogError(f'{path}: no such catalog file')
  conn = None
  try:
    conn = _connect(path, timeout)
    conn.execute('BEGIN')  # one snapshot for every query (a shared lock, released by ROLLBACK)
    columns = {t: _columns(conn, t) for t in _REQUIRED}
    for table, needed in _REQUIRED.items():
      if not columns[table]:
        raise CatalogError(f'{path}: not a Lightroom Classic catalog (no table {table})')
      missing = [c for c in needed if c not in columns[table]]
      if missing:
        raise CatalogError(f'{path}: table {table} has no column {", ".join(missing)} '
                           '(not a Lightroom Classic catalog, or a version cropjax does not know)')

    def opt(alias: str, table: str, column: str) -> str:
      return f'{alias}.{column}' if column in columns[table] else 'NULL'

    # The newest settings row of each image (Lightroom keeps one; a damaged catalog may have more).
    rows = conn.execute(f'''
        SELECT i.id_local, {opt('i', 'Adobe_images', 'masterImage')},
               {opt('i', 'Adobe_images', 'copyName')}, i.orientation,
               {opt('i', 'Adobe_images', 'captureTime')}, {opt('i', 'Adobe_images', 'touchTime')},
               f.id_local, f.baseName, f.extension, {opt('f', 'AgLibraryFile', 'idx_filename')},
               fo.pathFromRoot, r.absolutePath,
               typeof(s.text), length(CAST(s.text AS BLOB)),
               CASE WHEN length(CAST(s.text AS BLOB)) <= ? THEN s.text END
        FROM Adobe_images i
        LEFT JOIN AgLibraryFile f ON f.id_local = i.rootFile
        LEFT JOIN AgLibraryFolder fo ON fo.id_local = f.folder
        LEFT JOIN AgLibraryRootFolder r ON r.id_local = fo.rootFolder
        LEFT JOIN (SELECT image, max(rowid) AS newest FROM Adobe_imageDevelopSettings GROUP BY image) n
          ON n.image = i.id_local
        LEFT JOIN Adobe_imageDevelopSettings s ON s.rowid = n.newest
        ORDER BY i.id_local''', (limit,)).fetchall()
    roots = conn.execute('SELECT absolutePath FROM AgLibraryRootFolder ORDER BY id_local').fetchall()
    conn.execute('ROLLBACK')
  except sqlite3.OperationalError as e:
    if 'locked' in str(e) or 'busy' in str(e):
      raise CatalogError(f'{path}: the catalog stayed locked for {timeout:g} s (Lightroom writing to '
                         'it?); try again, or read a copy of it') from None
    raise CatalogError(f'{path}: cannot read the catalog ({e})') from None
  except sqlite3.DatabaseError as e:
    raise CatalogError(f'{path}: not a readable Lightroom catalog ({e})') from None
  except OSError as e:
    raise CatalogError(f'{path}: cannot read the catalog ({e.strerror or e})') from None
  finally:
    if conn is not None:
      conn.close()

  photos = [_photo(row, pairs, limit) for row in rows]
  photos = [p for p in photos if p is not None]
  photos.sort(key=lambda p: (str(p.path.parent), p.path.name, p.is_virtual_copy, str(p.image_id))
              if p.path is not None else ('', '', False, str(p.image_id)))
  local_roots = [(_normalize(r), remap_path(r, pairs)) for (r,) in roots if isinstance(r, str) and r]
  return Catalog(path, photos, local_roots)


def _photo(row: tuple, remap: Sequence[tuple[str, str]], limit: int) -> CatalogPhoto | None:
  """One result row -> CatalogPhoto, or None for files that are not photos (videos, ...)."""
  (image_id, master, copy_name, orientation, capture, touch, file_id, base, ext, idx_name,
   from_root, root, settings_type, settings_len, settings_text) = row
  problems = []
  try:
    if not isinstance(image_id, int):
      raise ValueError(f'Adobe_images.id_local is {type(image_id).__name__} {image_id!r:.40}, '
                       'expected an integer')
    base, ext = _text(base, 'AgLibraryFile.baseName'), _text(ext, 'AgLibraryFile.extension')
    idx_name = _text(idx_name, 'AgLibraryFile.idx_filename')
    from_root = _text(from_root, 'AgLibraryFolder.pathFromRoot')
    root = _text(root, 'AgLibraryRootFolder.absolutePath')
  except ValueError as e:
    return CatalogPhoto(image_id, None, None, None, None, problem=str(e))
  name = f'{base}.{ext}' if base and ext else base or idx_name
  if file_id is None or not name or not root:
    return CatalogPhoto(image_id, None, None, None, None,
                        problem='no file recorded for it (its AgLibraryFile, AgLibraryFolder or '
                                'AgLibraryRootFolder row is missing or empty)')
  parts = [p for p in _normalize(from_root).split('/') if p]
  catalog_path = '/'.join([_normalize(root).rstrip('/'), *parts, name])
  local = remap_path(catalog_path, remap)
  if local.suffix.lower() not in metadata.PHOTO_EXTENSIONS:
    return None

  code = orientation
  if code is None or code == '':
    exif = None
  elif isinstance(code, str) and code.strip().upper() in ORIENTATIONS:
    exif = ORIENTATIONS[code.strip().upper()]
  else:
    exif = None
    problems.append(f'orientation {code!r} is not a Lightroom orientation code (AB, BC, CD, DA, ...)')

  settings = None
  if settings_type not in (None, 'null'):
    if settings_type not in ('text', 'blob'):
      problems.append(f'develop settings are {settings_type}, expected text')
    elif settings_text is None:
      problems.append(f'develop settings of {settings_len} bytes, more than the {limit} accepted')
    else:
      try:
        text = settings_text.decode('utf-8') if isinstance(settings_text, bytes) else settings_text
        settings = parse_settings(text, (*CROP_KEYS, *EDIT_KEYS), limit)
      except UnicodeDecodeError as e:
        problems.append(f'develop settings are not UTF-8 text ({e.reason})')
      except SettingsError as e:
        problems.append(f'develop settings unreadable: {e}')

  touch_time = None
  if isinstance(touch, (int, float)) and not isinstance(touch, bool) and math.isfinite(touch) and touch > 0:
    touch_time = float(touch) + APPLE_EPOCH
  if master is not None and not isinstance(master, int):
    problems.append(f'masterImage is {type(master).__name__} {master!r:.40}, expected an image id')
  copy = copy_name if isinstance(copy_name, str) and copy_name else None
  if master is not None and copy is None:
    copy = f'copy {image_id}'
  return CatalogPhoto(image_id, catalog_path, local, exif, settings, master, copy,
                      metadata.normalize_time(capture), touch_time, '; '.join(problems) or None)


# ----------------------------------------------------------------------------- one photo

def _number(settings: dict[str, Any], key: str, where: str) -> float | None:
  value = settings.get(key)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise metadata.CropValueError(where, f'{key} is {value!r:.40}, expected a number')
  if not math.isfinite(value):
    raise metadata.CropValueError(where, f'{key} is not finite: {value!r}')
  return float(value)


def crop_of(settings: dict[str, Any] | None, stored_size: tuple[int, int], orientation: int,
            where: str | os.PathLike = '') -> tuple[str, metadata.Crop | None]:
  """('cropped', upright crop) or ('no crop', None) from catalog develop settings.

  The same rules as the XMP path: HasCrop false means no crop whatever values
  were left behind, absent values take Adobe's defaults, a full-frame crop is
  no crop; CropValueError for values of the wrong type, out of range or leaving
  the frame.
  """
  if not settings:
    return 'no crop', None
  has_crop = settings.get('HasCrop')
  if has_crop is not None and not isinstance(has_crop, bool):
    raise metadata.CropValueError(where, f'HasCrop is {has_crop!r:.40}, expected true or false')
  if has_crop is False:
    return 'no crop', None
  values = [_number(settings, k, where) for k in CROP_KEYS[1:]]
  if has_crop is None and all(v is None for v in values):
    return 'no crop', None
  names = ('crop_left', 'crop_top', 'crop_right', 'crop_bottom', 'crop_angle')
  for name, key, value in zip(names, CROP_KEYS[1:], values):
    if value is not None:
      try:
        metadata.FIELDS_BY_NAME[name].value(repr(value))
      except ValueError as e:
        raise metadata.CropValueError(where, f'{key}: {e}') from None
  defaults = (0.0, 0.0, 1.0, 1.0, 0.0)  # Adobe's values for absent fields
  l, t, r, b, a = (d if v is None else v for v, d in zip(values, defaults))
  width, height = stored_size
  crop = metadata.check_crop(metadata.lightroom_to_crop(l, t, r, b, a, width, height), width, height, where)
  if crop.is_full_frame():
    return 'no crop', None
  return 'cropped', metadata.orient_crop(crop, orientation)


def _edits(settings: dict[str, Any] | None) -> dict[str, Any]:
  edits = {}
  for key, field in EDIT_KEYS.items():
    value = (settings or {}).get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      try:
        edits[field.name] = field.value(repr(float(value)))
      except ValueError:
        pass
  return edits


def _same(a: metadata.PhotoMetadata, b: metadata.PhotoMetadata) -> bool:
  if a.status != b.status or a.orientation != b.orientation:
    return False
  if a.crop is None or b.crop is None:
    return a.crop is b.crop
  return all(abs(x - y) < 1e-5 for x, y in zip(a.crop.as_tuple(), b.crop.as_tuple()))


def photo_metadata(catalog: Catalog, photo: CatalogPhoto, *, data: bytes, image: Image.Image | None,
                   names: metadata.FolderIndex | Sequence[str] | None = None
                   ) -> tuple[metadata.PhotoMetadata, str | None]:
  """The PhotoMetadata of a catalog photo whose file is `data` (opened as `image`; None for a
  raw file, read with rawpy), and the winner when an XMP sidecar disagrees with the catalog:
  'catalog', 'sidecar' or None (no disagreement).

  The catalog's crop is read in the stored frame and turned upright with the
  catalog's orientation (the file's own when the catalog has none). A master's
  sidecar (`photo.ext.xmp` / `photo.xmp`, as `metadata.read_photo` picks it)
  that holds another crop wins when its modification time is later than the
  photo's touchTime; without a touchTime the catalog wins. A bad sidecar
  refuses the photo, as in the XMP path (MetadataError). `source` is the
  catalog's path, or the sidecar's when it won. Virtual copies have no sidecar
  of their own.
  """
  if photo.path is None:
    raise ValueError(f'{catalog.path}: {photo.label} has no file')
  where = f'{photo.path} ({photo.label} in {catalog.path})'
  if image is None:
    from cropjax.library import raw  # rawpy is optional: imported for raw files only
    raw_info = raw.probe(photo.path, data)
    stored, file_orientation, file_time = raw_info.stored_size, raw_info.orientation, raw_info.capture_time
  else:
    file_orientation, file_time = metadata.exif_info(image)
    stored = metadata.pixel_array_size(image)
  orientation = photo.orientation or file_orientation or 1
  status, crop = crop_of(photo.settings, stored, orientation, where)
  info = metadata.PhotoMetadata(str(photo.path), status, crop, orientation, tuple(stored),
                                str(catalog.path), photo.capture_time or file_time,
                                _edits(photo.settings))
  if photo.is_virtual_copy:
    return info, None
  xmp = metadata.read_photo(photo.path, data=data, image=image, names=names)
  if xmp.source in (None, 'embedded') or _same(info, xmp):
    return info, None
  try:
    sidecar_time = os.stat(xmp.source).st_mtime
  except OSError:
    return info, 'catalog'
  if photo.touch_time is not None and sidecar_time > photo.touch_time:
    return xmp, 'sidecar'
  return info, 'catalog'
