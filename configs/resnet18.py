"""ResNet-18 at 128 px from ImageNet weights: a smaller real run.

    python scripts/convert_weights.py --arch resnet18 --input resnet18-f37072fd.pth --output weights/resnet18
    python scripts/train.py --config configs/resnet18.py --workdir workdirs/resnet18
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.arch = 'resnet18'
  c.init.checkpoint = 'weights/resnet18'
  c.image_size = 128
  c.batch_size = 128
  c.num_steps = 20_000
  c.freeze_steps = 1_000
  return c
