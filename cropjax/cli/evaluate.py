"""Evaluates a trained model on its validation split; prints a table and writes JSON.

    python scripts/eval.py --workdir workdirs/demo --baseline sift
    python scripts/eval.py --workdir workdirs/demo --data real --baseline sift
    python scripts/eval.py --workdir workdirs/demo --data real --baseline sift --photo-dir ~/Pictures
    python scripts/eval.py --checkpoint workdirs/demo/checkpoints/2500 --examples 2048
    python scripts/eval.py --workdir workdirs/demo --fit-verdict

Crop-pair models: accuracy, precision, recall, ROC-AUC, swap accuracy,
top-left error and box IoU, overall and per kind of example; `--baseline sift`
adds OpenCV SIFT + RANSAC on the same pairs. `--data real`: the real-photo
yardstick instead (photographs cropjax never trains on, from Debian's
wallpaper packages; cropjax/datasets/yardstick.py), the network alone and
with alignment side by side; `--photo-dir` makes the same pairs from your own
photos (distinct pictures: no crops of one another), unreadable files and
copies of a photo already taken skipped and listed. `--fit-verdict` (re)fits the verdict that
combines the network with the alignment evidence, on validation photos, and
saves it beside the checkpoints (training does this at its end). Auto-crop models: IoU, boundary
displacement and angle error next to the full-frame and centre-crop baselines.
The JSON goes to --out (default WORKDIR/eval.json). Installed as `cropjax-eval`.
Exit status 0; 2 for a bad model or option (one line naming the problem).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='cropjax-eval', description=__doc__.splitlines()[0])
  where = p.add_mutually_exclusive_group(required=True)
  where.add_argument('--workdir', help='training workdir (its latest checkpoint)')
  where.add_argument('--checkpoint', help='one checkpoint step folder, WORKDIR/checkpoints/STEP')
  p.add_argument('--baseline', choices=('sift',), help='classical baseline on the same pairs')
  p.add_argument('--examples', type=int, default=1024, help='validation pairs (default 1024)')
  p.add_argument('--sift-size', type=int, default=256, help='side of the pairs SIFT sees')
  p.add_argument('--source', help="data source instead of the config's")
  p.add_argument('--split', help="split instead of the config's eval split")
  p.add_argument('--data', choices=('validation', 'real'), default='validation',
                 help="crop pairs: the validation split (default) or the real-photo yardstick")
  p.add_argument('--photos', type=int,
                 help='--data real: use only the first N photos (with --photo-dir: N spread '
                      'over its files, default 40)')
  p.add_argument('--photo-dir', action='append', metavar='DIR',
                 help="--data real: pairs made from the photos in DIR (searched recursively; "
                      "may be given more than once) instead of the yardstick's")
  p.add_argument('--seed', type=int, default=0, help='--data real: the seed of the pairs')
  p.add_argument('--generated', type=int, default=128,
                 help="--data real: pairs from the project's generator too (default 128; 0: none)")
  p.add_argument('--fit-verdict', action='store_true',
                 help='fit and save the verdict (network + alignment) first')
  p.add_argument('--out', help='JSON report path (default WORKDIR/eval.json)')
  args = p.parse_args(argv)

  from cropjax import compile_cache
  compile_cache.enable()  # a second run reads its compiled programs back
  from cropjax import evaluation
  from cropjax import inference
  from cropjax.data import sources
  from cropjax.datasets import yardstick
  from cropjax.matching import verdict
  try:
    if args.photo_dir and args.data != 'real':  # before a model is loaded or a verdict fitted
      raise ValueError('--photo-dir makes real-photo pairs: use it with --data real')
    model = inference.load_model(args.workdir or args.checkpoint)
    if (args.data == 'real' or args.fit_verdict) and model.task != 'pairs':
      raise inference.ModelError(f'{model.source}: an auto-crop model; --data real and '
                                 '--fit-verdict are for crop pairs')
    if args.fit_verdict:
      fitted = verdict.fit_for_model(model, max_photos=model.config.get('verdict_photos') or 48,
                                     seed=model.config.seed)
      fitted.save(os.path.join(model.source, verdict.FILE))
      model.__dict__.pop('verdict', None)
      print(f'verdict fitted on {fitted.fitted_on}: {os.path.join(model.source, verdict.FILE)}')
    if args.data == 'real':
      report = evaluation.evaluate_real(model, baseline=args.baseline, seed=args.seed,
                                        max_photos=args.photos, generated=args.generated,
                                        photo_dirs=args.photo_dir)
      for path, why in report['skipped']:
        print(f'skipped {path}: {why}', file=sys.stderr)
    elif model.task == 'pairs':
      report = evaluation.evaluate_pairs(model, examples=args.examples, baseline=args.baseline,
                                         sift_size=args.sift_size, source=args.source,
                                         split=args.split)
    else:
      if args.baseline:
        raise inference.ModelError(f'{model.source}: an auto-crop model; --baseline sift is '
                                   'for crop pairs')
      report = evaluation.evaluate_crops(model, source=args.source, split=args.split)
  except (inference.ModelError, sources.SourceError, yardstick.YardstickError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(evaluation.format_table(report))
  name = 'eval_real.json' if args.data == 'real' else 'eval.json'
  out = args.out or os.path.join(model.source, name)
  with open(out, 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=1)
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
