"""Auto-crop, the real setup: ResNet-50 at 224 px from ImageNet weights, on a photographer's library.

    python scripts/annotate.py ~/Pictures --out data/crops --size 512
    python scripts/convert_weights.py --arch resnet50 --input resnet50-11ad3fa6.pth --output weights/resnet50
    python scripts/train.py --config configs/autocrop.py --workdir workdirs/autocrop \
        --config.data.source=data/crops

Learns the crop (left, top, right, bottom) and angle the photographer chose,
from the annotated DATASET folder. The box head maps which positions of the
backbone's stride-4 map (merged with strides 8 and 32) lie in the crop (a
dense loss, `inside`) and places each edge over those positions with it, and
cannot leave the frame or invert; the angle is classified over 1-degree bins
plus a residual, and training turns photos (and their crops with them) by up
to `rotate` degrees and mixes in close-ups round the crop (`refine`), which
prediction's second look uses. The loss also measures the turned crop's
corners along the crop's own edges. Phase 1 trains the crop head on the frozen
ImageNet backbone, phase 2 everything.
"""

import ml_collections

from configs import default


def get_config():
  c = default.get_config()
  c.task = 'autocrop'
  c.max_angle = 45.0                  # Lightroom's limit; the angle head's range
  c.angle_bins = 91                   # 1-degree bins over +-max_angle (0: one tanh regression)
  c.model.arch = 'resnet50'
  c.model.dtype = 'bfloat16'
  c.model.crop_head = 'inside'        # each edge placed over the stride-4 positions, with a map of
                                      # which positions lie in the crop ('edges': without it)
  c.model.crop_levels = (1, 2, 4)
  c.init.checkpoint = 'weights/resnet50'
  c.image_size = 224
  c.batch_size = 128
  c.num_steps = 10_000
  c.freeze_steps = 1_000
  c.warmup_steps = 500
  c.loss_weights = ml_collections.ConfigDict({'l1': 5.0, 'giou': 2.0, 'angle': 0.5, 'corners': 5.0,
                                             'inside': 5.0})
  c.param_groups = ml_collections.ConfigDict({
      'backbone': r'backbone/.*',
      'head': r'(crop|angle)/.*',
  })
  c.data.source = 'demo'              # an annotated DATASET folder, or 'demo'
  # refine: that share of training examples are close-ups round the crop, so that prediction
  # can look again at a close-up round its first answer (cropjax.inference.predict_crops).
  c.data.autocrop_options = ml_collections.ConfigDict({'resize': 'letterbox', 'rotate': 10.0,
                                                       'refine': 0.3, 'hue': 0.0})
  c.eval_every = 500
  c.checkpoint_every = 500
  return c
