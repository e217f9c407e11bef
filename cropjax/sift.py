"""The classical baseline for crop pairs: OpenCV SIFT, ratio test, RANSAC similarity fit.

    result = cropjax.sift.match_pair(image_a, image_b)   # uint8 RGB arrays

It answers what the network answers: a pair decision (enough RANSAC inliers,
and the mapped image lies inside the other), which image is the original (the
one the other maps into, covering less than its frame), and the crop's box in it (the
other image's frame mapped by the similarity: its unturned box about the mapped centre, and
its turn as `angle`, degrees with Lightroom's sign as `cropjax.metadata`'s). When no similarity can be
fitted the box is the full frame and the original 'a', so its box metrics are
comparable with the network's, which always answers.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np


@dataclasses.dataclass(frozen=True)
class SiftResult:
  is_pair: bool
  score: float          # inliers (0 when the mapped box leaves the frame): the pair score
  inliers: int
  original: str         # 'a' or 'b'
  box: tuple[float, float, float, float]  # fractions of the original (unturned)
  angle: float = 0.0    # degrees the crop is turned in the original (positive: clockwise)


@functools.lru_cache(maxsize=1)
def _sift():
  import cv2
  return cv2.SIFT_create()


def _gray(image: np.ndarray, max_side: int) -> np.ndarray:
  import cv2
  g = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
  scale = max_side / max(g.shape)
  if scale < 1:
    g = cv2.resize(g, (max(1, round(g.shape[1] * scale)), max(1, round(g.shape[0] * scale))),
                   interpolation=cv2.INTER_AREA)
  return g


def match_pair(a: np.ndarray, b: np.ndarray, *, ratio: float = 0.75, min_inliers: int = 10,
               tolerance: float = 0.05, max_side: int = 512) -> SiftResult:
  """SIFT + Lowe's ratio test + RANSAC similarity fit of B onto A (see the module docstring)."""
  import cv2
  sift = _sift()
  return match_features(features(_gray(a, max_side), sift), features(_gray(b, max_side), sift),
                        cv2.NORM_L2, ratio=ratio, min_inliers=min_inliers, tolerance=tolerance)


def features(grey: np.ndarray, detector) -> tuple:
  """(keypoints, descriptors, (h, w)) of a grey uint8 image by any OpenCV keypoint detector
  (SIFT; ORB for `cropjax.matching.verify.propose`): what `match_features` compares, so an image
  in several pairs can be described once. An image under 2 pixels a side (a long strip
  reduced to `max_side`) has none: OpenCV's ORB fails on it rather than finding none."""
  if min(grey.shape[:2]) < 2:
    return (), None, grey.shape
  return (*detector.detectAndCompute(grey, None), grey.shape)


def match_features(fa: tuple, fb: tuple, norm: int, *, ratio: float = 0.75,
                   min_inliers: int = 10, tolerance: float = 0.05) -> SiftResult:
  """`match_pair` from each image's `features` and their descriptors' norm (SIFT's L2; ORB's
  Hamming): Lowe's ratio test, a RANSAC similarity of B onto A, and the box of the image that
  maps into the other."""
  import cv2
  (ka, da, (ah, aw)), (kb, db, (bh, bw)) = fa, fb
  none = SiftResult(False, 0.0, 0, 'a', (0.0, 0.0, 1.0, 1.0))
  if da is None or db is None or len(ka) < 2 or len(kb) < 2:
    return none
  matches = cv2.BFMatcher(norm).knnMatch(db, da, k=2)
  good = [m[0] for m in matches if len(m) == 2 and m[0].distance < ratio * m[1].distance]
  if len(good) < 3:
    return none
  pb = np.float32([kb[m.queryIdx].pt for m in good])
  pa = np.float32([ka[m.trainIdx].pt for m in good])
  threshold = 3.0 * max(ah, aw) / 256
  m, inliers = cv2.estimateAffinePartial2D(pb, pa, method=cv2.RANSAC,
                                           ransacReprojThreshold=threshold, maxIters=2000)
  if m is None:
    return none
  n = int(inliers.sum())
  # The share of A's frame that B covers when mapped into it; above 1, A is the crop.
  share = abs(float(np.linalg.det(m[:, :2]))) * (bh * bw) / (ah * aw)
  if share <= 1:  # B maps into A: A is the original
    original, (h, w), (dh, dw), transform = 'a', (bh, bw), (ah, aw), m
  else:
    original, (h, w), (dh, dw) = 'b', (ah, aw), (bh, bw)
    transform = cv2.invertAffineTransform(m)
  corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
  mapped = corners @ transform[:, :2].T + transform[:, 2]
  fx, fy = mapped[:, 0] / dw, mapped[:, 1] / dh
  inside = bool(fx.min() > -tolerance and fy.min() > -tolerance
                and fx.max() < 1 + tolerance and fy.max() < 1 + tolerance)
  scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
  cx, cy = mapped.mean(0)
  hw, hh = scale * w / 2, scale * h / 2
  box = tuple(float(np.clip(v, 0, 1)) for v in ((cx - hw) / dw, (cy - hh) / dh,
                                                (cx + hw) / dw, (cy + hh) / dh))
  angle = float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0])))
  return SiftResult(n >= min_inliers and inside, float(n if inside else 0), n, original, box,
                    angle)
