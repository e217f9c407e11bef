"""Auto-crop on the embedded demo library, from scratch, on a 2-core CPU.

    python scripts/train.py --config configs/autocrop_demo.py --workdir workdirs/autocrop_demo

The demo library (`cropjax.demo_library`: photos placed in distracting
margins, the crop being the photo) is generated and annotated once into the
tfds data dir. 1,000 steps, or as many as fit in 12 minutes (`train_minutes`): 9m25s
and 9m38s in all on a 2-core AMD EPYC, where all of them fit; 13m01s and 10m57s
(871 and 901 steps) on a 2-core Xeon at half its rate. Watch `tensorboard
--logdir workdirs`. From scratch, so the backbone learns at the heads' rate (the
ImageNet configs give it a tenth). docs/autocrop.md has its figures on held-out
photos (IoU 0.96).
"""

from configs import autocrop


def get_config():
  c = autocrop.get_config()
  c.model.arch = 'resnet18'
  c.model.dtype = 'float32'
  c.init.checkpoint = ''
  c.image_size = 96
  c.batch_size = 32
  c.num_steps = 1_000
  c.freeze_steps = 0
  c.backbone_lr_mult = 1.0            # from scratch: the backbone learns at the heads' rate
  c.learning_rate = 2e-3
  c.warmup_steps = 100
  c.eval_every = 250
  c.eval_batches = 4
  c.checkpoint_every = 250
  # The demo's margins are coloured at random: turning the hue of every training view keeps
  # the network from learning the training photos' margin colours (docs/autocrop.md).
  c.data.autocrop_options.hue = 0.5
  # A slower machine (a 2-core Xeon trains at about half the EPYC's rate) keeps to 15 minutes:
  # the schedule spans the steps that fit (docs/autocrop.md, "A time budget").
  c.train_minutes = 12.0
  return c
