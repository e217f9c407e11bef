"""Retrieval (cropjax.search.neighbours, find.candidates): the exact search, with the region
vectors held or made on each call, gives each photo's best region by brute force; faiss's
HNSW graph nearly the same photos; without faiss the exact search serves."""

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
                         np.concatenate([owner, boxes], 1), d[:, :3].astype(np.float16),
                         np.zeros((photos, 8, 8), np.uint8))


def _queries(index: index_lib.Index, n: int, noise: float, seed: int = 1) -> np.ndarray:
  """[n, 3, D]: regions of random photos, each scale disturbed as a crop's descriptor is."""
  rng = np.random.default_rng(seed)
  rows = rng.choice(len(index.descriptors), (n, 3))
  d = index.descriptors[rows].astype(np.float32)
  return _unit(d + noise * _unit(rng.standard_normal(d.shape)))


def test_the_exact_search_is_each_photos_best_region_by_brute_force():
  index = synthetic_index(120, regions=20, dim=32)
  queries = _queries(index, 40, noise=1.0)
  exclude = [k if k % 3 == 0 else None for k in range(40)]
  # Brute force: every region's whitened cosine (best over the query's scales) less half its
  # hubness; each photo its best region.
  owner = index.regions[:, 0].astype(int)
  cos = np.einsum('rd,nsd->nrs', index.whiten(index.descriptors), index.whiten(queries)).max(-1)
  cos = cos - index_lib.HUB_WEIGHT * index.hubness[None]
  best = np.stack([cos[:, owner == k].max(1) for k in range(120)], 1)  # [40, 120]
  for top in (1, 5, 12, 120, 500):
    want = [[k for k in np.argsort(-row, kind='stable') if k != exclude[i]][:top]
            for i, row in enumerate(best)]
    for kind in ('numpy', 'flat'):
      found = search.candidates(index, queries, top, exclude, search=kind)
      assert [[k for k, _ in c] for c in found] == want, (kind, top)
      np.testing.assert_allclose([s for c in found for _, s in c],
                                 [best[i, k] for i, w in enumerate(want) for k in w], atol=1e-5)
  assert index.search_matrix is index.search_matrix  # made once, kept with the open index
  np.testing.assert_array_equal(index.search_matrix[100:140], index.search_vectors(100, 140))


@needs_faiss
def test_the_graphs_recall_at_10_against_the_exact_search():
  index = synthetic_index(300)                                  # 26,400 regions of 64 dims
  q = index.query_vectors(_queries(index, 200, noise=0.75)[:, 0])
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
  assert neighbours.choose(1000) == 'flat'
  assert capsys.readouterr().err == ''
  assert neighbours.choose(neighbours.SLOW_WITHOUT_FAISS) == 'flat'
  assert "pip install -e '.[faiss]'" in capsys.readouterr().err
  assert neighbours.choose(10 ** 7) == 'flat'
  assert capsys.readouterr().err == ''                          # said once
  assert neighbours.choose(10 ** 7, 'numpy') == 'numpy'
  with pytest.raises(ValueError, match='needs faiss'):
    neighbours.choose(10, 'hnsw')
  with pytest.raises(ValueError, match='unknown nearest-neighbour search'):
    neighbours.choose(10, 'annoy')
  index = synthetic_index(10, regions=4, dim=8)
  queries = _queries(index, 3, noise=0.5)
  assert search.candidates(index, queries, 2) == search.candidates(index, queries, 2,
                                                                   search='flat')


@needs_faiss
def test_auto_picks_by_size_and_queries():
  assert neighbours.choose(10) == 'flat'
  assert neighbours.choose(neighbours.APPROXIMATE_FROM) == 'hnsw'
  large, many = neighbours.APPROXIMATE_FROM, neighbours.GRAPH_PAYS_FROM
  assert neighbours.choose(large, queries=10) == 'flat'          # too few to pay for a graph
  assert neighbours.choose(large, queries=many) == 'hnsw'
  assert neighbours.choose(10 ** 7, 'numpy') == 'numpy'


@pytest.mark.parametrize('with_faiss', [False, pytest.param(True, marks=needs_faiss)])
def test_hubness_is_the_mean_cosine_with_the_nearest_other_photos(monkeypatch, with_faiss):
  monkeypatch.setattr(neighbours, 'available', lambda: with_faiss)
  monkeypatch.setattr(index_lib, 'HUB_REFERENCE', 100)          # of the 150 query vectors
  index = synthetic_index(50, regions=12, dim=16)
  hub = index.hubness
  # By brute force: the reference (an even subset of the photos' query vectors), whitened.
  q = index.whiten(index.queries.reshape(-1, 16))
  take = np.unique(np.linspace(0, len(q) - 1, 100).round().astype(int))
  ref, ref_owner = q[take], np.repeat(np.arange(50), 3)[take]
  d = index.whiten(index.descriptors)
  expected = [np.sort(ref[ref_owner != o] @ r)[::-1][:index_lib.HUB_NEIGHBOURS].mean()
              for r, o in zip(d, index.regions[:, 0].astype(int))]
  np.testing.assert_allclose(hub, expected, atol=1e-5)


def test_a_region_like_many_photos_no_longer_crowds_out_the_original():
  # Photo 0 holds the crop's region (cosine 0.8 with the query); photo 1 holds a region a
  # little nearer the query (0.85) that is also what 15 other photos look like (a sky, say):
  # a hub. By cosine alone it wins; discounted by its hubness, the original does.
  rng = np.random.default_rng(3)
  index = synthetic_index(40, regions=8, dim=32)
  mean, w = index.whitening
  unwhiten = lambda x: (x @ np.linalg.pinv(w) + mean).astype(np.float16)  # whiten's inverse

  def orthogonal(*to):
    v = rng.standard_normal(32)
    for u in to:
      v = v - (v @ u) * u
    return _unit(v)
  common = _unit(rng.standard_normal(32))
  query = _unit(0.85 * common + np.sqrt(1 - 0.85 ** 2) * orthogonal(common))
  crop_region = _unit(0.8 * query + 0.6 * orthogonal(_unit(query), common))
  descriptors, queries = index.descriptors.copy(), index.queries.copy()
  descriptors[3] = unwhiten(crop_region)        # photo 0's region 3
  descriptors[8 + 5] = unwhiten(common)         # photo 1's region 5
  for p in range(2, 17):                        # photos that look like it
    queries[p, 0] = unwhiten(_unit(common + 0.2 * _unit(rng.standard_normal(32))))
  index = index_lib.Index(index.folder, index.fingerprint, index.settings, index.photos,
                          descriptors, index.regions, queries, index.thumbs)
  index.__dict__['whitening'] = (mean, w)       # the same space, so the cosines hold
  asked = np.repeat(unwhiten(query)[None, None].astype(np.float32), 3, 1)
  assert index.hubness[8 + 5] > index.hubness[3] + 0.2
  cosine = index.whiten(descriptors.astype(np.float32)) @ index.whiten(asked[0, 0])
  assert cosine[8 + 5] > cosine[3] > 0.75        # by cosine alone the hub wins
  assert search.candidates(index, asked, 1, search='numpy')[0][0][0] == 0
  assert search.candidates(index, asked, 1, search='flat')[0][0][0] == 0
