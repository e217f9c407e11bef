"""The README's main job: a crop-pair ResNet-18 on the embedded demo photos, on a 2-core CPU.

    python scripts/train.py --config configs/demo.py --workdir workdirs/demo

The siamese matching model (`pair_head='match'`: one 3-channel trunk encodes
each image, kept at its own aspect ratio, and the crop is found by search),
2,500 steps at 64 px, or as many as fit in 12 minutes (`train_minutes`), then the
verdict (network + alignment evidence) fitted on validation photos: 12m04s and
13m26s in all on two 2-core Xeon hosts without other load (11-12 minutes of
training, one of the verdict); 12m15s-12m25s in four runs on a 2-core AMD EPYC
host without other load (11m59s, 12m09s and 12m19s in the twenty-first to
twenty-third sessions), 14m14s and 15m20s there with other work beside it; on a
2-core Xeon half as fast, 20m34s for all 2,500 steps, 12m46s with the budget
(1,636 steps, the same yardstick figures). No ImageNet
weights can be assumed here, so the trunk starts from scratch and there is no
freeze phase (freezing a random trunk teaches nothing); configs/resnet18.py and resnet50.py start
from converted ImageNet weights and freeze first. The seed's early fusion:
`--config.model.pair_head=fusion --config.data.pair_options.keep_aspect=False`
(compared in docs/real_photos.md). Watch it with
`tensorboard --logdir workdirs`.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.arch = 'resnet18'
  c.model.pair_head = 'match'
  c.data.pair_options.keep_aspect = True
  c.image_size = 64
  c.batch_size = 32
  c.num_steps = 2_500
  c.freeze_steps = 0
  c.learning_rate = 2e-3
  c.warmup_steps = 100
  c.log_every = 50
  c.eval_every = 500
  c.eval_batches = 8
  c.checkpoint_every = 500
  # Fits a slower machine into the README's 15 minutes (the verdict's fit comes after): where
  # 2,500 steps would take longer, the schedule spans the steps that fit (docs/real_photos.md,
  # "The README's main job on a slower machine").
  c.train_minutes = 12.0
  return c
