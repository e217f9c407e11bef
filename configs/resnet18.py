"""ResNet-18 at 128 px from ImageNet weights: a smaller real run.

    python scripts/convert_weights.py --arch resnet18 --input resnet18-f37072fd.pth --output weights/resnet18
    python scripts/train.py --config configs/resnet18.py --workdir workdirs/resnet18

The siamese matching model on images kept at their aspect ratio, as the demo:
the converted 3-channel trunk loads unchanged (layer4 and fc are not used);
the matching head trains alone for `freeze_steps` with the trunk frozen
(parameters and BatchNorm statistics bit-identical), then everything.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.arch = 'resnet18'
  c.model.pair_head = 'match'
  c.data.pair_options.keep_aspect = True
  c.init.checkpoint = 'weights/resnet18'
  c.image_size = 128
  c.batch_size = 128
  c.num_steps = 20_000
  c.freeze_steps = 1_000
  return c
