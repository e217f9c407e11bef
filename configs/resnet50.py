"""The real setup: ResNet-50 at 224 px from ImageNet weights, on accelerators.

    python scripts/convert_weights.py --arch resnet50 --input resnet50-11ad3fa6.pth --output weights/resnet50
    python scripts/train.py --config configs/resnet50.py --workdir workdirs/resnet50 \
        --config.data.source=imagenet2012

The siamese matching model on images kept at their aspect ratio (the
converted 3-channel trunk loads unchanged; layer4 and fc are not used).
Phase 1 trains the matching head for 2,000 steps with the trunk frozen
(parameters and BatchNorm statistics bit-identical), then everything at a
tenth of the head's rate for the trunk.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.arch = 'resnet50'
  c.model.pair_head = 'match'
  c.data.pair_options.keep_aspect = True
  c.model.dtype = 'bfloat16'
  c.init.checkpoint = 'weights/resnet50'
  c.image_size = 224
  c.batch_size = 256
  c.num_steps = 50_000
  c.freeze_steps = 2_000
  c.learning_rate = 1e-3
  c.backbone_lr_mult = 0.1
  c.warmup_steps = 1_000
  return c
