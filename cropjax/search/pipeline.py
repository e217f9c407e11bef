"""The index build as an Apache Beam pipeline: the same index as `update_index`, on many machines.

    index = build_index(['/photos'], 'photos.cropjax-index', model='workdirs/demo',
                        runner='DirectRunner')
    cropjax-find /photos --model workdirs/demo --build-only --runner FlinkRunner \\
        --pipeline-option=--flink_master=host:8081 --pipeline-option=--environment_type=LOOPBACK

The driver plans the update as `update_index` does (`index.plan_update`: the
photos kept, the files to encode, the same checks); the pipeline then runs
Create over those files -> Reshuffle (spread over the workers) -> batches ->
`Describe`, a DoFn that loads the model once per worker (`setup`, refused if
its weights are not the driver's) and computes each photo's descriptors as
the in-process build does (`descriptors.read_photos`, `descriptors.describe`),
each bundle written as one shard file (`shard-UUID.npz`, through Beam's
FileSystems: a local or shared folder, or gs://, s3://, hdfs:// with those
extras) -> the shards of the bundles that committed, listed in one file. The
driver then merges exactly the listed shards, in library order, into the
index and writes it through the index module's own atomic writer
(`index.save`), and removes the shards. A rerun encodes only new and changed
photos, as `update_index` does.

Needs Apache Beam (`pip install -e '.[beam]'`); DirectRunner is the default
and tested; the model workdir, the library and the shard folder must be
readable (the shard folder writable) from every worker.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

try:
  import apache_beam as beam
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import PipelineOptions
  from apache_beam.transforms.window import GlobalWindow
  from apache_beam.utils.windowed_value import WindowedValue
except ImportError as e:  # the beam extra
  raise ImportError("cropjax.search.pipeline needs Apache Beam: pip install -e '.[beam]'") from e

from cropjax.search import descriptors
from cropjax.search import index as index_lib

LISTING = 'shards.json'


class Describe(beam.DoFn):
  """Batches of (path, size, mtime_ns, SHA-256) -> each bundle's photos described, written as
  one shard file; yields the shard's path."""

  def __init__(self, model: str, fingerprint: str, settings: dict[str, Any], shards: str):
    self.model_path, self.fingerprint, self.settings, self.shards = (model, fingerprint, settings,
                                                                     shards)

  def setup(self) -> None:
    from cropjax import inference
    self.model = inference.load_model(self.model_path, task='pairs')
    if descriptors.fingerprint(self.model) != self.fingerprint:
      raise index_lib.SearchIndexError(
          f'{self.model_path}: this worker loaded other weights than the driver (fingerprint '
          f'{descriptors.fingerprint(self.model)[:12]}, driver {self.fingerprint[:12]}); give '
          'every worker the same model')

  def start_bundle(self) -> None:
    self.photos: list[dict[str, Any]] = []
    self.arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    self.failures: list[tuple[str, str]] = []

  def process(self, batch: Sequence[tuple[str, int, int, str]]) -> Iterator[str]:
    read, failures = descriptors.read_photos([Path(f) for f, *_ in batch],
                                              self.settings['library_side'])
    self.failures += failures
    for (path, size, mtime_ns, digest), (width, height), arrays in descriptors.describe_read(
        batch, read, self.model, self.settings):
      self.photos.append({'path': path, 'size': size, 'mtime_ns': mtime_ns, 'sha256': digest,
                          'width': width, 'height': height, 'regions': len(arrays[0])})
      self.arrays.append(arrays)
    return iter(())

  def finish_bundle(self) -> Iterator[WindowedValue]:
    if not self.photos and not self.failures:
      return
    path = FileSystems.join(self.shards, f'shard-{uuid.uuid4().hex}.npz')
    dim, side = self.settings['dim'], self.settings['thumb_side']
    buf = io.BytesIO()
    np.savez(buf, photos=np.array(json.dumps(self.photos)),
             failures=np.array(json.dumps(self.failures)),
             descriptors=np.concatenate([a[0] for a in self.arrays] or [np.zeros((0, dim))]),
             boxes=np.concatenate([a[1] for a in self.arrays] or [np.zeros((0, 4))]),
             queries=np.stack([a[2] for a in self.arrays]) if self.arrays
             else np.zeros((0, len(self.settings['query_sides']), dim)),
             thumbs=np.stack([a[3] for a in self.arrays]) if self.arrays
             else np.zeros((0, side, side), np.uint8))
    with FileSystems.create(path) as f:
      f.write(buf.getvalue())
    yield WindowedValue(path, GlobalWindow().max_timestamp(), [GlobalWindow()])


