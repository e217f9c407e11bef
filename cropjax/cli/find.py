"""Which photos of a library are crops of which, or which library photo each query is cut from.

    python scripts/find.py LIBRARY... --model workdirs/demo                  # crops inside the library
    python scripts/find.py LIBRARY... --queries CROP... --model workdirs/demo
    python scripts/find.py LIBRARY... --queries CROPS_FOLDER --csv out.csv --report out.html

The library is indexed first (`--index`, default ./cropjax-index): region
descriptors of each photo from the model's encoder, written beside, never into,
the library; a second run encodes only new and changed photos, and an
interrupted one resumes. Candidates found by descriptor similarity are checked
by alignment and the verdict; only confirmed pairs are printed, one JSON line
each (query, original, box x0 y0 x1 y1 in the original's upright pixels, angle,
score). Unreadable files are skipped, listed and counted. Library files are only
read. `--build-only` only brings the index up to date; `--runner NAME` builds it
as an Apache Beam pipeline (cropjax/search/pipeline.py) on that runner, e.g.
DirectRunner, or FlinkRunner with --pipeline-option=--flink_master=HOST:PORT.
Installed as `cropjax-find`. Exit status 0; 2 for bad input or a bad index.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='cropjax-find', description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog='\n'.join(__doc__.splitlines()[2:]))
  p.add_argument('library', nargs='+', metavar='LIBRARY', help='folders (searched recursively) '
                 'or image files')
  p.add_argument('--queries', nargs='+', metavar='PATH', help='crops to look up (files or folders)')
  p.add_argument('--model', metavar='WORKDIR', help='a siamese matching model (default: '
                 '$CROPJAX_MODEL)')
  p.add_argument('--index', default='cropjax-index', metavar='DIR',
                 help='the index folder (default ./cropjax-index)')
  p.add_argument('--rebuild', action='store_true', help='build the index again from scratch')
  p.add_argument('--build-only', action='store_true', help='bring the index up to date and stop')
  p.add_argument('--runner', metavar='NAME', help='build the index as an Apache Beam pipeline on '
                 'this runner (DirectRunner, FlinkRunner, SparkRunner, DataflowRunner; needs '
                 "pip install -e '.[beam]'); default: in this process")
  p.add_argument('--pipeline-option', action='append', default=[], metavar='=--FLAG=VALUE',
                 help='a further Beam pipeline flag, repeated as needed, e.g. '
                 '--pipeline-option=--flink_master=host:8081')
  p.add_argument('--top', type=int, default=5, help='candidates verified per query (default 5): '
                 'the best-ranked first, the rest where it is not the original or they '
                 'match the query about as well (another copy of the original)')
  p.add_argument('--verify-all', action='store_true', help='verify all --top candidates of '
                 'every query, even after its original is found')
  p.add_argument('--rerank', type=int, metavar='N',
                 help='photos retrieved per query and ordered by template matching on their '
                 'thumbnails before the --top first are verified (default 300; 0: by '
                 'descriptor alone)')
  p.add_argument('--neighbours', default='auto', choices=['auto', 'numpy', 'flat', 'hnsw'],
                 help='retrieval: exact with the region vectors held in memory (flat) or made '
                 "on each search (numpy), or faiss's approximate HNSW graph (default auto: "
                 'flat; the graph from 1,000,000 regions and 700 queries where faiss is '
                 'installed)')
  p.add_argument('--csv', metavar='OUT.csv', help='also write the matches as CSV')
  p.add_argument('--report', metavar='OUT.html', help='an HTML page: crop, original with the box')
  p.add_argument('--output', metavar='OUT.jsonl', help='JSON lines here instead of stdout')
  return p


def _progress(what: str):
  from cropjax.search.index import eta
  started = time.perf_counter()
  last = [0.0]

  def report(done: int, total: int) -> None:
    now = time.perf_counter()
    if now - last[0] > 2.0 or done == total:
      last[0] = now
      print(f'{what}: {eta(done, total, started)}', file=sys.stderr, flush=True)
  return report


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  from cropjax import compile_cache
  from cropjax import inference
  from cropjax import search
  from cropjax.search import index as index_lib
  from cropjax.search import report
  if args.rerank is None:
    args.rerank = search.RERANK
  if args.top < 1 or args.rerank < 0:
    print('cropjax-find: --top must be at least 1 and --rerank at least 0', file=sys.stderr)
    return 2
  compile_cache.enable()  # a second run reads its compiled programs back
  started = time.perf_counter()
  try:
    model_path = args.model or os.environ.get('CROPJAX_MODEL')
    if not model_path:
      raise inference.ModelError('no model: pass --model WORKDIR or set $CROPJAX_MODEL')
    if args.runner:
      try:
        from cropjax.search import pipeline
      except ImportError as e:
        raise ValueError(f'--runner: {e}') from None
      idx = pipeline.build_index(args.library, args.index, model=model_path, runner=args.runner,
                                 options=args.pipeline_option, rebuild=args.rebuild)
    else:
      model = inference.load_model(model_path, task='pairs')
      idx = search.update_index(args.library, args.index, model=model, rebuild=args.rebuild,
                                progress=_progress('indexing'))
    if args.build_only:
      for path, why in idx.skipped:
        print(f'skipped {path}: {why}', file=sys.stderr)
      print(f'{len(idx)} library photos indexed ({idx.bytes_per_photo / 1024:.1f} KiB each) in '
            f'{args.index}, {len(idx.skipped)} files skipped, '
            f'{time.perf_counter() - started:.1f} s', file=sys.stderr)
      return 0
    if args.runner:
      model = inference.load_model(model_path, task='pairs')
    queries = None
    if args.queries:
      queries = [str(p) for p in index_lib.library_files(args.queries)]
    matches, skipped = search.find(idx, queries, model=model, top=args.top,
                                   rerank=args.rerank, progress=_progress('verifying'),
                                   search=args.neighbours, verify_all=args.verify_all)
  except (inference.InputError, inference.ModelError, search.SearchIndexError,
          FileNotFoundError, ValueError) as e:
    print(f'cropjax-find: {e}', file=sys.stderr)
    return 2
  out = open(args.output, 'w') if args.output else sys.stdout
  try:
    report.write_jsonl(matches, out)
  finally:
    if args.output:
      out.close()
  skipped = list(idx.skipped) + skipped
  summary = (f'{len(idx)} library photos indexed ({idx.bytes_per_photo / 1024:.1f} KiB each), '
             f'{len(queries) if queries is not None else len(idx)} queries, {len(matches)} '
             f'crop pairs found, {len(skipped)} files skipped, '
             f'{time.perf_counter() - started:.1f} s')
  if args.csv:
    report.write_csv(matches, args.csv)
  if args.report:
    report.write_html(matches, args.report, skipped=skipped, summary=summary)
  for path, why in skipped:
    print(f'skipped {path}: {why}', file=sys.stderr)
  print(summary, file=sys.stderr)
  return 0
