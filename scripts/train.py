"""Trains a cropjax model.

    python scripts/train.py --config configs/demo.py --workdir workdirs/demo
    python scripts/train.py --config configs/resnet50.py --workdir DIR --config.batch_size=256

Starting again with the same --workdir resumes from its latest checkpoint.
Also installed as `cropjax-train`; see `cropjax.cli.train`.
"""

from cropjax.cli.train import run

if __name__ == '__main__':
  run()
