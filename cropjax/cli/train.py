"""Trains a cropjax model.

    python scripts/train.py --config configs/demo.py --workdir workdirs/demo
    python scripts/train.py --config configs/resnet50.py --workdir DIR --config.batch_size=256

Starting again with the same --workdir resumes from its latest checkpoint.
On several hosts, run it on each with --distributed (and, where the cluster is
not detected, --coordinator_address, --num_processes, --process_id): each
process reads its own shard of the input. Installed as `cropjax-train`. Exit status 0; 2 for a bad configuration or a
non-finite loss (one line naming the problem).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and TensorBoard events.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() first (multi-host: '
                  'the cluster is detected, or given by the flags below).')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (with --distributed).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (with --distributed).')
flags.DEFINE_integer('process_id', None, 'This process (with --distributed).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  from cropjax import train  # after flag parsing: sets XLA flags before JAX starts
  from cropjax.data import sources
  if FLAGS.distributed:
    train.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  else:  # a second run reads its compiled programs back (one host: its own disk)
    from cropjax import compile_cache
    compile_cache.enable()
  logging.info('config:\n%s', FLAGS.config)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (train.ConfigError, sources.SourceError, FloatingPointError) as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


def _config_root(argv: list[str]) -> None:
  """Config files import each other as `configs.*`: put the folder holding configs/ on the path."""
  for i, arg in enumerate(argv):
    path = arg.split('=', 1)[1] if arg.startswith('--config=') else (
        argv[i + 1] if arg == '--config' and i + 1 < len(argv) else None)
    if path:
      root = os.path.dirname(os.path.dirname(os.path.abspath(path.split(':')[0])))
      if root not in sys.path:
        sys.path.insert(0, root)


def run() -> None:
  _config_root(sys.argv)
  app.run(main)


if __name__ == '__main__':
  run()
