"""The two problems cropjax trains, behind one interface the training loop uses.

* `pairs`: is B a crop of A (or A of B), which is the original, where is the
  crop (`cropjax.heads.PairModel` on the 6-channel stacked pair, or, with
  config.model.pair_head = 'match', `MatchingPairModel`: a 3-channel trunk over
  each image and search by correlation);
* `autocrop`: the crop a photographer would choose for a photo
  (`cropjax.heads.CropModel` on 3 channels).

A task says how many input channels its backbone takes, builds its model,
computes its loss and metrics, reads its data and draws validation images.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cropjax import heads
from cropjax import models


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  in_channels: int
  best_metric: str                    # validation metric that picks the best checkpoint
  make_model: Callable[[models.ResNet, Any], Any]
  loss: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]   # (out, batch, weights, config)
  metrics: Callable[[dict, dict], dict[str, jax.Array]]
  datasets: Callable[[Any, int], tuple[Any, Any]]                 # (config, start_step)
  draw: Callable[[dict, dict], np.ndarray]                        # (batch, outputs) -> images
  image_summary: str
  # config -> the backbone's options (`cropjax.models.ResNet` fields: in_channels, outputs)
  backbone: Callable[[Any], dict[str, Any]] = lambda config: {'in_channels': 3}


PAIR_HEADS = ('fusion', 'match')


def _choice(config, key: str, choices: tuple[str, ...]) -> str:
  """config.model[key], one of `choices` (the first when unset, as in older workdirs)."""
  value = config.model.get(key, choices[0])
  if value not in choices:
    raise ValueError(f'config.model.{key}: {value!r}, use one of {choices}')
  return value


def pair_head(config) -> str:
  """'fusion' (the seed's early fusion, the default) or 'match' (siamese, by search)."""
  return _choice(config, 'pair_head', PAIR_HEADS)


def box_iou(a: jax.Array, b: jax.Array) -> jax.Array:
  """IoU of (..., 4) boxes (x0, y0, x1, y1)."""
  inter_wh = jnp.clip(jnp.minimum(a[..., 2:], b[..., 2:]) - jnp.maximum(a[..., :2], b[..., :2]), 0)
  inter = inter_wh[..., 0] * inter_wh[..., 1]
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  return inter / jnp.maximum(area(a) + area(b) - inter, 1e-9)


# ------------------------------------------------------------------ crop pairs


def pair_metrics(out, batch) -> dict[str, jax.Array]:
  pos = batch['is_pair'].astype(jnp.float32)
  n_pos = jnp.maximum(pos.sum(), 1.0)
  iou = box_iou(out['box'], batch['box'])
  tl_err = jnp.linalg.norm(out['box'][:, :2] - batch['box'][:, :2], axis=-1)
  return {
      'pair_accuracy': jnp.mean(jnp.argmax(out['is_pair'], -1) == batch['is_pair']),
      'swap_accuracy': ((jnp.argmax(out['is_swapped'], -1) == batch['is_swapped']) * pos).sum() / n_pos,
      'top_left_error': (tl_err * pos).sum() / n_pos,
      'box_iou': (iou * pos).sum() / n_pos,
  }


def data_threads(config) -> int:
  """tf.data threads for training: `config.data.threads`, or with 0 (auto) one per four
  cores (at least one) where the step runs on the CPU, and tf.data's own pool elsewhere."""
  threads = config.data.get('threads', 0)
  if threads < 0:
    raise ValueError(f'config.data.threads must be 0 (auto) or positive, got {threads}')
  if threads or jax.default_backend() != 'cpu':
    return threads
  return max(1, (os.cpu_count() or 1) // 4)


def _data_options(config, start_step: int) -> dict[str, Any]:
  return dict(image_size=config.image_size, batch_size=config.batch_size // jax.process_count(),
              seed=config.seed, shard_index=jax.process_index(),
              shard_count=jax.process_count(), data_dir=config.data.data_dir or None,
              threads=data_threads(config))


def pair_datasets(config, start_step: int):
  from cropjax.data import pairs
  common = dict(_data_options(config, start_step), max_images=config.data.max_images or None,
                **config.data.pair_options.to_dict())
  train = pairs.dataset(config.data.source, split='train', start_step=start_step, **common)
  val = pairs.dataset(config.data.source, split=config.data.eval_split,
                      num_batches=config.eval_batches, **common)
  return train, val


def draw_pairs(batch, outputs, count: int = 8) -> np.ndarray:
  """Validation pairs side by side, the original with the true (green) and predicted (red) box."""
  predicted = np.asarray(outputs['box'])
  count = min(count, len(batch['image']))
  rows = []
  for i in range(count):
    img = np.asarray(batch['image'][i])
    a, b = img[..., :3].copy(), img[..., 3:].copy()
    original = b if batch['is_swapped'][i] else a
    # Boxes are fractions of the original, which may fill only part of its square.
    extent = np.ones(4)
    if 'extent' in batch:
      extent = np.tile(np.asarray(batch['extent'][i]).reshape(2, 2)[batch['is_swapped'][i]], 2)
    if batch['is_pair'][i]:
      rectangle(original, batch['box'][i] * extent, (0, 255, 0))
    rectangle(original, predicted[i] * extent, (255, 0, 0))
    rows.append(np.concatenate([a, np.zeros((a.shape[0], 2, 3), np.uint8), b], axis=1))
  return np.stack(rows)


PAIRS = Task(
    name='pairs', in_channels=6, best_metric='val_pair_accuracy',
    make_model=lambda backbone, config: (heads.MatchingPairModel(backbone)
                                         if pair_head(config) == 'match' else
                                         heads.PairModel(backbone)),
    loss=lambda out, batch, weights, config: heads.pair_loss(out, batch, weights),
    metrics=pair_metrics, datasets=pair_datasets, draw=draw_pairs, image_summary='val_pairs',
    backbone=lambda config: ({'in_channels': 3, 'outputs': (2, 3)}
                             if pair_head(config) == 'match' else {'in_channels': 6}))


# ------------------------------------------------------------------ auto-crop


CROP_HEADS = ('pooled', 'edges', 'inside')


def crop_head(config) -> str:
  """'pooled' (the box regressed from the pooled last map), 'edges' (`heads.EdgeHead`) or
  'inside' (the edge head that also maps which positions lie in the crop)."""
  return _choice(config, 'crop_head', CROP_HEADS)


def crop_levels(config) -> tuple[int, ...]:
  """The backbone stages the edge head merges, finest first, ending with the last (4)."""
  levels = tuple(int(v) for v in config.model.get('crop_levels', (2, 4)))
  if not levels or list(levels) != sorted(set(levels)) or levels[0] < 1 or levels[-1] != 4:
    raise ValueError(f'config.model.crop_levels: {levels!r}, use increasing stages from 1-4 '
                     'ending with 4, e.g. (1, 2, 4)')
  return levels


def crop_metrics(out, batch) -> dict[str, jax.Array]:
  """IoU of the unrotated crop rectangles, boundary displacement (mean |edge error|), angle error."""
  return {
      'crop_iou': box_iou(out['crop'], batch['crop']).mean(),
      'boundary_error': jnp.abs(out['crop'] - batch['crop']).mean(),
      'angle_error': jnp.abs(out['angle'] - batch['angle']).mean(),
      'angle_error_median': jnp.median(jnp.abs(out['angle'] - batch['angle'])),
  }


def crop_datasets(config, start_step: int):
  from cropjax.data import autocrop
  common = dict(_data_options(config, start_step), **config.data.autocrop_options.to_dict())
  train = autocrop.dataset(config.data.source, split='train', start_step=start_step, **common)
  val = autocrop.dataset(config.data.source, split=config.data.eval_split,
                         num_batches=config.eval_batches, **common)
  return train, val


def draw_crops(batch, outputs, count: int = 8) -> np.ndarray:
  """Validation photos with the photographer's crop (green) and the predicted one (red); with
  an `inside` map (crop head 'inside'), the map beside each photo (white: in the crop)."""
  count = min(count, len(batch['image']))
  rows = []
  for i in range(count):
    img = np.asarray(batch['image'][i]).copy()
    rotated_rectangle(img, batch['crop'][i], float(batch['angle'][i]), (0, 255, 0))
    rotated_rectangle(img, np.asarray(outputs['crop'][i]), float(outputs['angle'][i]), (255, 0, 0))
    if 'inside' in outputs:
      p = 0.5 + 0.5 * np.tanh(np.asarray(outputs['inside'][i], np.float32) / 2)  # sigmoid, no overflow
      rows_, cols = -(-img.shape[0] // p.shape[0]), -(-img.shape[1] // p.shape[1])
      p = np.repeat(np.repeat(p, rows_, 0), cols, 1)[:img.shape[0], :img.shape[1]]
      img = np.concatenate([img, np.repeat(np.round(p * 255).astype(img.dtype)[..., None], 3, -1)], 1)
    rows.append(img)
  return np.stack(rows)


AUTOCROP = Task(
    name='autocrop', in_channels=3, best_metric='val_crop_iou',
    make_model=lambda backbone, config: heads.CropModel(backbone, max_angle=config.max_angle,
                                                        angle_bins=config.get('angle_bins', 0),
                                                        crop_head=crop_head(config)),
    loss=lambda out, batch, weights, config: heads.crop_loss(out, batch, weights, config.max_angle),
    metrics=crop_metrics, datasets=crop_datasets, draw=draw_crops, image_summary='val_crops',
    backbone=lambda config: ({'in_channels': 3, 'outputs': crop_levels(config)}
                             if crop_head(config) != 'pooled' else {'in_channels': 3}))

TASKS = {t.name: t for t in (PAIRS, AUTOCROP)}


def get(name: str) -> Task:
  if name not in TASKS:
    raise ValueError(f'unknown task {name!r}; choose from {sorted(TASKS)}')
  return TASKS[name]


# ------------------------------------------------------------------ drawing


def rectangle(img: np.ndarray, box, colour) -> None:
  """Draws the axis-aligned box (fractions x0, y0, x1, y1) into `img` in place."""
  rotated_rectangle(img, box, 0.0, colour)


def rotated_rectangle(img: np.ndarray, box, angle: float, colour) -> None:
  """Draws the rectangle `box` (fractions) turned by `angle` degrees about its centre, in place.

  The angle follows Lightroom (and `cropjax.metadata`): pixel space, y down.
  """
  from PIL import Image, ImageDraw

  from cropjax import metadata
  h, w = img.shape[:2]
  crop = metadata.Crop(*(float(v) for v in box), angle=float(angle))
  corners = [(min(max(x, 0), w - 1), min(max(y, 0), h - 1))
             for x, y in metadata.corners(crop, w, h)]
  pil = Image.fromarray(img)
  ImageDraw.Draw(pil).polygon(corners, outline=tuple(int(v) for v in colour))
  img[...] = np.asarray(pil)
