"""Is one photo a crop of the other? Or: which crop would the photographer choose?

    python scripts/predict.py A.jpg B.jpg --model workdirs/demo
    python scripts/predict.py A.jpg B.jpg --json
    python scripts/predict.py A.jpg B.jpg --show side_by_side.png
    python scripts/predict.py A.jpg B.jpg --no-align     # the network alone: fast, rough
    python scripts/predict.py --crop PHOTO [PHOTO ...] --model workdirs/autocrop [--write-xmp [--force]]
    python scripts/predict.py --crop PHOTO --no-straighten   # the network's angle, unsettled
    python scripts/predict.py --crop PHOTO --no-mirror       # one prediction, not two averaged

Pairs are checked and made exact by aligning the two images both ways
(cropjax.matching): the result carries the refined box, the alignment score
and whether the refinement converged. Suggested crops get their angle settled
by the photo's own straight lines (cropjax.straighten; --no-straighten keeps
the network's). Without --model, the workdir named by $CROPJAX_MODEL is used. --write-xmp
writes the suggested crop into a Lightroom-readable sidecar next to each photo
(`photo.xmp`; `--xmp-style ext` for `photo.ext.xmp`): photo files are never
touched, and an existing sidecar is left alone unless --force, which replaces
only its crop fields. Installed as `cropjax-predict`. Exit status 0; 2 for bad
input (one line naming the problem).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='cropjax-predict', description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog='\n'.join(__doc__.splitlines()[2:]))
  p.add_argument('images', nargs='*', metavar='IMAGE', help='A B (pairs), or photos with --crop')
  p.add_argument('--model', metavar='WORKDIR', help='training workdir or checkpoint '
                 '(default: $CROPJAX_MODEL)')
  p.add_argument('--json', action='store_true', help='print the result as JSON')
  p.add_argument('--show', metavar='OUT.png', help='save A and B side by side, the crop drawn '
                 'on the original')
  p.add_argument('--no-align', action='store_true',
                 help="pairs: the network's answer alone, without alignment")
  p.add_argument('--crop', action='store_true', help='suggest crops for the given photos')
  p.add_argument('--no-straighten', action='store_true',
                 help="with --crop: the network's angle as it is, not settled by the photo's "
                 'straight lines')
  p.add_argument('--no-mirror', action='store_true',
                 help='with --crop: predict on the photo alone, not also on its mirror image '
                 '(half the time, a little less exact)')
  p.add_argument('--write-xmp', action='store_true', help='with --crop: write sidecars')
  p.add_argument('--force', action='store_true', help='with --write-xmp: update existing sidecars')
  p.add_argument('--xmp-style', choices=('adobe', 'ext'), default='adobe',
                 help="sidecar name: 'adobe' photo.xmp (default), 'ext' photo.ext.xmp")
  p.add_argument('--batch-size', type=int, default=32)
  return p


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.crop:
    if not args.images:
      return _usage('--crop needs at least one PHOTO')
    if args.show:
      return _usage('--show is for pairs')
  else:
    if len(args.images) != 2:
      return _usage(f'give two images A B (or --crop PHOTO...), got {len(args.images)}')
    if args.write_xmp or args.force or args.no_straighten or args.no_mirror:
      return _usage('--write-xmp, --force, --no-straighten and --no-mirror need --crop')
  from cropjax import compile_cache
  compile_cache.enable()  # a second run reads its compiled programs back
  from cropjax import inference
  from cropjax import metadata
  try:
    model = inference.load_model(args.model, task='autocrop' if args.crop else 'pairs') \
        if args.model else inference.default_model('autocrop' if args.crop else 'pairs')
    if args.crop:
      return _crops(args, model)
    return _pair(args, model)
  except (inference.InputError, inference.ModelError, metadata.MetadataError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


def _usage(message: str) -> int:
  print(f'error: {message}', file=sys.stderr)
  return 2


def _pair(args, model) -> int:
  from cropjax import inference
  a, b = args.images
  r = inference.predict(a, b, model=model, align=not args.no_align)
  if args.json:
    print(json.dumps({'a': a, 'b': b, **r.to_json()}, indent=1))
  else:
    print(format_pair(r, a, b))
  if args.show:
    side_by_side(a, b, r).save(args.show)
    if not args.json:
      print(f'saved {args.show}')
  return 0


def format_pair(r, a: str, b: str) -> str:
  """A readable verdict."""
  original, crop = (a, b) if r.original == 'a' else (b, a)
  if not r.is_crop:
    return (f'not a crop pair (probability of a crop {r.probability:.1%})\n'
            f'  if it were: {crop} would be cut from {original} at box '
            f'{_px(r.box)} px')
  x0, y0, x1, y1 = r.box
  why = (f'aligned: correlation {r.alignment_score:.3f}, '
         f'{"converged" if r.converged else "did not converge"}'
         if r.alignment_score is not None else
         f'{original} is the original with probability {r.original_probability:.1%}')
  return (f'{crop} is a crop of {original} (probability {r.probability:.1%}; {why})\n'
          f'  box in {original} ({r.original_size[0]}x{r.original_size[1]}): {_px(r.box, 1)} px, '
          f'{x1 - x0:.1f}x{y1 - y0:.1f}; top-left ({x0:.1f}, {y0:.1f}); as fractions '
          + ', '.join(f'{v:.4f}' for v in r.box_fraction)
          + f'\n  turned {r.angle:+.2f} degrees about its centre (clockwise positive; the box '
          'is the rectangle unturned)')


def _px(box, digits: int = 0) -> str:
  return '(' + ', '.join(f'{v:.{digits}f}' for v in box) + ')'


def side_by_side(a, b, r):
  """A and B next to each other, the predicted crop drawn on the original in red."""
  import numpy as np
  from PIL import Image

  from cropjax import inference
  from cropjax import tasks
  ia, ib = inference.load_image(a, 'A'), inference.load_image(b, 'B')
  height = 512
  scaled = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in (ia, ib)]
  arrays = [np.asarray(im).copy() for im in scaled]
  k = 0 if r.original == 'a' else 1
  tasks.rotated_rectangle(arrays[k], r.box_fraction, r.angle,
                          (255, 0, 0) if r.is_crop else (255, 200, 0))
  gap = np.full((height, 8, 3), 255, np.uint8)
  return Image.fromarray(np.concatenate([arrays[0], gap, arrays[1]], axis=1))


def _crops(args, model) -> int:
  from cropjax import inference
  from cropjax import metadata
  photos = args.images
  if args.write_xmp:  # check every target before writing any
    for photo in photos:
      inference.load_image(photo)
      existing = metadata.sidecars(photo)[1 if args.xmp_style == 'adobe' else 0]
      if existing is not None and not args.force:
        raise inference.InputError(f'{existing}: sidecar exists; not replacing it '
                                   '(--force updates its crop and keeps its other fields)')
  results, start, last = [], time.perf_counter(), 0.0
  for i in range(0, len(photos), args.batch_size):
    chunk = photos[i:i + args.batch_size]
    results += inference.predict_crops(chunk, model=model, batch_size=args.batch_size,
                                       straighten=not args.no_straighten,
                                       mirror=not args.no_mirror)
    now = time.perf_counter()
    if len(photos) > args.batch_size and now - last > 1.0:
      last = now
      print(f'... {len(results)}/{len(photos)} photos, {len(results) / (now - start):.1f}/s',
            file=sys.stderr, flush=True)
  records = []
  for photo, r in zip(photos, results):
    record = {'photo': photo, **r.to_json()}
    if args.write_xmp:
      record['sidecar'] = str(metadata.write_sidecar(photo, r.to_crop(), style=args.xmp_style))
    records.append(record)
    if not args.json:
      line = (f'{photo}: crop left {r.left:.0f}, top {r.top:.0f}, right {r.right:.0f}, '
              f'bottom {r.bottom:.0f} px of {r.size[0]}x{r.size[1]}, angle {r.angle:+.2f} deg')
      print(line + (f' -> {record["sidecar"]}' if args.write_xmp else ''))
  if args.json:
    print(json.dumps(records if len(records) > 1 else records[0], indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
