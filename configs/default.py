"""Base configuration (crop pairs); the other configs import it and override a few fields.

    python scripts/train.py --config configs/default.py --workdir workdirs/default
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = 'pairs'                    # or 'autocrop' (see configs/autocrop.py)
  c.seed = 0
  c.image_size = 224
  c.batch_size = 128                  # global, over all devices and hosts
  c.num_steps = 20_000
  c.freeze_steps = 1_000              # phase 1: heads only
  c.learning_rate = 1e-3
  # Phase 2: the backbone's rate relative to the heads' (0.1 suits converted ImageNet weights;
  # autocrop_demo.py, from scratch, trains it at the heads' rate: docs/autocrop.md).
  c.backbone_lr_mult = 0.1
  c.warmup_steps = 500
  # Wall-clock minutes the training may take (0: no limit): after warmup the run times its
  # steps and an evaluation, and where num_steps would not fit, its schedule spans the steps
  # that do (cropjax.train.steps_in_budget). The verdict's fit comes after.
  c.train_minutes = 0.0
  c.weight_decay = 1e-4
  c.grad_clip = 1.0
  c.loss_weights = ml_collections.ConfigDict(
      {'is_pair': 1.0, 'is_swapped': 1.0, 'l1': 5.0, 'giou': 2.0})
  # Crop pairs: at the end of training, the verdict (network + alignment evidence,
  # cropjax/matching/verdict.py) is fitted on pairs made from up to this many
  # validation photos and saved beside the checkpoints; 0 skips it.
  c.verdict_photos = 48

  c.model = ml_collections.ConfigDict()
  c.model.arch = 'resnet50'
  c.model.dtype = 'float32'           # compute dtype: 'float32' or 'bfloat16'
  # Crop pairs: 'fusion' (both images stacked into one 6-channel backbone, the seed's
  # design) or 'match' (one 3-channel trunk over each image, the crop found by search).
  c.model.pair_head = 'fusion'
  # Auto-crop: 'pooled' (the box regressed from the globally pooled last map) or 'edges'
  # (each edge placed over the positions of the finest of crop_levels, heads.EdgeHead).
  c.model.crop_head = 'pooled'
  c.model.crop_levels = (2, 4)        # 'edges': the stages merged, finest first (strides 4-32)

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ''              # converted ImageNet weights (scripts/convert_weights.py)

  # Parameter groups by path pattern; every parameter must be in exactly one.
  c.param_groups = ml_collections.ConfigDict({
      'backbone': r'backbone/.*',
      'head': r'(is_pair|is_swapped|box)/.*|match_.*',
  })

  c.data = ml_collections.ConfigDict()
  c.data.source = 'demo'              # 'demo', a folder of photos, or a tfds dataset name
  c.data.eval_split = 'validation'
  c.data.data_dir = ''                # tfds data dir ('' = tfds' default)
  c.data.max_images = 0               # 0 = all
  c.data.threads = 0                  # tf.data threads; 0 = one per 4 cores on CPU, all elsewhere
  c.data.pair_options = ml_collections.ConfigDict()  # cropjax.data.pairs.PairOptions fields
  # Each side at its own aspect ratio (long side image_size, padded), not stretched to a
  # square: a crop's shape then has to match its box's (what the 'match' head is built for).
  c.data.pair_options.keep_aspect = False
  c.data.autocrop_options = ml_collections.ConfigDict()  # cropjax.data.autocrop.AutocropOptions

  c.log_every = 50
  c.eval_every = 1_000
  c.eval_batches = 8
  c.checkpoint_every = 1_000
  c.keep_checkpoints = 3
  return c
