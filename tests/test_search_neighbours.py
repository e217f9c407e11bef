"""Retrieval through faiss (cropjax.search.neighbours): the exact flat index gives numpy's
candidates, the HNSW graph nearly all of them; numpy is the fallback without faiss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropjax import search
from cropjax.search import index as index_lib
from cropjax.search import neighbours

needs_faiss = pytest.mark.skipif(not neighbours.available(), reason='faiss is not installed')


def _unit(a: np.ndarray) -> np.ndarray:
  return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_index(photos: int, regions: int = 88, dim: int = 64, spread: float = 0.7,
                    seed: int = 0) -> index_lib.Index:
  """An index of photo-like descriptors: each photo's regions scattered around its own
  direction (windows of one photo resemble each other), its query descriptors three of them."""
  rng = np.random.default_rng(seed)
  d = _unit(rng.standard_normal((photos, 1, dim)) + spread * rng.standard_normal(
      (photos, regions, dim)))
  entries = [index_lib.Photo(f'/library/p{k:05d}.jpg', 1, 1, f'{k:064x}', 100, 80,
                             (k * regions, (k + 1) * regions)) for k in range(photos)]
  boxes = rng.uniform(0, 1, (photos * regions, 4)).astype(np.float32)
  owner = np.repeat(np.arange(photos), regions).astype(np.float32)[:, None]
  return index_lib.Index(Path('/nowhere'), '0' * 64, {'dim': dim}, entries,
                         d.reshape(-1, dim).astype(np.float16),
                         np.concatenate([owner, boxes], 1), d[:, :3].astype(np.float16))


def _queries(index: index_lib.Index, n: int, noise: float, seed: int = 1) -> np.ndarray:
  """[n, 3, D]: regions of random photos, each scale disturbed as a crop's descriptor is."""
  rng = np.random.default_rng(seed)
  rows = rng.choice(len(index.descriptors), (n, 3))
  d = index.descriptors[rows].astype(np.float32)
  return _unit(d + noise * _unit(rng.standard_normal(d.shape)))


@needs_faiss
def test_faiss_flat_gives_numpys_candidates():
  index = synthetic_index(120, regions=20, dim=32)
  queries = _queries(index, 40, noise=1.0)
  exclude = [k if k % 3 == 0 else None for k in range(40)]
  for top in (1, 5, 12):
    exact = search.candidates(index, queries, top, exclude, search='numpy')
    flat = search.candidates(index, queries, top, exclude, search='flat')
    assert [[k for k, _ in c] for c in flat] == [[k for k, _ in c] for c in exact]
    np.testing.assert_allclose([[s for _, s in c] for c in flat],
                               [[s for _, s in c] for c in exact], atol=1e-5)
    assert all(k != exclude[i] for i, c in enumerate(flat) for k, _ in c)
  assert index.neighbours('flat') is index.neighbours('flat')  # built once, kept


@needs_faiss
def test_the_graphs_recall_at_10_against_the_exact_search():
  index = synthetic_index(300)                                  # 26,400 regions of 64 dims
  q = index.whiten(_queries(index, 200, noise=0.75)[:, 0])
  _, exact = index.neighbours('flat').search(q, 10)
  _, graph = index.neighbours('hnsw').search(q, 10)
  recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, graph)])
  assert recall >= 0.95, recall
  # And the photos it proposes: nearly always numpy's.
  queries = _queries(index, 100, noise=0.75, seed=2)
  exact = search.candidates(index, queries, 5, search='numpy')
  graph = search.candidates(index, queries, 5, search='hnsw')
  same = np.mean([len({k for k, _ in a} & {k for k, _ in b}) / 5 for a, b in zip(exact, graph)])
  assert same >= 0.95, same


def test_numpy_without_faiss_and_a_word_only_when_it_matters(monkeypatch, capsys):
  monkeypatch.setattr(neighbours, 'available', lambda: False)
  monkeypatch.setattr(neighbours, '_told', [])
  assert neighbours.choose(1000) == 'numpy'
  assert capsys.readouterr().err == ''
  assert neighbours.choose(neighbours.SLOW_WITHOUT_FAISS) == 'numpy'
  assert "pip install -e '.[faiss]'" in capsys.readouterr().err
  assert neighbours.choose(10 ** 7) == 'numpy'
  assert capsys.readouterr().err == ''                          # said once
  with pytest.raises(ValueError, match='needs faiss'):
    neighbours.choose(10, 'hnsw')
  with pytest.raises(ValueError, match='unknown nearest-neighbour search'):
    neighbours.choose(10, 'annoy')
  index = synthetic_index(10, regions=4, dim=8)
  queries = _queries(index, 3, noise=0.5)
  assert search.candidates(index, queries, 2) == search.candidates(index, queries, 2,
                                                                   search='numpy')


@needs_faiss
def test_auto_picks_by_size_and_queries():
  assert neighbours.choose(10) == 'flat'
  assert neighbours.choose(neighbours.APPROXIMATE_FROM) == 'hnsw'
  large, many = neighbours.APPROXIMATE_FROM, neighbours.GRAPH_PAYS_FROM
  assert neighbours.choose(large, queries=10) == 'flat'          # too few to pay for a graph
  assert neighbours.choose(large, queries=many) == 'hnsw'
  assert neighbours.choose(10 ** 7, 'numpy') == 'numpy'
