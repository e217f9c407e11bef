"""Evaluating trained models on the validation split, with baselines side by side.

    python scripts/eval.py --workdir workdirs/demo --baseline sift

Crop pairs (`evaluate_pairs`): the validation pairs of the model's config
(synthesised from the validation photos, so never seen in training), scored
by the network and, with `baseline='sift'`, by `cropjax.sift` on the same
pairs (rendered at `sift_size`, at least the network's size: the generator's
labels do not depend on the size). Metrics: accuracy, precision, recall,
ROC-AUC, swap accuracy, top-left error (median and mean; fractions and pixels
of the original) and box IoU (median, share above 0.5 and 0.9), overall and
per kind of example; swap and box metrics on crop pairs only.

Crop pairs on real photos (`evaluate_real`, `scripts/eval.py --data real`):
the yardstick (`cropjax.datasets.yardstick`: photographs no part of cropjax
trains on), pairs made as people make crops (`user_pairs`) and by the
project's generator (`generated`, its evaluation options, at the model's size
for the network and at `aligned_size` for alignment and SIFT); the network
alone, the network with alignment and the verdict, and SIFT side by side; on
the user-made pairs also the crops' angle error (degrees: the straightened
crops are turned, the others not). `photo_dirs` (`--photo-dir`): the same
pairs made from your own photographs instead, to see how cropjax and SIFT do
on pictures like yours.

Auto-crop (`evaluate_crops`): the validation photos of the annotated dataset;
IoU of the unturned crop rectangles and of the turned crops as polygons
(rotation-aware), boundary displacement error (mean absolute edge error,
fractions of the photo's width / height), the angle error's mean, median and
90th percentile (degrees; the median also over the turned crops alone), for
the network alone (`network`) and with its angle settled by the photo's
straight lines (`straightened`, `cropjax.straighten`; the same boxes, save where
the settled angle shrinks one into the frame), next to
two trivial baselines: the full frame, and a centred crop of the training
crops' mean size.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from cropjax import inference


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if not n_pos or not n_neg:
    return float('nan')
  order = np.argsort(scores, kind='mergesort')
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  i = 0
  while i < len(scores):  # average ranks over ties
    j = i
    while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2 + 1
    i = j + 1
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  wh = np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None)
  inter = wh[:, 0] * wh[:, 1]
  area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
  return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def pair_metrics(pred: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, float]:
  """pred: is_pair (bool), score, is_swapped (bool), box; truth: the batch fields."""
  y = truth['is_pair'].astype(bool)
  p = pred['is_pair'].astype(bool)
  out = {'examples': int(len(y)), 'accuracy': float(np.mean(p == y))}
  if y.any() and not y.all():
    out['roc_auc'] = roc_auc(pred['score'], y)
  if y.any():
    out['precision'] = float((p & y).sum() / max(p.sum(), 1))
    out['recall'] = float((p & y).sum() / y.sum())
    pos = y
    out['swap_accuracy'] = float(np.mean(pred['is_swapped'][pos] == truth['is_swapped'][pos].astype(bool)))
    d = pred['box'][pos, :2] - truth['box'][pos, :2]
    err = np.linalg.norm(d, axis=-1)
    err_px = np.linalg.norm(d * truth['original_size'][pos], axis=-1)
    iou = box_iou(pred['box'][pos], truth['box'][pos])
    out.update({
        'top_left_error_median': float(np.median(err)), 'top_left_error_mean': float(err.mean()),
        'top_left_error_px_median': float(np.median(err_px)),
        'top_left_error_px_mean': float(err_px.mean()),
        'box_iou_median': float(np.median(iou)), 'box_iou_above_0.5': float(np.mean(iou > 0.5)),
        'box_iou_above_0.9': float(np.mean(iou > 0.9)),
    })
    if 'angle' in pred and 'angle' in truth:  # degrees, the crop's turn (straightened crops)
      angle = np.abs(pred['angle'][pos] - truth['angle'][pos])
      out.update(angle_error_median=float(np.median(angle)),
                 angle_error_p90=float(np.percentile(angle, 90)))
  return out


def _with_kinds(pred, truth, kinds: tuple[str, ...] | None = None) -> dict[str, Any]:
  from cropjax.data import pairs
  result = {'all': pair_metrics(pred, truth)}
  for k, name in enumerate(kinds or pairs.KINDS):
    sel = truth['kind'] == k
    if sel.any():
      result[name] = pair_metrics({key: v[sel] for key, v in pred.items()},
                                  {key: v[sel] for key, v in truth.items()})
  return result


def evaluate_pairs(model: inference.Model, *, examples: int = 512, batch_size: int = 64,
                   baseline: str | None = None, sift_size: int = 256,
                   source: str | None = None, split: str | None = None) -> dict[str, Any]:
  """The pair model (and the baseline) on `examples` validation pairs; see the module docstring."""
  from cropjax.data import pairs
  c = model.config
  batch_size = max(1, min(batch_size, examples))
  kw = dict(batch_size=batch_size, seed=c.seed, split=split or c.data.eval_split,
            num_batches=max(1, -(-examples // batch_size)), data_dir=c.data.data_dir or None,
            max_images=c.data.get('max_images') or None, **c.data.pair_options.to_dict())
  source = source or c.data.source
  truth = _collect(pairs.dataset(source, image_size=model.image_size, **kw))
  start = time.perf_counter()
  out = model.forward(truth['image'], batch_size, extents=truth.get('extent'))
  seconds = time.perf_counter() - start
  prob = inference.softmax(out['is_pair'])[:, 1]
  net = {'is_pair': prob > 0.5, 'score': prob,
         'is_swapped': inference.softmax(out['is_swapped'])[:, 1] > 0.5, 'box': out['box']}
  labels = {k: v for k, v in truth.items() if k != 'image'}
  report = {'task': 'pairs', 'model': repr(model), 'source': source, 'split': kw['split'],
            'image_size': model.image_size, 'network': _with_kinds(net, labels),
            'network_pairs_per_second': len(prob) / seconds}
  if baseline == 'sift':
    size = max(sift_size, model.image_size)
    big = _collect(pairs.dataset(source, image_size=size, **kw)) if size != model.image_size else truth
    if not (np.array_equal(big['kind'], truth['kind'])
            and np.allclose(big['box'], truth['box'], atol=1e-5)):
      raise RuntimeError('the pair generator gave different labels at another size')
    sift_pred, rate = _sift_predictions([pairs.to_pil(big, i)[:2] for i in range(len(big['image']))])
    report['sift'] = _with_kinds(sift_pred, labels)
    report['sift_pairs_per_second'] = rate
    report['sift_size'] = size
  elif baseline is not None:
    raise ValueError(f"unknown baseline {baseline!r}; the one there is: 'sift'")
  return report


def _predictions(results) -> dict[str, np.ndarray]:
  """PairPredictions -> the arrays `pair_metrics` reads."""
  return {'is_pair': np.array([r.is_crop for r in results]),
          'score': np.array([r.probability for r in results]),
          'is_swapped': np.array([r.original == 'b' for r in results]),
          'box': np.array([r.box_fraction for r in results], np.float64).reshape(-1, 4),
          'angle': np.array([r.angle for r in results], np.float64)}


def _sift_predictions(pairs_ab) -> tuple[dict[str, np.ndarray], float]:
  from cropjax import sift
  start = time.perf_counter()
  results = [sift.match_pair(np.asarray(a), np.asarray(b)) for a, b in pairs_ab]
  seconds = time.perf_counter() - start
  return ({'is_pair': np.array([r.is_pair for r in results]),
           'score': np.array([r.score for r in results]),
           'is_swapped': np.array([r.original == 'b' for r in results]),
           'box': np.array([r.box for r in results], np.float64).reshape(-1, 4),
           'angle': np.array([r.angle for r in results], np.float64)},
          len(results) / max(seconds, 1e-9))


def _compare(model, pairs_ab, truth, kinds, baseline, batch_size) -> dict[str, Any]:
  """The network, the network with alignment, and the baseline on the same pairs."""
  out: dict[str, Any] = {}
  for name, align in (('network', False), ('aligned', True)):
    start = time.perf_counter()
    results = inference.predict_pairs(pairs_ab, model=model, batch_size=batch_size, align=align)
    out[f'{name}_pairs_per_second'] = len(results) / (time.perf_counter() - start)
    out[name] = _with_kinds(_predictions(results), truth, kinds)
  if baseline == 'sift':
    pred, rate = _sift_predictions(pairs_ab)
    out['sift'], out['sift_pairs_per_second'] = _with_kinds(pred, truth, kinds), rate
  elif baseline is not None:
    raise ValueError(f"unknown baseline {baseline!r}; the one there is: 'sift'")
  return out


def evaluate_real(model: inference.Model, *, baseline: str | None = None, seed: int = 0,
                  generated: int = 128, aligned_size: int = 256, batch_size: int = 32,
                  max_photos: int | None = None,
                  photo_dirs: Sequence[str] | None = None) -> dict[str, Any]:
  """The yardstick's pairs, both ways of making them; see the module docstring. `photo_dirs`:
  the pairs made from your own photos there instead (`yardstick.own_photos`, `max_photos` of
  them spread over the folders, `yardstick.OWN_PHOTOS` unless given); the files that cannot
  be read are listed in the report's `skipped`."""
  from cropjax.data import pairs as pair_data
  from cropjax.datasets import yardstick
  from PIL import Image
  skipped: list[tuple[str, str]] = []
  if photo_dirs:
    photos, skipped = yardstick.own_photos(photo_dirs, max_photos or yardstick.OWN_PHOTOS)
    source = 'photos in ' + ', '.join(map(str, photo_dirs))
  else:
    photos = yardstick.photos()[:max_photos]
    source = 'the real-photo yardstick (cropjax/datasets/yardstick.py)'
  user = yardstick.user_pairs(photos, seed=seed)
  size = {p.name: p.original_size for p in user}
  truth = {
      'is_pair': np.array([p.is_pair for p in user], np.int32),
      'is_swapped': np.array([p.original == 'b' for p in user], np.int32),
      'box': np.array([[p.box[0] / size[p.name][0], p.box[1] / size[p.name][1],
                        p.box[2] / size[p.name][0], p.box[3] / size[p.name][1]] for p in user]),
      'angle': np.array([p.angle for p in user], np.float64),
      'kind': np.array([yardstick.KINDS.index(p.kind) for p in user], np.int32),
      'original_size': np.array([size[p.name] for p in user], np.float64)}
  report: dict[str, Any] = {
      'task': 'pairs', 'data': 'real', 'model': repr(model), 'photos': len(photos),
      'source': source, 'skipped': [list(s) for s in skipped], 'seed': seed,
      'user_pairs': _compare(model, yardstick.Decoded(user), truth, yardstick.KINDS,
                             baseline, batch_size)}
  if generated:
    import io
    encoded = []
    for _, im in photos:
      buf = io.BytesIO()
      im.save(buf, 'JPEG', quality=95)
      encoded.append(buf.getvalue())
    c = model.config
    options = {**c.data.pair_options.to_dict(), 'max_source_side': 0}
    kw = dict(batch_size=min(generated, 64), seed=seed, split='evaluation',
              num_batches=max(1, -(-generated // 64)), **options)
    big = _collect(pair_data.dataset(encoded, image_size=max(aligned_size, model.image_size), **kw))
    labels = {k: v for k, v in big.items() if k != 'image'}
    pairs_ab = [pair_data.to_pil(big, i)[:2] for i in range(len(big['image']))]
    report['generated_pairs'] = _compare(model, pairs_ab, labels, pair_data.KINDS, baseline,
                                         batch_size)
    report['generated_size'] = max(aligned_size, model.image_size)
  return report


def _collect(ds) -> dict[str, np.ndarray]:
  batches = list(ds.as_numpy_iterator())
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _clip_polygon(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
  """Sutherland-Hodgman: the part of polygon `subject` [n, 2] inside convex `clip` [m, 2]."""
  out = subject
  orientation = np.sign(_area(clip)) or 1.0
  for a, b in zip(clip, np.roll(clip, -1, 0)):
    if len(out) == 0:
      break
    edge = b - a
    side = orientation * (edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0]))
    points = []
    for i in range(len(out)):
      j = (i + 1) % len(out)
      if side[i] >= 0:
        points.append(out[i])
      if (side[i] >= 0) != (side[j] >= 0):
        t = side[i] / (side[i] - side[j])
        points.append(out[i] + t * (out[j] - out[i]))
    out = np.array(points).reshape(-1, 2)
  return out


def _area(polygon: np.ndarray) -> float:
  """Signed area (shoelace) of a polygon [n, 2]."""
  if len(polygon) < 3:
    return 0.0
  x, y = polygon[:, 0], polygon[:, 1]
  return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def turned_iou(a: np.ndarray, a_angle: float, b: np.ndarray, b_angle: float,
               width: float, height: float) -> float:
  """IoU of two turned crops (unturned rectangles in fractions + angles), as polygons in pixels."""
  from cropjax import metadata
  pa = np.array(metadata.corners(metadata.Crop(*map(float, a), angle=float(a_angle)), width, height))
  pb = np.array(metadata.corners(metadata.Crop(*map(float, b), angle=float(b_angle)), width, height))
  inter = abs(_area(_clip_polygon(pa, pb)))
  union = abs(_area(pa)) + abs(_area(pb)) - inter
  return inter / union if union > 0 else 0.0


def crop_metrics(pred: np.ndarray, pred_angle: np.ndarray, truth: np.ndarray,
                 truth_angle: np.ndarray, sizes: np.ndarray | None = None) -> dict[str, float]:
  """IoU and boundary error of the unturned rectangles, the angle error's distribution, and
  with the photos' `sizes` [n, 2] (width, height) the IoU of the turned crops as polygons."""
  iou = box_iou(pred, truth)
  bde = np.abs(pred - truth).mean(-1)
  angle = np.abs(pred_angle - truth_angle)
  turned = np.abs(truth_angle) > 1e-6
  out = {'iou_mean': float(iou.mean()), 'iou_median': float(np.median(iou)),
         'boundary_error_mean': float(bde.mean()), 'angle_error_mean': float(angle.mean()),
         'angle_error_median': float(np.median(angle)),
         'angle_error_p90': float(np.percentile(angle, 90)),
         'angle_error_median_turned': float(np.median(angle[turned])) if turned.any() else float('nan')}
  if sizes is not None:
    polygon = np.array([turned_iou(p, pa, t, ta, w, h) for p, pa, t, ta, (w, h)
                        in zip(pred, pred_angle, truth, truth_angle, sizes)])
    out.update(turned_iou_mean=float(polygon.mean()), turned_iou_median=float(np.median(polygon)))
  return out


def evaluate_crops(model: inference.Model, *, source: str | None = None,
                   split: str | None = None, batch_size: int = 32) -> dict[str, Any]:
  """The auto-crop model and the trivial baselines on the validation photos."""
  import io

  from PIL import Image

  from cropjax.data import autocrop
  c = model.config
  source = source or c.data.source
  split = split or c.data.eval_split
  data_dir = c.data.data_dir or None
  records = autocrop.load_records(source, split, data_dir)
  train_crops = np.array([r[1] for r in autocrop.load_records(source, 'train', data_dir)])
  images = [Image.open(io.BytesIO(r[0])) for r in records]
  truth = np.array([r[1] for r in records], np.float64)
  truth_angle = np.array([r[2] for r in records], np.float64)
  sizes = np.array([im.size for im in images], np.float64)
  methods, rates = {}, {}
  for name, straighten in (('network', False), ('straightened', True)):
    start = time.perf_counter()
    preds = inference.predict_crops(images, model=model, batch_size=batch_size,
                                    straighten=straighten)
    rates[f'{name}_photos_per_second'] = len(preds) / max(time.perf_counter() - start, 1e-9)
    methods[name] = crop_metrics(np.array([p.fraction for p in preds]).reshape(-1, 4),
                                 np.array([p.angle for p in preds]), truth, truth_angle, sizes)
  w, h = (train_crops[:, 2] - train_crops[:, 0]).mean(), (train_crops[:, 3] - train_crops[:, 1]).mean()
  n = len(records)
  centre = np.tile([(1 - w) / 2, (1 - h) / 2, (1 + w) / 2, (1 + h) / 2], (n, 1))
  zeros = np.zeros(n)
  return {
      'task': 'autocrop', 'model': repr(model), 'source': source, 'split': split, 'photos': n,
      'turned_photos': int((np.abs(truth_angle) > 1e-6).sum()),
      **methods,
      'full_frame': crop_metrics(np.tile([0.0, 0.0, 1.0, 1.0], (n, 1)), zeros, truth, truth_angle,
                                 sizes),
      'centre_crop': crop_metrics(centre, zeros, truth, truth_angle, sizes),
      **rates,
  }


def _pair_table(title: str, part: dict[str, Any]) -> list[str]:
  methods = [m for m in ('network', 'aligned', 'sift') if m in part]
  lines = [title, f'{"kind":<16}{"metric":<26}' + ''.join(f'{m:>12}' for m in methods)]
  for kind, metrics in part['network'].items():
    lines.append(f'{kind:<16}{"examples":<26}' + f'{metrics["examples"]:>12d}')
    for k in metrics:
      if k == 'examples':
        continue
      lines.append(f'{kind:<16}{k:<26}' + ''.join(f'{part[m][kind].get(k, float("nan")):>12.4f}'
                                                 for m in methods))
    lines.append('')
  lines.append('pairs/s: ' + ', '.join(f'{m} {part[m + "_pairs_per_second"]:.1f}'
                                      for m in methods))
  return lines


def format_table(report: dict[str, Any]) -> str:
  """The report as a plain-text table, methods side by side."""
  if report.get('data') == 'real':
    lines = _pair_table(f'crop pairs made as people make them, from {report["photos"]} '
                        f'photos: {report["source"]} (seed {report["seed"]})',
                        report['user_pairs'])
    if 'generated_pairs' in report:
      lines += [''] + _pair_table(
          f'crop pairs from the generator on the same photos ({report["generated_size"]} px; '
          'the network sees them at its own size)', report['generated_pairs'])
    return '\n'.join(lines)
  if report['task'] == 'autocrop':
    methods = [m for m in ('network', 'straightened', 'full_frame', 'centre_crop') if m in report]
    keys = list(report[methods[0]])
    lines = [f'auto-crop, {report["photos"]} {report["split"]} photos of {report["source"]} '
             f'({report.get("turned_photos", "?")} of them turned)',
             f'{"metric":<22}' + ''.join(f'{m:>14}' for m in methods)]
    lines += [f'{k:<22}' + ''.join(f'{report[m][k]:>14.4f}' for m in methods) for k in keys]
    rates = [f'{m} {report[m + "_photos_per_second"]:.1f}' for m in methods
             if m + '_photos_per_second' in report]
    if rates:
      lines.append('photos/s: ' + ', '.join(rates))
    return '\n'.join(lines)
  methods = ['network'] + (['sift'] if 'sift' in report else [])
  lines = [f'crop pairs, {report["network"]["all"]["examples"]} {report["split"]} pairs of '
           f'{report["source"]} (network at {report["image_size"]} px'
           + (f', SIFT at {report["sift_size"]} px)' if 'sift' in report else ')')]
  header = f'{"kind":<12}{"metric":<26}' + ''.join(f'{m:>12}' for m in methods)
  lines.append(header)
  for kind, metrics in report['network'].items():
    for k, v in metrics.items():
      if k == 'examples':
        continue
      row = f'{kind:<12}{k:<26}' + ''.join(f'{report[m][kind].get(k, float("nan")):>12.4f}'
                                          for m in methods)
      lines.append(row)
    lines.append('')
  lines.append('pairs/s: ' + ', '.join(f'{m} {report[m + "_pairs_per_second"]:.1f}'
                                      for m in methods))
  return '\n'.join(lines)
