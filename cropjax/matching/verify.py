"""Which image contains the other, and the evidence for it, from alignment in both directions.

    ev = verify_batch([(pyramid_a, pyramid_b)], starts=[{'a': [box_in_a], 'b': []}])[0]
    ev.original, ev.alignment.box, ev.features

For each pair and each direction (B inside A, A inside B) the start boxes are
the ones given (a model's proposals, each reshaped to the would-be crop's
aspect ratio about its centre, its area kept) and the best few of a coarse search
(`search`: normalised cross-correlation of the would-be crop over the would-be
original at low resolution, over a range of sizes and a few turns, at the crop's own
aspect ratio, and once more with both images' shading undone), or, where keypoints
propose one image inside the other (`propose`: ORB, a RANSAC similarity), that place alone in
its direction and none in the other, unsearched; every start goes
through the first (coarsest) stage of `cropjax.matching.align_batch` (the search's
places may go ahead, while a network makes its boxes: `align_places`, and a
network's boxes as soon as it has them: `align_given`); the best of each direction,
and its runner-up by a fit that undoes the crop's shading (an editor's vignette or
graduated filter, `_runners_up`), go through the second, the better of the two kept.
The direction that aligns better names the original (a crop fits
inside its original under one box, while the original cannot fit inside its
crop); its angle is fitted (a straightened crop is turned about its centre:
`TURN_STAGES`; where its best start is a keypoint proposal, from that turn by the second of
them alone) and it goes through the finest stage at that angle; the other direction
keeps its second-stage one, enough to say it fits worse. The second stage's
calls run side by side on the cores; beside the angle and finest stages (on
another core) the crop mirrored left-right is aligned in the
original that fits better after the first stage (from its box there and from
that box's mirror image across the original; again in the other original
where the second stage turns the direction round): a mirrored copy of a
window fits better flipped back, even where the scene is nearly symmetric and
the copy itself fits well.
`features` summarises the evidence for the verdict model
(`cropjax.matching.verdict`).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from cropjax import threads
from cropjax.matching import alignment
from cropjax.matching.alignment import Alignment, Pyramid

# Sizes tried by `search`: the crop's area as a share of the original's.
SEARCH_AREAS = tuple(np.geomspace(0.03, 1.0, 16))
FEATURES = ('score', 'outside', 'fit', 'worst_block', 'corners_minus_centre', 'reverse_score',
            'converged', 'log_area', 'peak', 'detail', 'mirror_detail', 'mirror_score',
            'aspect')
# Added to |`Evidence.aspect`| before its log: about the median a crop's box is off
# (0.002 on validation pairs; 90 % within 0.007), so a crop's feature sits near the floor.
ASPECT_FLOOR = 0.003


@dataclasses.dataclass(frozen=True)
class Evidence:
  original: str                # 'a' or 'b': the image the other aligns into best
  alignment: Alignment         # the crop inside that original (its pixels)
  reverse: Alignment           # the best alignment the other way round (without detail)
  area: float                  # the box's share of the original's area
  mirror: Alignment | None = None  # the crop mirrored left-right, in the same original
  aspect: float = 0.0          # log of the box's aspect over the crop's: 0 for a crop (one
  #                              scale for both sides); a window partly outside, squeezed in,
  #                              or another photo fitted anyhow strays from it

  @property
  def features(self) -> np.ndarray:
    """The evidence as numbers, in the order of `FEATURES`."""
    k = alignment.BLOCKS
    a, blocks = self.alignment, np.asarray(self.alignment.blocks).reshape(k, k)
    m = self.mirror or a  # without the mirror check: no evidence either way
    corners = np.mean([blocks[0, 0], blocks[0, -1], blocks[-1, 0], blocks[-1, -1]])
    centre = blocks[1:-1, 1:-1].mean()
    # outside: log of the share beyond the frame (plus about what alignment's precision leaves
    # a crop that touches the edge), so 0 and 1 % differ as much as 10 and 100 %.
    return np.array([a.score, np.log(1.01 - min(a.inside, 1.0)), a.score * a.inside,
                     blocks.min(), corners - centre,
                     self.reverse.score * self.reverse.inside, float(a.converged),
                     np.log(max(self.area, 1e-4)), a.peak, a.detail,
                     m.detail - a.detail, _fit(m) - _fit(a),
                     np.log(abs(self.aspect) + ASPECT_FLOOR)], np.float64)


# How far `search` lets a box run over the original's edge, as a share of the box's size.
OVERHANG = 0.45
# The search's best places each direction starts from, beside the given boxes. Chosen on the
# demo's validation photos (docs/real_photos.md, "Four search starts"): 4 instead of 2 found 5
# more of 472 crops; more found none more.
SEARCH_TOP = 4
# The stages that fit the angle of the direction that fits better after the second stage (a
# straightened crop is turned about its centre), from the second stage's box at its turn (0,
# or the search's) and at 0: at 32 samples, whose reach takes in a turn of several degrees,
# then at 64; its finest stage then reads at that angle (docs/real_photos.md, "Straightened
# crops", "A turned search"). A direction whose best start is a keypoint proposal, whose turn
# RANSAC gives within a few tenths of a degree, goes through the second alone, from that turn
# (docs/real_photos.md, "A keypoint proposal's angle").
TURN_STAGES = alignment.STAGES[:2]
# The turns `search` also tries (degrees, as `Alignment.angle`): a straightened crop is turned
# by its editor's angle, and unturned the search finds turns of a few degrees only. Chosen on
# straightened crops of camera-size photos that are not the yardstick's (docs/real_photos.md,
# "A turned search"): with these two, 3-8 degrees were found 0.972 of the time and 8-15
# degrees 0.958, against 0.917 and 0.681 without; four (6 and 12 either way) gained 0.014 and
# 0.042 more for twice the cost.
SEARCH_TURNS = (-8.0, 8.0)
# The turned passes read the original at this side and try every other size of `SEARCH_AREAS`.
TURN_SIDE = 96
# `search`'s templates keep a short side of at least this many pixels: a larger crop's size is
# searched on the original halved until its template's short side is under twice this
# (`_scan`). Chosen on the demo's validation photos and the 12 camera-size wallpapers, never
# the yardstick (docs/real_photos.md, "A finer angle and a cheaper search" and "The search at a
# crop's own scale"): 16 found every crop the full 128 pixels found (and 2 more of 520) for
# 60-75 % of the search's time; 12 lost wallpaper pairs, 8 crops.
SEARCH_LEAST = 16
# Each direction's runner-up start goes through the second stage beside its best
# (`_runners_up`). Chosen on the development wallpapers (docs/real_photos.md, "Shaded crops
# placed"): vignetted crops found 0.61 -> 0.70, graduated 0.38 -> 0.46 (0.50 with
# `UNSHADED`), the other kinds unchanged.
RUNNER_UP = True
# The crop's shading undone for the search too: its best place on the log of each image less
# its blur (`_unshaded`: a Gaussian of `UNSHADED_SIGMA` pixels of the search's images), at
# every `UNSHADED`-th size, is one more start where it is a place of its own (0: none). An
# editor's vignette or graduated filter outweighs a crop's content at the search's scale;
# chosen on the development wallpapers (docs/real_photos.md, "Shaded crops placed"): a
# graduated crop's place among the search's 0.71 -> 0.95 with it (sigma 2; 4: 0.90, 8:
# 0.62); every other size found as many.
UNSHADED = 2
UNSHADED_SIGMA = 2.0
UNSHADED_FLOOR = 0.02  # added to luma (0-1) before its log: black is not minus infinity


# Keypoint proposals (`propose`): where ORB keypoints, Lowe's ratio test and a RANSAC similarity
# (the SIFT baseline's fit and settings, `cropjax.sift.match_features`) map one image into the other
# with at least this many inliers, the box and turn they give are the one place that direction
# starts from, and neither direction is searched (0: always search). ORB finds as many starts
# within 2 % of the truth as SIFT on the development wallpapers at a fifth of its time (183 and
# 180 of 336 crops; 13.8 and 66.5 ms a pair on one core), and the pairs it leaves out (flat or
# drawn content, mirrored crops, windows outside) are searched as before (docs/real_photos.md,
# "Keypoint proposals").
PROPOSAL_INLIERS = 10
PROPOSAL_SIDE = 512      # the images' long side for the keypoints
PROPOSAL_FEATURES = 1000  # ORB's keypoints an image at most
# A proposal turned less than this (degrees) starts unturned: RANSAC's turn of an unturned crop
# is a few hundredths to tenths of a degree (development wallpapers: median 0.06, 90 % within
# 0.25), noise that the first and second stages would read the crop turned by; the angle stage
# then fits any small turn from 0.
PROPOSAL_LEAST_TURN = 0.3


class Place(NamedTuple):
  """One of `search`'s places: a box (pixels of the original, unturned), its correlation (a
  keypoint proposal's: its inliers), the turn it was found at (degrees, as `Alignment.angle`),
  and whether keypoints proposed it (`propose`)."""
  box: np.ndarray
  score: float
  angle: float = 0.0
  proposed: bool = False


class Proposal(NamedTuple):
  """A keypoint proposal: the image the other maps into ('a': b inside a), and the crop's place
  in it (`Place.score`: the RANSAC inliers)."""
  original: str
  place: Place


def propose(a: Pyramid, b: Pyramid) -> Proposal | None:
  """Which image the other maps into and where, from ORB keypoints of both images at
  `PROPOSAL_SIDE` (`_keypoints`; `cropjax.sift.match_features`: ratio test, RANSAC
  similarity, the mapped frame inside the other within 5 %); None where fewer than
  `PROPOSAL_INLIERS` inliers agree, where the mapped frame leaves the other, or where it is
  turned more than an editor's crop can be (`cropjax.metadata.MAX_ANGLE`): those pairs are
  searched."""
  import cv2

  from cropjax import metadata
  from cropjax import sift
  r = sift.match_features(_keypoints(a), _keypoints(b), cv2.NORM_HAMMING,
                          min_inliers=PROPOSAL_INLIERS)
  if not r.is_pair:
    return None
  original = a if r.original == 'a' else b
  w, h = original.size
  box = np.asarray(r.box, np.float64) * [w, h, w, h]
  if min(box[2] - box[0], box[3] - box[1]) < 2 or abs(r.angle) > metadata.MAX_ANGLE:
    return None
  angle = -r.angle  # the baseline's angle is Lightroom's sign; `Place.angle` is the alignment's
  return Proposal(r.original, Place(box, float(r.inliers),
                                    angle if abs(angle) >= PROPOSAL_LEAST_TURN else 0.0, True))


def _keypoints(pyramid: Pyramid) -> tuple:
  """The image's ORB `cropjax.sift.features` at `PROPOSAL_SIDE` (its luma as uint8,
  area-averaged), made once and kept with the pyramid: an image in several pairs (a query and
  its candidates, N x M pairs) is described once, by one thread (pairs that share it are
  proposed side by side: the others wait for its keypoints instead of making them again)."""
  import cv2

  from cropjax import sift
  kept = pyramid.__dict__.setdefault('_keypoints', {})
  key = (PROPOSAL_SIDE, PROPOSAL_FEATURES)
  with pyramid.__dict__.setdefault('_keypoints_lock', threading.Lock()):
    if key not in kept:
      w, h = pyramid.size
      scale = min(1.0, PROPOSAL_SIDE / max(w, h))
      g = pyramid.levels[0] if scale == 1 else pyramid.resized(
          (max(1, round(w * scale)), max(1, round(h * scale))))
      grey = np.clip(np.rint(g * 255), 0, 255).astype(np.uint8)
      kept[key] = sift.features(grey, cv2.ORB_create(nfeatures=PROPOSAL_FEATURES))
  return kept[key]


def search(original: Pyramid, crop: Pyramid, *, side: int = 128, top: int = SEARCH_TOP,
           areas: Sequence[float] = SEARCH_AREAS,
           turns: Sequence[float] = SEARCH_TURNS) -> list[Place]:
  """The `top` best places for the crop by correlation at low resolution, best first, and
  the best place with the crop's shading undone (`UNSHADED`) where it is another.

  At each size the crop (its aspect ratio kept) is correlated with the
  original shrunk to `side` pixels across its long side (a large crop's sizes
  with the original halved, `SEARCH_LEAST`; OpenCV's `matchTemplate`,
  zero-mean normalised); one best place per size. The
  original is padded by its edge pixels, so a box may run up to `OVERHANG` of
  its size over the frame: a window cut partly beyond the original matches
  best there, where alignment can then show that part of it is not in the
  original. Then, for a straightened crop, the same at each of `turns` with
  the original turned the other way about its centre (at `TURN_SIDE`, every
  other size). Places overlapping a better one by half (whatever their turns)
  are left out.
  """
  templates: dict = {}  # the crop at each size, made once for every turn
  canvases: dict = {}  # the original at each side, halving and turn, made once
  found = _scan(original, crop, side, areas, 0.0, templates, canvases)
  for turn in turns:
    found += _scan(original, crop, min(side, TURN_SIDE), areas[1::2], turn, templates, canvases)
  found.sort(key=lambda f: -f.score)
  kept: list[Place] = []
  for place in found:  # distinct places only
    if len(kept) >= top:
      break
    if all(_iou(place.box, k.box) < 0.5 for k in kept):
      kept.append(place)
  if UNSHADED and top:  # one more start: the best place with the crop's shading undone
    shaded = _scan(original, crop, side, areas[::UNSHADED], 0.0, templates, canvases,
                   unshaded=True)
    place = max(shaded, key=lambda f: f.score, default=None)
    if place is not None and all(_iou(place.box, k.box) < 0.5 for k in kept):
      kept.append(place)
  return kept


def _unshaded(image: np.ndarray) -> np.ndarray:
  """The log of an image less its blur: a smooth change of gain (an editor's vignette or
  graduated filter) is gone from it, edges and texture kept."""
  import cv2
  log = np.log(image + np.float32(UNSHADED_FLOOR))
  return log - cv2.GaussianBlur(log, (0, 0), UNSHADED_SIGMA, borderType=cv2.BORDER_REFLECT)


def _scan(original: Pyramid, crop: Pyramid, side: int, areas: Sequence[float], turn: float,
          templates: dict, canvases: dict, unshaded: bool = False) -> list[Place]:
  """`search`'s best place at each size, on the original shrunk to `side` and turned by -`turn`
  degrees about its centre (a canvas holding all of it: its pixel q shows the original's centre
  + rot (q - the canvas's centre), rot turning by `turn` as `Alignment.angle`). A size whose
  template's short side exceeds 2 x `SEARCH_LEAST` is searched on the original halved (again
  and again) until it would not: a large crop's place needs no more pixels than a small one's.
  `templates` and `canvases` keep the crop's sizes and the original's canvases for the next
  scan of the same search; `unshaded`: both with their shading undone (`_unshaded`)."""
  import cv2
  scale = min(1.0, side / max(original.size))
  aw, ah = max(1, round(original.width * scale)), max(1, round(original.height * scale))
  aspect = crop.width / crop.height
  found = []
  for area in areas:
    tw = np.sqrt(area * aw * ah * aspect)
    th = tw / aspect
    if tw > aw or th > ah or min(tw, th) < 6:
      continue
    f = 1
    while min(tw, th) / (2 * f) >= SEARCH_LEAST:
      f *= 2
    key = (side, f, turn)
    if key not in canvases:
      canvases[key] = _canvas(original, (max(1, round(aw / f)), max(1, round(ah / f))), turn)
    if unshaded:
      if key + (True,) not in canvases:
        canvases[key + (True,)] = (_unshaded(canvases[key][0]), *canvases[key][1:])
      key += (True,)
    image, rot, centre, canvas_centre, to_original = canvases[key]
    tw, th = max(1, round(tw / f)), max(1, round(th / f))
    if (tw, th) not in templates:
      templates[tw, th] = crop.resized((tw, th))
    template = templates[tw, th]
    if unshaded:
      template = _unshaded(template)
    if alignment.spread(template) < 1e-4:
      continue
    px, py = int(OVERHANG * tw), int(OVERHANG * th)
    padded = cv2.copyMakeBorder(image, py, py, px, px, cv2.BORDER_REPLICATE)
    r = cv2.patchNaNs(cv2.matchTemplate(padded, template, cv2.TM_CCOEFF_NORMED), -1.0)
    _, best, _, (x, y) = cv2.minMaxLoc(r)
    mid = centre + rot @ (np.array([x - px + tw / 2, y - py + th / 2]) - canvas_centre)
    if not (0 <= mid[0] <= 2 * centre[0] and 0 <= mid[1] <= 2 * centre[1]):
      continue  # a turned canvas's corner, beyond the original
    half = np.array([tw, th]) / 2
    found.append(Place(np.concatenate([mid - half, mid + half]) * to_original, float(best),
                       float(turn)))
  return found


def _canvas(original: Pyramid, size: tuple[int, int], turn: float):
  """The original shrunk to `size` and turned by -`turn` degrees about its centre on a canvas
  holding all of it -> (canvas, rot, the original's centre, the canvas's centre, to original
  pixels): the canvas's pixel q shows the shrunk original's centre + rot (q - canvas centre)."""
  import cv2
  aw, ah = size
  image = original.resized((aw, ah))
  t = np.deg2rad(turn)
  rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
  centre = np.array([aw, ah]) / 2
  if turn:
    cw, ch = np.ceil(np.abs(rot).T @ [aw, ah]).astype(int)
    m = np.concatenate([rot, (centre - rot @ (np.array([cw, ch]) / 2))[:, None]], 1)
    image = cv2.warpAffine(image, m, (int(cw), int(ch)),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE)
  return (image, rot, centre, np.array(image.shape[::-1]) / 2,
          np.tile([original.width / aw, original.height / ah], 2))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
  w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = w * h
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / max(union, 1e-12)


def _at_aspect(box: np.ndarray, aspect: float) -> np.ndarray:
  """The box with the same centre and area at width / height `aspect`."""
  x0, y0, x1, y1 = box
  w = np.sqrt((x1 - x0) * (y1 - y0) * aspect)
  h = w / aspect
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _fit(a: Alignment) -> float:
  """How well an alignment fits: its correlation, counted on the share inside the frame."""
  return a.score * a.inside


def _inside(box: np.ndarray, size: tuple[int, int]) -> bool:
  w, h = size
  return bool(box[2] > max(box[0], 0) and box[3] > max(box[1], 0) and box[0] < w and box[1] < h)


def _directions(pairs: Sequence[tuple[Pyramid, Pyramid]]) -> list:
  """(pair, direction, would-be original, would-be crop) for both directions of each pair."""
  return [(i, direction, orig, crop) for i, (pa, pb) in enumerate(pairs)
          for direction, (orig, crop) in (('a', (pa, pb)), ('b', (pb, pa)))]


def search_pairs(pairs: Sequence[tuple[Pyramid, Pyramid]],
                 top: int = SEARCH_TOP) -> list[dict[str, list[Place]]]:
  """Each (a, b) pair's places, on all cores: `[i]['a']` the places of b in a, `[i]['b']` those
  of a in b. Where keypoints propose one image inside the other (`propose`), that place alone
  in its direction and none in the other; elsewhere `search` both ways round."""
  proposals = (threads.map(lambda p: propose(*p), pairs) if top and PROPOSAL_INLIERS
               else [None] * len(pairs))
  out: list[dict] = [{d: [p.place] if d == p.original else [] for d in 'ab'} if p else {}
                     for p in proposals]
  directions = [d for d in _directions(pairs) if proposals[d[0]] is None]
  found = threads.map(lambda d: search(d[2], d[3], top=top), directions)
  for (i, direction, *_), places in zip(directions, found):
    out[i][direction] = places
  return out


def _first_stage(jobs: Sequence[tuple[Pyramid, Pyramid, np.ndarray]],
                 angles: Sequence[float] | None = None) -> list[Alignment]:
  """Each (original, crop, start box) through the first (coarsest) stage of alignment, seeded,
  at its start's angle (`angles`, one a job; 0 without)."""
  return alignment.align_batch([j[0] for j in jobs], [j[1] for j in jobs], [j[2] for j in jobs],
                               angles=angles, stages=alignment.STAGES[:1], detail=False)


def align_places(pairs: Sequence[tuple[Pyramid, Pyramid]],
                 searched: Sequence[Mapping[str, Sequence]]) -> list[dict[str, list[Alignment]]]:
  """Each of `search_pairs`' places through the first (coarsest) stage of alignment, seeded:
  `[i][direction][k]` for place k. It needs no network's box, so it can run while a network
  makes its own starts (`verify_batch(..., placed=)`)."""
  jobs = [(i, direction, orig, crop, np.asarray(place.box, np.float64), place.angle)
          for i, direction, orig, crop in _directions(pairs)
          for place in searched[i][direction]]
  return _by_direction(pairs, jobs, _first_stage([j[2:5] for j in jobs], [j[5] for j in jobs]))


def _by_direction(pairs, jobs: Sequence[tuple], values: Sequence) -> list[dict[str, list]]:
  """Each job's value (jobs: (pair, direction, ...)) grouped `[i][direction]`, in order."""
  out: list[dict[str, list]] = [{'a': [], 'b': []} for _ in pairs]
  for (i, direction, *_), value in zip(jobs, values):
    out[i][direction].append(value)
  return out


def _given(pairs: Sequence[tuple[Pyramid, Pyramid]],
           starts: Sequence[Mapping[str, Sequence]] | None) -> list:
  """(pair, direction, would-be original, would-be crop, box) for each given start box that
  verification starts from: a crop keeps its shape, so a given box (a network's, whose shape
  is rough) starts at the crop's shape about its centre; reshaped about a centre beyond the
  frame, a box may leave it, so it is checked again."""
  jobs = []
  for i, direction, orig, crop in _directions(pairs):
    boxes = [np.asarray(b, np.float64) for b in (starts[i].get(direction, ()) if starts else ())]
    boxes = [_at_aspect(b, crop.width / crop.height) for b in boxes if _inside(b, orig.size)]
    jobs += [(i, direction, orig, crop, b) for b in boxes if _inside(b, orig.size)]
  return jobs


def align_given(pairs: Sequence[tuple[Pyramid, Pyramid]],
                starts: Sequence[Mapping[str, Sequence]]) -> list[dict[str, list[Alignment]]]:
  """Each given start box, as `verify_batch` starts from it, through the first (coarsest) stage
  of alignment, seeded: `[i][direction][k]` for box k that is kept. A network can run this
  for its own boxes while the search's places go through the same stage
  (`verify_batch(..., given_placed=)`)."""
  jobs = _given(pairs, starts)
  return _by_direction(pairs, jobs, _first_stage([j[2:] for j in jobs]))


def verify_batch(pairs: Sequence[tuple[Pyramid, Pyramid]],
                 starts: Sequence[Mapping[str, Sequence]] | None = None, *,
                 search_top: int = SEARCH_TOP, mirror: bool = True,
                 searched: Sequence[Mapping[str, Sequence]] | None = None,
                 placed: Sequence[Mapping[str, Sequence[Alignment]]] | None = None,
                 given_placed: Sequence[Mapping[str, Sequence[Alignment]]] | None = None
                 ) -> list[Evidence]:
  """The evidence for each (a, b) pair; `starts[i]['a']` are boxes of b in a (pixels of a), and
  `starts[i]['b']` boxes of a in b; each direction also starts from the `search_top` best places
  of `search` (`searched`: `search_pairs`' result, and `placed`: `align_places`' for it, where
  already made; `given_placed`: `align_given`'s for `starts`, likewise). `mirror=False` leaves
  out the mirrored crop's alignment."""
  if searched is None:
    searched = search_pairs(pairs, search_top)
  if placed is None:
    placed = align_places(pairs, searched)
  given_jobs = _given(pairs, starts)
  mine = _by_direction(pairs, given_jobs, given_jobs)
  if given_placed is None:
    given_placed = _by_direction(pairs, given_jobs, [None] * len(given_jobs))
  # Starts, in order: the given boxes, then the search's places not within IoU 0.7 of one
  # (a given box starts unturned: a turned place near it is a start of its own).
  jobs = []  # (pair, direction, original, crop, box, its first stage where already made)
  proposed = set()  # the jobs that start from a keypoint proposal
  for i, direction, orig, crop in _directions(pairs):
    given = [(*job, a) for job, a in zip(mine[i][direction], given_placed[i][direction])]
    kept = [(place, a) for place, a in zip(searched[i][direction], placed[i][direction])
            if place.angle or all(_iou(place.box, g[4]) < 0.7 for g in given)]
    places = [(i, direction, orig, crop, np.asarray(place.box, np.float64), a)
              for place, a in kept]
    if not given and not places:  # nothing fits (the crop would be larger than the original)
      given = [(i, direction, orig, crop, np.array([0.0, 0.0, orig.width, orig.height]), None)]
    proposed.update(len(jobs) + len(given) + n for n, (place, _) in enumerate(kept)
                    if place.proposed)
    jobs += given + places
  # Every start through the first stage; each direction's best through the second; the better
  # direction's through the last (the other keeps its second-stage alignment: enough to say it
  # fits worse).
  second, last = alignment.STAGES[1:2], alignment.STAGES[2:]
  todo = [k for k, j in enumerate(jobs) if j[5] is None]
  made = dict(zip(todo, _first_stage([jobs[k][2:5] for k in todo])))
  done = [made[k] if j[5] is None else j[5] for k, j in enumerate(jobs)]
  best: dict[tuple[int, str], tuple[int, Alignment]] = {}
  for k, ((i, direction, *_), a) in enumerate(zip(jobs, done)):
    key = (i, direction)
    if key not in best or _fit(a) > _fit(best[key][1]):
      best[key] = (k, a)
  runner = _runners_up(jobs, done, best)

  def refine(keys, stages, detail, with_angle=False, starting=None):
    """Each key's job through `stages` from its best alignment, which the result replaces;
    or from `starting` (one alignment a key), the results returned instead."""
    starts, angles = [], []
    for j, key in enumerate(keys):
      k, a = best[key]
      a = a if starting is None else starting[j]
      box = np.asarray(a.box)
      inside = _inside(box, jobs[k][2].size)
      starts.append(box if inside else jobs[k][4])
      angles.append(a.angle if inside else 0.0)
    done = alignment.align_batch([jobs[best[key][0]][2] for key in keys],
                                 [jobs[best[key][0]][3] for key in keys], starts,
                                 angles=angles, with_angle=with_angle,
                                 stages=stages, seed=False, detail=detail)
    if starting is not None:
      return done
    best.update((key, (best[key][0], a)) for key, a in zip(keys, done))

  def now():  # each direction's alignment as it stands
    return {key: a for key, (_, a) in best.items()}

  def leading():  # (pair, the direction that fits better now)
    return [(i, 'a' if _fit(best[(i, 'a')][1]) >= _fit(best[(i, 'b')][1]) else 'b')
            for i in range(len(pairs))]

  def second_stage():  # each direction's best and runner-up through the second stage, the
    # better of those kept for each direction
    keys = list(best)
    extra = [key for key in keys if key in runner]
    tried = refine(keys + extra, second, detail=False,
                   starting=[best[key][1] for key in keys] + [runner[key][1] for key in extra])
    for key, a in zip(keys, tried):
      best[key] = (best[key][0], a)
    for key, a in zip(extra, tried[len(keys):]):
      if _fit(a) > _fit(best[key][1]):
        best[key] = (runner[key][0], a)

  def finest(winners):  # the better direction's angle, then its finest stage
    # Its angle, one stage a call (each keeps its start if better), from its turn and, where
    # that is a turn the search tried, from 0 too: near the answer a stage's angle settles
    # where the fit flattens, on the side it came from (a crop turned 6 degrees, from 8: 6.34,
    # from 0: 6.07); the better fit at the last of them goes on. A keypoint proposal's turn is
    # within a few tenths of a degree (unturned below `PROPOSAL_LEAST_TURN`), so a direction
    # whose best started from one fits from that turn alone and skips the coarse stage, whose
    # reach is for the search's places and the network's boxes.
    keys, fits, coarse = [], [], []
    for key in winners:
      k, a = best[key]
      placed = k in proposed
      for start in (a, dataclasses.replace(a, angle=0.0)) if a.angle and not placed else (a,):
        keys.append(key)
        fits.append(start)
        coarse.append(not placed)
    for n, stage in enumerate(TURN_STAGES):
      rows = [j for j in range(len(keys)) if n or coarse[j]]
      if rows:
        done = refine([keys[j] for j in rows], [stage], detail=False, with_angle=True,
                      starting=[fits[j] for j in rows])
        for j, a in zip(rows, done):
          fits[j] = a
    for key in winners:
      best[key] = (best[key][0], max((f for k, f in zip(keys, fits) if k == key), key=_fit))
    refine(winners, last, detail=True)

  # The second stage on every core (its calls side by side), then the angle and the finest
  # stage beside the mirror check, on another core: in the direction that fits better after
  # the first stage, from its box there (seeded, it needs no finer start).
  ahead = leading()
  at_first = now()
  second_stage()
  winners = leading()
  tasks = [lambda: finest(winners)] + ([lambda: _mirrored(pairs, ahead, at_first)] if mirror
                                       else [])
  done = threads.map(lambda task: task(), tasks)
  mirrors = done[1] if mirror else [None] * len(pairs)
  # Where the second stage turned the direction round (3 % of the validation pairs, none of
  # them crops; a third mirrored ones), the mirror check again, in the winning direction.
  turned = [w for w, a in zip(winners, ahead) if w != a] if mirror else []
  if turned:
    again = _mirrored(pairs, turned, now())
    for (i, _), m in zip(turned, again):
      mirrors[i] = m
  final = now()
  out = []
  for i, (pa, pb) in enumerate(pairs):
    original = winners[i][1]
    a, rev = final[(i, original)], final[(i, 'b' if original == 'a' else 'a')]
    orig, crop = (pa, pb) if original == 'a' else (pb, pa)
    x0, y0, x1, y1 = a.box
    area = (x1 - x0) * (y1 - y0) / (orig.width * orig.height)
    aspect = np.log((x1 - x0) / max(y1 - y0, 1e-9) * crop.height / crop.width)
    out.append(Evidence(original=original, alignment=a, reverse=rev, area=float(area),
                        mirror=mirrors[i], aspect=float(aspect)))
  return out


def _runners_up(jobs: Sequence[tuple], done: Sequence[Alignment],
                best: Mapping[tuple[int, str], tuple[int, Alignment]]
                ) -> dict[tuple[int, str], tuple[int, Alignment]]:
  """Each direction's runner-up (`verify_batch`'s jobs, their first-stage alignments and each
  direction's best of them): of the direction's other first-stage fits and, where a fit moved
  away, its start (overlapping the best by less than half), the one that fits best once the
  crop's shading is undone (`alignment.scores_at`). The first stage compares without undoing
  it, so an editor's vignette or graduated filter can put a wrong place first; the second
  stage undoes it, and the runner-up goes through it beside the best."""
  if not RUNNER_UP:
    return {}
  cands = []  # (job, an alignment to start the second stage from)
  for k, ((i, direction, *_), a) in enumerate(zip(jobs, done)):
    top = best[(i, direction)]
    start = dataclasses.replace(a, box=tuple(jobs[k][4]))
    moved = _iou(np.asarray(a.box), jobs[k][4]) < 0.7  # else the fit stands for its start
    for c in (a, start) if moved else (a,):
      box = np.asarray(c.box)
      if ((k != top[0] or c is not a) and _inside(box, jobs[k][2].size)
          and _iou(box, np.asarray(top[1].box)) < 0.5):
        cands.append((k, c))
  if not cands:
    return {}
  flat = alignment.scores_at([jobs[k][2] for k, _ in cands], [jobs[k][3] for k, _ in cands],
                             [c.box for _, c in cands], angles=[c.angle for _, c in cands])
  runner: dict[tuple[int, str], tuple[int, Alignment]] = {}
  rank: dict[tuple[int, str], float] = {}
  for (k, c), (zncc, share) in zip(cands, flat):
    key = jobs[k][:2]
    if zncc * share > rank.get(key, -np.inf):
      rank[key], runner[key] = zncc * share, (k, c)
  return runner


def mirrored(pyramid: Pyramid) -> Pyramid:
  """The image mirrored left-right, as a new pyramid."""
  return Pyramid(np.ascontiguousarray(pyramid.levels[0][:, ::-1]))


def _mirrored(pairs, winners, best) -> list[Alignment]:
  """Each pair's crop mirrored left-right, aligned in its original: from the box in `best` and
  from that box mirrored across the original through the first stage, the better of the two
  through the finest (the second stage's scale adds nothing after a seeded first one: the
  validation evidence moves by a median 0.007 at most, the verdict's answers not at all)."""
  jobs = []
  for i, original in winners:
    orig, crop = pairs[i] if original == 'a' else pairs[i][::-1]
    x0, y0, x1, y1 = best[(i, original)].box
    flipped = mirrored(crop)
    for box in (np.array([x0, y0, x1, y1]), np.array([orig.width - x1, y0, orig.width - x0, y1])):
      jobs.append((orig, flipped, box if _inside(box, orig.size) else
                   np.array([0.0, 0.0, orig.width, orig.height])))
  first = _first_stage(jobs)
  chosen = [max((2 * k, 2 * k + 1), key=lambda j: _fit(first[j])) for k in range(len(winners))]
  starts = []
  for j in chosen:
    box = np.asarray(first[j].box)
    starts.append(box if _inside(box, jobs[j][0].size) else jobs[j][2])
  # Its evidence is its fit and detail (`Evidence.features`): no blocks or peak.
  return alignment.align_batch([jobs[j][0] for j in chosen], [jobs[j][1] for j in chosen], starts,
                               stages=alignment.STAGES[-1:], seed=False, detail='detail')
