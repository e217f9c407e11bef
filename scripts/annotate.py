"""Adds the cropped photos of photo libraries to a cropjax dataset.

    python scripts/annotate.py ~/Pictures/2019 ~/Pictures/2020 --out data/crops --size 512

Also installed as `cropjax-annotate`; see `cropjax.cli.annotate`.
"""

import sys

from cropjax.cli.annotate import main

if __name__ == '__main__':
  sys.exit(main())
