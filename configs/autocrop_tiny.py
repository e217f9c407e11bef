"""A few auto-crop steps of an 8-channel ResNet at 32 px: for tests and smoke runs.

    python scripts/train.py --config configs/autocrop_tiny.py --workdir /tmp/cropjax-autocrop-tiny
"""

from configs import autocrop
from configs import tiny


def get_config():
  c = autocrop.get_config()
  small = tiny.get_config()
  for key in ('image_size', 'batch_size', 'num_steps', 'freeze_steps', 'warmup_steps',
              'learning_rate', 'log_every', 'eval_every', 'eval_batches', 'checkpoint_every',
              'keep_checkpoints'):
    c[key] = small[key]
  head = {k: c.model[k] for k in ('crop_head', 'crop_levels')}  # the auto-crop head, tiny trunk
  c.model = small.model
  c.model.update(head)
  c.init = small.init
  return c
