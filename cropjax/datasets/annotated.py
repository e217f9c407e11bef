"""tensorflow-datasets builder for a DATASET folder written by `scripts/annotate.py`.

    import tensorflow_datasets as tfds
    from cropjax.datasets import annotated

    builder = annotated.builder('data/crops', data_dir='~/tensorflow_datasets')
    builder.download_and_prepare()
    train = builder.as_dataset(split='train')   # {'image', 'crop', 'angle', 'id', 'sha256'}

or, with tfds' own arguments, the folder as the manual dir:

    builder = annotated.AnnotatedCrops(data_dir=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir='data/crops'))

`crop` is (left, top, right, bottom) of the unturned crop rectangle as fractions
of the image, `angle` its angle in degrees (cropjax's canonical label, see
`cropjax.metadata`). Splits come from `cropjax.datasets.splits`: deterministic,
with photos of the same capture minute or near-identical dHash in the same split.

tfds prepares a dataset once per (name, config, version) under `data_dir`.
`builder(path)` names the config after the manifest's content, so that a
dataset the annotator has added to is prepared again instead of read stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from cropjax import annotate
from cropjax import metadata
from cropjax.datasets import splits

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class AnnotatedCropsConfig(tfds.core.BuilderConfig):
  """Where the DATASET folder is (None: tfds' manual dir) and how to split it."""
  path: str | None = None
  validation_fraction: float = 0.1
  max_distance: int = 6        # dHash bits within which two photos are near-duplicates


class AnnotatedCrops(tfds.core.GeneratorBasedBuilder):
  """Photos and the crops their photographer chose, from an annotated DATASET folder."""

  VERSION = tfds.core.Version('1.0.0')
  # tfds 4.9.10 finds this file through `importlib_resources`, a package it does
  # not install on Python >= 3.9; naming it here avoids that lookup.
  code_path = epath.Path(__file__)
  RELEASE_NOTES = {'1.0.0': 'Image, crop (left, top, right, bottom) and angle per photo.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Run the annotator on your photo library first:
      python scripts/annotate.py LIBRARY --out DATASET --size 512
  then pass DATASET as the manual dir (tfds.download.DownloadConfig(manual_dir=DATASET))
  or as the `path` of an AnnotatedCropsConfig. DATASET holds manifest.jsonl and images/.
  """
  BUILDER_CONFIGS = [
      AnnotatedCropsConfig(name='manual', description='The DATASET folder given as the manual dir.'),
  ]
  DEFAULT_CONFIG_NAME = 'manual'

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__.splitlines()[0],
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'crop': tfds.features.Tensor(shape=(4,), dtype=np.float32),
            'angle': tfds.features.Scalar(dtype=np.float32),
            'id': tfds.features.Text(),
            'sha256': tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    config = self.builder_config
    root = Path(config.path) if getattr(config, 'path', None) else Path(dl_manager.manual_dir)
    records = load_records(root)
    assignment = splits.assign(
        [splits.Item(r['id'], r['_dhash'], r.get('capture_time')) for r in records],
        validation_fraction=config.validation_fraction, max_distance=config.max_distance)
    out = {}
    for name in (splits.TRAIN, splits.VALIDATION):
      chosen = [r for r in records if assignment[r['id']] == name]
      if chosen:
        out[name] = self._generate_examples(chosen)
      else:
        log.warning('%s: no photos for the %r split (%d photos in all)', root, name, len(records))
    return out

  def _generate_examples(self, records: list[dict[str, Any]]):
    for r in records:
      crop = r['_crop']
      yield r['id'], {
          'image': r['_path'].read_bytes(),
          'crop': np.array([crop.left, crop.top, crop.right, crop.bottom], np.float32),
          'angle': np.float32(crop.angle),
          'id': r['id'],
          'sha256': r['sha256'],
      }


def load_records(root: str | os.PathLike) -> list[dict[str, Any]]:
  """The usable manifest records of DATASET `root`, each with its image path, crop and dHash.

  Records whose image is missing or does not decode, or whose crop is invalid,
  are left out with one warning that names them.
  """
  root = Path(root)
  if not (root / annotate.MANIFEST).is_file():
    raise FileNotFoundError(f'{root}: no {annotate.MANIFEST} here; is it a DATASET folder written by '
                            'scripts/annotate.py?')
  latest: dict[tuple[str, str, str], dict[str, Any]] = {}
  for r in annotate.read_manifest(root, warn=log.warning):  # a re-cropped photo: the last record
    key = (r['sha256'], r.get('source', ''), r.get('virtual_copy') or '')  # copies: their own
    latest.pop(key, None)
    latest[key] = r
  records, bad, seen = [], [], set()
  for r in latest.values():
    if r['id'] in seen:
      continue
    seen.add(r['id'])
    path = root / r.get('image', '')
    try:
      data = path.read_bytes()
      with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode != 'RGB' or im.format != 'JPEG':
          raise ValueError(f'expected an RGB JPEG, got {im.format} {im.mode}')
        crop = metadata.check_crop(metadata.Crop.from_json(r['crop']), im.width, im.height, path)
        r['_dhash'] = int(r['dhash'], 16) if r.get('dhash') else splits.dhash(im)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError) as e:
      bad.append(f'{path} ({type(e).__name__}: {e})')
      continue
    r['_path'], r['_crop'] = path, crop
    records.append(r)
  if bad:
    log.warning('%s: %d record(s) skipped: %s', root, len(bad), '; '.join(bad))
  if not records:
    raise ValueError(f'{root}: no usable records in {annotate.MANIFEST}')
  return records


def builder(path: str | os.PathLike, data_dir: str | os.PathLike | None = None,
            validation_fraction: float = 0.1, max_distance: int = 6) -> AnnotatedCrops:
  """An AnnotatedCrops builder for DATASET `path`, its config named after the manifest's content."""
  path = Path(path).expanduser().resolve()
  manifest = path / annotate.MANIFEST
  if not manifest.is_file():
    raise FileNotFoundError(f'{path}: no {annotate.MANIFEST} here; run scripts/annotate.py first')
  digest = hashlib.sha256(manifest.read_bytes())
  digest.update(f'{validation_fraction}/{max_distance}'.encode())
  config = AnnotatedCropsConfig(
      name=f'manifest_{digest.hexdigest()[:12]}', path=str(path),
      validation_fraction=validation_fraction, max_distance=max_distance,
      version=AnnotatedCrops.VERSION, description=f'DATASET folder {path}')
  return AnnotatedCrops(data_dir=os.fspath(data_dir) if data_dir else None, config=config)
