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

Auto-crop (`evaluate_crops`): the validation photos of the annotated dataset;
IoU of the unturned crop rectangles, boundary displacement error (mean
absolute edge error, fractions of the photo's width / height), angle error
(degrees), next to two trivial baselines: the full frame, and a centred crop of
the training crops' mean size.
"""

from __future__ import annotations

import time
from typing import Any

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
  return out


def _with_kinds(pred, truth) -> dict[str, Any]:
  from cropjax.data import pairs
  result = {'all': pair_metrics(pred, truth)}
  for k, name in enumerate(pairs.KINDS):
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
  out = model.forward(truth['image'], batch_size)
  seconds = time.perf_counter() - start
  prob = _softmax(out['is_pair'])[:, 1]
  net = {'is_pair': prob > 0.5, 'score': prob,
         'is_swapped': _softmax(out['is_swapped'])[:, 1] > 0.5, 'box': out['box']}
  labels = {k: v for k, v in truth.items() if k != 'image'}
  report = {'task': 'pairs', 'model': repr(model), 'source': source, 'split': kw['split'],
            'image_size': model.image_size, 'network': _with_kinds(net, labels),
            'network_pairs_per_second': len(prob) / seconds}
  if baseline == 'sift':
    from cropjax import sift
    size = max(sift_size, model.image_size)
    big = _collect(pairs.dataset(source, image_size=size, **kw)) if size != model.image_size else truth
    if not (np.array_equal(big['kind'], truth['kind'])
            and np.allclose(big['box'], truth['box'], atol=1e-5)):
      raise RuntimeError('the pair generator gave different labels at another size')
    start = time.perf_counter()
    results = [sift.match_pair(im[..., :3], im[..., 3:]) for im in big['image']]
    seconds = time.perf_counter() - start
    sift_pred = {'is_pair': np.array([r.is_pair for r in results]),
                 'score': np.array([r.score for r in results]),
                 'is_swapped': np.array([r.original == 'b' for r in results]),
                 'box': np.array([r.box for r in results])}
    report['sift'] = _with_kinds(sift_pred, labels)
    report['sift_pairs_per_second'] = len(results) / seconds
    report['sift_size'] = size
  elif baseline is not None:
    raise ValueError(f"unknown baseline {baseline!r}; the one there is: 'sift'")
  return report


def _collect(ds) -> dict[str, np.ndarray]:
  batches = list(ds.as_numpy_iterator())
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _softmax(logits: np.ndarray) -> np.ndarray:
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def crop_metrics(pred: np.ndarray, pred_angle: np.ndarray, truth: np.ndarray,
                 truth_angle: np.ndarray) -> dict[str, float]:
  iou = box_iou(pred, truth)
  bde = np.abs(pred - truth).mean(-1)
  angle = np.abs(pred_angle - truth_angle)
  return {'iou_mean': float(iou.mean()), 'iou_median': float(np.median(iou)),
          'boundary_error_mean': float(bde.mean()), 'angle_error_mean': float(angle.mean())}


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
  start = time.perf_counter()
  preds = inference.predict_crops(images, model=model, batch_size=batch_size)
  seconds = time.perf_counter() - start
  box = np.array([p.fraction for p in preds])
  angle = np.array([p.angle for p in preds])
  w, h = (train_crops[:, 2] - train_crops[:, 0]).mean(), (train_crops[:, 3] - train_crops[:, 1]).mean()
  n = len(records)
  centre = np.tile([(1 - w) / 2, (1 - h) / 2, (1 + w) / 2, (1 + h) / 2], (n, 1))
  zeros = np.zeros(n)
  return {
      'task': 'autocrop', 'model': repr(model), 'source': source, 'split': split, 'photos': n,
      'network': crop_metrics(box, angle, truth, truth_angle),
      'full_frame': crop_metrics(np.tile([0.0, 0.0, 1.0, 1.0], (n, 1)), zeros, truth, truth_angle),
      'centre_crop': crop_metrics(centre, zeros, truth, truth_angle),
      'network_photos_per_second': n / seconds,
  }


def format_table(report: dict[str, Any]) -> str:
  """The report as a plain-text table, methods side by side."""
  if report['task'] == 'autocrop':
    methods = ['network', 'full_frame', 'centre_crop']
    keys = list(report['network'])
    lines = [f'auto-crop, {report["photos"]} {report["split"]} photos of {report["source"]}',
             f'{"metric":<22}' + ''.join(f'{m:>14}' for m in methods)]
    lines += [f'{k:<22}' + ''.join(f'{report[m][k]:>14.4f}' for m in methods) for k in keys]
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
