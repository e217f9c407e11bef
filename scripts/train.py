"""Trains a cropjax model.

    python scripts/train.py --config configs/demo.py --workdir workdirs/demo
    python scripts/train.py --config configs/resnet50.py --workdir DIR --config.batch_size=256

Starting again with the same --workdir resumes from its latest checkpoint.
"""

import os
import sys

# Config files import each other as `configs.*`, from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and TensorBoard events.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  from cropjax import train  # after flag parsing: sets XLA flags before JAX starts
  logging.info('config:\n%s', FLAGS.config)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (train.ConfigError, FloatingPointError) as e:
    logging.error('%s', e)
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  app.run(main)
