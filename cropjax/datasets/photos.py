"""tensorflow-datasets builder for photos without metadata: the image source for crop pairs.

    from cropjax.datasets import photos

    demo = photos.Photos(config='demo', data_dir=...)        # no user data needed
    demo.download_and_prepare()
    mine = photos.builder('~/Pictures/2020', data_dir=...)   # a folder of your own
    mine.download_and_prepare()
    train = mine.as_dataset(split='train')                   # {'image', 'id'}

Configs: `demo` (procedural images from `cropjax.procedural` and the photos that
ship with scikit-image: deterministic, nothing to download), and `folder` (the
photos found recursively in tfds' manual dir). A custom `PhotosConfig` can mix
both, with its own `path`. Photos are turned upright (EXIF Orientation), their
long side capped at `max_size`, and stored as JPEG. Files that do not decode are
skipped with one warning naming them. Splits as in `cropjax.datasets.splits`
(same capture minute or near-identical dHash: same split).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import tensorflow_datasets as tfds
from etils import epath
from PIL import Image, ImageOps

from cropjax import metadata
from cropjax import procedural
from cropjax import threads
from cropjax.datasets import splits

log = logging.getLogger(__name__)

_ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)


@dataclasses.dataclass(eq=False)
class PhotosConfig(tfds.core.BuilderConfig):
  """Which images: a folder (`path`, or tfds' manual dir for `use_manual_dir`), procedural, skimage."""
  path: str | None = None
  use_manual_dir: bool = False
  procedural: int = 0                 # how many procedural images
  procedural_size: int = 384          # their long side
  skimage: bool = False               # add scikit-image's bundled photos
  seed: int = 0
  max_size: int = 1024                # long side cap of the stored images
  validation_fraction: float = 0.1
  max_distance: int = 6


@dataclasses.dataclass
class _Entry:
  id: str
  load: Callable[[], Image.Image]     # the upright RGB image
  dhash: int | None = None
  capture_time: str | None = None


class Photos(tfds.core.GeneratorBasedBuilder):
  """Photos without crop metadata: your folder, or the embedded demo source."""

  VERSION = tfds.core.Version('1.0.0')
  # tfds 4.9.10 finds this file through `importlib_resources`, a package it does
  # not install on Python >= 3.9; naming it here avoids that lookup.
  code_path = epath.Path(__file__)
  RELEASE_NOTES = {'1.0.0': 'Upright RGB images (JPEG) and an id.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  For the `folder` config, pass a folder of photos (JPEG, PNG, TIFF, WebP; searched
  recursively) as the manual dir: tfds.download.DownloadConfig(manual_dir=FOLDER),
  or use cropjax.datasets.photos.builder(FOLDER). The `demo` config needs nothing.
  """
  BUILDER_CONFIGS = [
      PhotosConfig(name='demo', procedural=512, skimage=True,
                   description='Procedural images and scikit-image photos; no user data.'),
      PhotosConfig(name='folder', use_manual_dir=True, description='Photos in the manual dir.'),
  ]
  DEFAULT_CONFIG_NAME = 'demo'

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__.splitlines()[0],
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'id': tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    config = self.builder_config
    folder = config.path or (dl_manager.manual_dir if config.use_manual_dir else None)
    entries = list(sources(config, folder))
    if not entries:
      raise ValueError(f'no images: {folder or "(no folder)"} holds no readable photo and the '
                       f'config {config.name!r} adds no procedural or scikit-image ones')
    assignment = splits.assign([splits.Item(e.id, e.dhash, e.capture_time) for e in entries],
                               validation_fraction=config.validation_fraction,
                               max_distance=config.max_distance)
    out = {}
    for name in (splits.TRAIN, splits.VALIDATION):
      chosen = [e for e in entries if assignment[e.id] == name]
      if chosen:
        out[name] = self._generate_examples(chosen)
      else:
        log.warning('no images for the %r split (%d in all)', name, len(entries))
    return out

  def _generate_examples(self, entries: list[_Entry]):
    max_size = self.builder_config.max_size

    def encoded(e: _Entry) -> bytes | None:
      try:
        return _jpeg(_fit(e.load(), max_size))
      except (OSError, ValueError, SyntaxError) as err:  # checked in the first pass; vanishingly rare
        log.warning('%s: skipped (%s)', e.id, err)
        return None
    # Loaded, resized and encoded on every core, a few at a time (decoders, resizes and encoders
    # release the GIL), yielded in order.
    step = 4 * threads.workers()
    for start in range(0, len(entries), step):
      chunk = entries[start:start + step]
      for e, data in zip(chunk, threads.map(encoded, chunk)):
        if data is not None:
          yield e.id, {'image': data, 'id': e.id}


def _fit(image: Image.Image, max_size: int) -> Image.Image:
  if max(image.size) > max_size:
    scale = max_size / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.LANCZOS)
  return image


def _jpeg(image: Image.Image) -> bytes:
  buf = io.BytesIO()
  image.convert('RGB').save(buf, 'JPEG', quality=95)
  return buf.getvalue()


def _open_upright(path: Path, draft: int | None = None, info: dict | None = None) -> Image.Image:
  """The decoded, upright RGB image (JPEGs at a reduced scale with `draft`); `info` gets its time."""
  with Image.open(path) as im:
    if info is not None:
      info['capture_time'] = metadata.exif_info(im)[1]
    if draft and im.format == 'JPEG':
      im.draft('RGB', (draft, draft))
    im.load()
    return ImageOps.exif_transpose(im).convert('RGB')


def procedural_size(seed: int, index: int, long_side: int) -> tuple[int, int]:
  """(width, height) of procedural image `index`: a photo-like aspect, landscape or portrait."""
  aspect = _ASPECTS[int(hashlib.sha256(f'{seed}/{index}'.encode()).hexdigest(), 16) % len(_ASPECTS)]
  if aspect >= 1:
    return long_side, max(8, round(long_side / aspect))
  return max(8, round(long_side * aspect)), long_side


def sources(config: PhotosConfig, folder: str | os.PathLike | None = None) -> Iterator[_Entry]:
  """The images of `config`, with what the splitter needs; undecodable files warned about once."""
  if folder is not None:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
      raise FileNotFoundError(f'{folder}: not a folder of photos')
    bad = []
    for path in sorted(p for p in folder.rglob('*') if p.is_file() and not p.name.startswith('.')
                       and p.suffix.lower() in metadata.IMAGE_EXTENSIONS):
      info = {}
      try:
        small = _open_upright(path, draft=64, info=info)  # decodes the whole file: truncation shows
      except Exception as e:  # noqa: BLE001 -- any decoder failure: skip the file
        bad.append(f'{path} ({type(e).__name__}: {e})')
        continue
      yield _Entry(str(path.relative_to(folder)), lambda p=path: _open_upright(p),
                   splits.dhash(small), info['capture_time'])
    if bad:
      log.warning('%s: %d file(s) that do not decode skipped: %s', folder, len(bad), '; '.join(bad))
  if config.skimage:
    for name, array in procedural.skimage_photos():
      image = Image.fromarray(array)
      yield _Entry(f'skimage/{name}', lambda im=image: im, splits.dhash(image))
  for i in range(config.procedural):
    size = procedural_size(config.seed, i, config.procedural_size)
    # Independent random images: no near-duplicates to look for.
    yield _Entry(f'procedural/{config.seed}/{i:06d}',
                 lambda i=i, size=size: Image.fromarray(procedural.image(config.seed, i, size)))


def builder(folder: str | os.PathLike, data_dir: str | os.PathLike | None = None,
            **options: Any) -> Photos:
  """A Photos builder for a folder of your photos; the config is named after the folder's path."""
  folder = Path(folder).expanduser().resolve()
  if not folder.is_dir():
    raise FileNotFoundError(f'{folder}: not a folder of photos')
  digest = hashlib.sha256(f'{folder}/{sorted(options.items())}'.encode()).hexdigest()[:12]
  config = PhotosConfig(name=f'folder_{digest}', path=str(folder), version=Photos.VERSION,
                        description=f'Photos in {folder}', **options)
  return Photos(data_dir=os.fspath(data_dir) if data_dir else None, config=config)
