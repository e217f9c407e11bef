"""The README's main job: a crop-pair ResNet-18 on the embedded demo photos, on a 2-core CPU.

    python scripts/train.py --config configs/demo.py --workdir workdirs/demo

6 to 15 minutes on 2 CPU cores (6m29s on a 2-core host without other load),
then about two minutes to fit the verdict (network + alignment evidence) on
validation photos. No ImageNet
weights can be assumed here, so the backbone starts from scratch and there is
no freeze phase (freezing a random backbone teaches nothing);
configs/resnet18.py and resnet50.py start from converted ImageNet weights and
freeze first. Watch it with
`tensorboard --logdir workdirs`.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.arch = 'resnet18'
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
  return c