def _write_listing(shards: list[str], where: str) -> None:
  with FileSystems.create(FileSystems.join(where, LISTING)) as f:
    f.write(json.dumps(sorted(shards)).encode())


def _read_shard(path: str) -> tuple[list[tuple[index_lib.Photo, np.ndarray, np.ndarray,
                                               np.ndarray, np.ndarray]], list[tuple[str, str]]]:
  """A shard's (photo, region descriptors, boxes, query descriptors, thumbnail) and failures."""
  with FileSystems.open(path) as f:
    with np.load(io.BytesIO(f.read()), allow_pickle=False) as npz:
      data = {name: npz[name] for name in npz.files}
  out, start = [], 0
  for k, p in enumerate(json.loads(str(data['photos']))):
    n = p.pop('regions')
    out.append((index_lib.Photo(**p, rows=(0, 0)), data['descriptors'][start:start + n],
                data['boxes'][start:start + n], data['queries'][k], data['thumbs'][k]))
    start += n
  return out, [tuple(f) for f in json.loads(str(data['failures']))]


def build_index(roots: Sequence[str | os.PathLike], folder: str | os.PathLike, *, model: str,
                runner: str = 'DirectRunner', options: Sequence[str] = (),
                rebuild: bool = False, batch_size: int = 16,
                shards: str | None = None) -> index_lib.Index:
  """`update_index` through a Beam pipeline on `runner` (`options`: more pipeline flags, such
  as --flink_master=...); `model` is a workdir path every worker can read; `shards` where the
  workers write (default: a fresh folder inside the index folder)."""
  from cropjax import inference
  folder = Path(folder).expanduser()
  driver = inference.load_model(model, task='pairs')
  fingerprint, settings = descriptors.fingerprint(driver), descriptors.settings(driver)
  del driver
  index, todo = index_lib.plan_update(roots, folder, fingerprint=fingerprint,
                                      settings=settings, rebuild=rebuild)
  if shards is None:
    folder.mkdir(parents=True, exist_ok=True)
    shards = str(folder / f'.shards-{uuid.uuid4().hex}')
  else:
    shards = FileSystems.join(shards, uuid.uuid4().hex)
  FileSystems.mkdirs(shards)
  try:
    if todo:
      flags = PipelineOptions([f'--runner={runner}', *options])
      with beam.Pipeline(options=flags) as p:
        _ = (p
             | 'Files' >> beam.Create(todo)
             | 'Spread' >> beam.Reshuffle()
             | 'Batch' >> beam.BatchElements(min_batch_size=1, max_batch_size=batch_size)
             | 'Describe' >> beam.ParDo(Describe(str(model), fingerprint, settings, shards))
             | 'Shards' >> beam.combiners.ToList()
             | 'List' >> beam.Map(_write_listing, shards))
      with FileSystems.open(FileSystems.join(shards, LISTING)) as f:
        listed = json.loads(f.read().decode())
      described, failures = {}, []
      for path in listed:
        photos, failed = _read_shard(path)
        described.update((p.path, (p, *arrays)) for p, *arrays in photos)
        failures += failed
      order = {path: k for k, (path, *_) in enumerate(todo)}
      index.skipped += sorted(failures, key=lambda f: order.get(f[0], len(order)))
      index_lib.add_photos(index, [described[path] for path, *_ in todo if path in described])
    index_lib.save(index)
  finally:
    FileSystems.delete([shards])
  return index
