"""A few steps of an 8-channel ResNet on 32 px pairs: for tests and smoke runs.

    python scripts/train.py --config configs/tiny.py --workdir /tmp/cropjax-tiny
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.arch = 'tiny'
  c.image_size = 32
  c.batch_size = 8
  c.num_steps = 6
  c.freeze_steps = 3
  c.warmup_steps = 1
  c.learning_rate = 1e-2
  c.log_every = 1
  c.eval_every = 3
  c.eval_batches = 1
  c.checkpoint_every = 2
  c.keep_checkpoints = 2
  c.verdict_photos = 0  # tests fit the verdict themselves
  return c
