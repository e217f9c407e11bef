"""The index build as an Apache Beam pipeline (cropjax.search.pipeline) on DirectRunner: the same
index as the in-process build, incremental the same way, and from cropjax-find. Skipped where
apache_beam is not installed (the beam extra)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip('apache_beam', reason="Apache Beam is not installed (pip install -e '.[beam]')")

from cropjax import procedural  # noqa: E402
from cropjax import search  # noqa: E402
from cropjax.cli import find as find_cli  # noqa: E402
from cropjax.search import index as index_lib  # noqa: E402
from cropjax.search import pipeline  # noqa: E402
# model: the trained fixture
from test_search import _counting, _library, model  # noqa: E402,F401


def _same(a, b):
  assert a.photos == b.photos
  np.testing.assert_allclose(a.descriptors.astype(np.float32), b.descriptors.astype(np.float32),
                             atol=2e-3)
  np.testing.assert_array_equal(a.regions, b.regions)
  np.testing.assert_allclose(a.queries.astype(np.float32), b.queries.astype(np.float32),
                             atol=2e-3)
  np.testing.assert_allclose(a.hubness, b.hubness, atol=2e-3)
  assert sorted(a.skipped) == sorted(b.skipped)
  assert (a.fingerprint, a.settings) == (b.fingerprint, b.settings)


def test_the_pipeline_gives_the_in_process_index(model, tmp_path, monkeypatch):
  lib = _library(tmp_path / 'lib', count=7)
  (lib / 'notes.jpg').write_text('not a photo')
  local = search.update_index([lib], tmp_path / 'local', model=model)
  beamed = pipeline.build_index([lib], tmp_path / 'beam', model=model.source,
                                runner='DirectRunner', batch_size=3)
  _same(beamed, local)
  assert len(beamed) == 7 and [p for p, _ in beamed.skipped] == [str((lib / 'notes.jpg').resolve())]
  reopened = search.open_index(tmp_path / 'beam', fingerprint=local.fingerprint,
                               settings=local.settings)
  _same(reopened, local)
  assert sorted(f.name for f in (tmp_path / 'beam').iterdir()) == sorted(  # no shard left
      ['manifest.json'] + [f'{a}-{reopened.generation}.npy'
                           for a in index_lib.ARRAYS + index_lib.DERIVED])

  # Incremental as update_index: only the new photo is encoded, in the pipeline's workers.
  encoded = _counting(monkeypatch)
  Image.fromarray(next(procedural.images(12, 1, (150, 200)))).save(lib / 'new.jpg')
  again = pipeline.build_index([lib], tmp_path / 'beam', model=model.source)
  assert sum(encoded) == 1 and len(again) == 8
  _same(again, search.update_index([lib], tmp_path / 'local', model=model))


def test_the_console_program_builds_through_beam(model, tmp_path, capsys):
  lib = _library(tmp_path / 'lib', count=3)
  code = find_cli.main([str(lib), '--model', model.source, '--index', str(tmp_path / 'idx'),
                        '--build-only', '--runner', 'DirectRunner',
                        '--pipeline-option=--direct_num_workers=1'])
  assert code == 0
  assert '3 library photos indexed' in capsys.readouterr().err
  assert len(search.open_index(tmp_path / 'idx')) == 3
