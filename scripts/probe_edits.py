"""Crops an editor has also shaded or toned, on the real-photo yardstick, beside SIFT.

    python scripts/probe_edits.py --workdir workdirs/demo [--kinds vignette,graduated]

For each of the yardstick's photos and each of `cropjax.datasets.edits`' edits,
one `edited` crop as `cropjax.datasets.yardstick.user_pairs` makes them (a
window of 15-85 % of the area, resized to 0.5-1x, edited, each side JPEG 30-95,
half of the pairs given crop first); the same window for every edit of a photo.
Prints, per edit, the share found (a crop, the right image named the original)
and the top-left error median (of the original's width) for cropjax with
alignment and for OpenCV SIFT. Crops only: the yardstick's negatives are
`scripts/eval.py --data real`'s.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cropjax.datasets import edits  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='a trained crop-pair workdir')
  parser.add_argument('--kinds', default=','.join(edits.KINDS),
                      help='the edits to measure, comma-separated (default: all nine)')
  parser.add_argument('--seed', type=int, default=7, help="the pairs' draw")
  parser.add_argument('--photos', nargs='*', metavar='FILE',
                      help="photos to cut the crops from instead of the yardstick's (read as "
                           'it reads its own): development photos, so that a choice is not '
                           'made on the yardstick')
  args = parser.parse_args()
  import cropjax
  from cropjax import sift
  from cropjax.datasets import yardstick
  kinds = args.kinds.split(',')
  for k in kinds:
    if k not in edits.KINDS:
      parser.error(f'unknown edit {k!r}; choose from {", ".join(edits.KINDS)}')
  model = cropjax.load_model(args.workdir)
  if args.photos:
    photos = [(path, yardstick.read_photo(path)) for path in args.photos]
  else:
    photos = yardstick.photos()
  pairs = [p for kind in kinds
           for p in yardstick.user_pairs(photos, args.seed, {'edited': 1}, edits=(kind,))]
  results = cropjax.predict_pairs(yardstick.Decoded(pairs), model=model)
  table: dict = {}
  for pair, p in zip(pairs, results):
    s = sift.match_pair(np.asarray(pair.a), np.asarray(pair.b))
    width = pair.original_size[0]
    mine = p.is_crop and p.original == pair.original
    theirs = s.is_pair and s.original == pair.original
    table.setdefault(pair.edit, []).append((
        mine, np.hypot(*(np.asarray(p.box[:2]) - pair.box[:2])) / width if mine else np.nan,
        theirs, np.hypot(*(np.asarray(s.box[:2]) * pair.original_size - pair.box[:2])) / width
        if theirs else np.nan))
  source = f'{len(photos)} photos given' if args.photos else "the yardstick's photos"
  print(f'{len(photos)} crops of each edit, {source} (seed {args.seed})')
  print(f'{"edit":12s} {"cropjax found":>14s} {"top-left":>9s} {"SIFT found":>11s} {"top-left":>9s}')
  for kind in kinds:
    v = np.array(table[kind], float)
    med = lambda c: np.nanmedian(v[:, c]) if np.isfinite(v[:, c]).any() else float('nan')
    print(f'{kind:12s} {v[:, 0].mean():14.3f} {med(1):9.4f} {v[:, 2].mean():11.3f} {med(3):9.4f}')


if __name__ == '__main__':
  main()
