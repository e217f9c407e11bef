"""Evaluates a trained model on its validation split; prints a table and writes JSON.

    python scripts/eval.py --workdir workdirs/demo --baseline sift

Also installed as `cropjax-eval`; see `cropjax.cli.evaluate`.
"""

import sys

from cropjax.cli.evaluate import main

if __name__ == '__main__':
  sys.exit(main())
