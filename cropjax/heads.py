"""Task heads on a ResNet backbone, with bounded box regression, and their losses.

The pair model is the seed's early fusion: the two images stacked into 6
channels go through one backbone whose average-pooled features feed three
heads, replacing torchvision's avgpool + fc:

* `is_pair`:    2 logits (not a crop pair / crop pair);
* `is_swapped`: 2 logits (first image is the original / the crop comes first);
* `box`:        (x0, y0, x1, y1) of the crop inside the original, fractions.

The auto-crop model is a backbone over one photo (3 channels) with a crop
head: `crop` (left, top, right, bottom) in fractions of the input, and `angle`
in degrees, `max_angle * tanh(.)`, so never beyond +-max_angle.

The box heads cannot leave the frame or invert: per axis they predict three
logits whose softmax is (margin before, size, margin after), so
0 < x0 < x1 < 1 by construction.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cropjax import models


def bounded_box(logits: jax.Array) -> jax.Array:
  """(..., 6) logits -> (..., 4) boxes (x0, y0, x1, y1) with 0 < x0 < x1 < 1, same for y."""
  parts = jax.nn.softmax(jnp.reshape(logits, (*logits.shape[:-1], 2, 3)).astype(jnp.float32), -1)
  start = parts[..., 0]                # (..., 2): x0, y0
  end = jnp.minimum(start + parts[..., 1], 1.0)  # x1, y1; the min only absorbs rounding
  return jnp.concatenate([start, end], axis=-1)


class PairModel(nn.Module):
  """Backbone over the stacked pair + is_pair, is_swapped and box heads."""
  backbone: models.ResNet

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               backbone_train: bool | None = None) -> dict[str, jax.Array]:
    """`backbone_train=False` freezes the backbone: inference-mode BatchNorm, no gradient."""
    backbone_train = train if backbone_train is None else backbone_train
    features = self.backbone(images, train=backbone_train)  # (B, h, w, C), no pooling
    if not backbone_train:
      features = jax.lax.stop_gradient(features)
    pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
    dense = lambda n, name: nn.Dense(n, dtype=jnp.float32, name=name)
    return {
        'is_pair': dense(2, 'is_pair')(pooled),
        'is_swapped': dense(2, 'is_swapped')(pooled),
        'box': bounded_box(dense(6, 'box')(pooled)),
    }


class CropModel(nn.Module):
  """Backbone over one photo + crop head: `crop` (bounded box) and `angle` (degrees)."""
  backbone: models.ResNet
  max_angle: float = 45.0

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               backbone_train: bool | None = None) -> dict[str, jax.Array]:
    backbone_train = train if backbone_train is None else backbone_train
    features = self.backbone(images, train=backbone_train)
    if not backbone_train:
      features = jax.lax.stop_gradient(features)
    pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
    angle = nn.Dense(1, dtype=jnp.float32, name='angle')(pooled)[:, 0]
    return {
        'crop': bounded_box(nn.Dense(6, dtype=jnp.float32, name='crop')(pooled)),
        'angle': self.max_angle * jnp.tanh(angle),
    }


def giou(a: jax.Array, b: jax.Array) -> jax.Array:
  """Generalised IoU of (..., 4) boxes (x0, y0, x1, y1); both must be valid."""
  inter_wh = jnp.clip(jnp.minimum(a[..., 2:], b[..., 2:]) - jnp.maximum(a[..., :2], b[..., :2]), 0)
  inter = inter_wh[..., 0] * inter_wh[..., 1]
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  union = area(a) + area(b) - inter
  hull_wh = jnp.maximum(a[..., 2:], b[..., 2:]) - jnp.minimum(a[..., :2], b[..., :2])
  hull = hull_wh[..., 0] * hull_wh[..., 1]
  iou = inter / jnp.maximum(union, 1e-9)
  return iou - (hull - union) / jnp.maximum(hull, 1e-9)


def pair_loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
              weights: Any = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy for is_pair; swap and box (L1 + GIoU) losses on positives only."""
  w = {'is_pair': 1.0, 'is_swapped': 1.0, 'l1': 5.0, 'giou': 2.0, **dict(weights or {})}
  is_pair = batch['is_pair'].astype(jnp.int32)
  pos = is_pair.astype(jnp.float32)
  n_pos = jnp.maximum(pos.sum(), 1.0)
  ce = optax.softmax_cross_entropy_with_integer_labels
  terms = {
      'is_pair': ce(outputs['is_pair'], is_pair).mean(),
      'is_swapped': (ce(outputs['is_swapped'], batch['is_swapped'].astype(jnp.int32)) * pos).sum() / n_pos,
      'l1': (jnp.abs(outputs['box'] - batch['box']).mean(-1) * pos).sum() / n_pos,
      'giou': ((1.0 - giou(outputs['box'], batch['box'])) * pos).sum() / n_pos,
  }
  total = sum(w[k] * v for k, v in terms.items())
  return total, terms


def crop_loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array],
              weights: Any = None, max_angle: float = 45.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L1 + GIoU on the crop; L1 on the angle as a fraction of `max_angle`."""
  w = {'l1': 5.0, 'giou': 2.0, 'angle': 1.0, **dict(weights or {})}
  terms = {
      'l1': jnp.abs(outputs['crop'] - batch['crop']).mean(-1).mean(),
      'giou': (1.0 - giou(outputs['crop'], batch['crop'])).mean(),
      'angle': jnp.abs(outputs['angle'] - batch['angle']).mean() / max_angle,
  }
  total = sum(w[k] * v for k, v in terms.items())
  return total, terms
