"""Adds the cropped photos of photo libraries to a cropjax dataset.

    python scripts/annotate.py ~/Pictures/2019 ~/Pictures/2020 --out data/crops --size 512

Walks each LIBRARY recursively and reads every photo's crop from Lightroom /
Camera Raw XMP (sidecars `photo.xmp` / `photo.ext.xmp`, or embedded in JPEG,
TIFF, PNG, WebP, DNG). Camera raw files (CR2, NEF, ARW, DNG, ...) need rawpy:
pip install -e '.[raw]'. Each cropped photo is written upright to DATASET/images/,
its long side resized to --size with the aspect ratio kept, and described in
DATASET/manifest.jsonl (source, content hash, original size, crop and angle in
the upright frame, capture time). Running again, on the same or another
folder, only adds photos whose content is not in the manifest yet. Libraries
are only read. Bad files are reported and skipped. Exit status: 0, or 1 when
no photo could be read at all, 2 for a usage error.

    python scripts/annotate.py --catalog ~/Pictures/Lightroom/Catalog.lrcat \
        --remap 'C:/Users/me/Pictures=/mnt/photos' --out data/crops

reads the crops of a Lightroom Classic catalog instead (or as well: LIBRARY is
optional with --catalog). The catalog is only read, even while Lightroom has it
open; --remap OLD=NEW (repeatable) points root folders that moved to where
they are now. A catalog that cannot be read is a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys



def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('libraries', nargs='*', metavar='LIBRARY',
                      help='folder of photos (read only); optional with --catalog')
  parser.add_argument('--catalog', metavar='CATALOG.lrcat',
                      help='a Lightroom Classic catalog to read crops from (read only)')
  parser.add_argument('--remap', action='append', default=[], metavar='OLD=NEW',
                      help="the catalog's root folder OLD is now NEW (repeatable; "
                           "e.g. 'C:/Users/me/Pictures=/mnt/photos')")
  parser.add_argument('--out', required=True, metavar='DATASET', help='dataset folder to create or extend')
  parser.add_argument('--size', type=int, default=512, help='long side of the written images (default 512)')
  parser.add_argument('--report', metavar='FILE', help='also write the summary and every problem as JSON')
  parser.add_argument('--quiet', action='store_true', help='no progress lines')
  args = parser.parse_args(argv)
  if not args.libraries and not args.catalog:
    parser.print_usage(sys.stderr)
    print('error: give at least one LIBRARY, or --catalog', file=sys.stderr)
    return 2
  if args.remap and not args.catalog:
    parser.print_usage(sys.stderr)
    print('error: --remap needs --catalog', file=sys.stderr)
    return 2

  from cropjax import annotate

  def report(problem: annotate.Problem) -> None:
    print(f'skipped {problem}', file=sys.stderr, flush=True)

  def progress(summary: annotate.Summary, path) -> None:
    print(f'... {summary.scanned} photos scanned, {summary.added} added, '
          f'{summary.scanned / max(summary.seconds, 1e-9):.1f} photos/s ({path.parent})',
          file=sys.stderr, flush=True)

  try:
    summary = annotate.annotate(args.libraries, args.out, args.size, catalog=args.catalog,
                                remap=args.remap, report=report,
                                progress=None if args.quiet else progress)
  except annotate.AnnotateError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(summary.format())
  if args.report:
    with open(args.report, 'w', encoding='utf-8') as f:
      json.dump(summary.to_json(), f, indent=1)
  if summary.readable == 0:
    found = ('no photos found' if summary.scanned == 0
             else f'none of the {summary.scanned} photos could be read')
    print(f'error: {found} in {", ".join([*args.libraries, *([args.catalog] if args.catalog else [])])}',
          file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
