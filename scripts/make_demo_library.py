"""Writes a demo photo library with Lightroom-style XMP crops, no user data needed.

    python scripts/make_demo_library.py /tmp/demo-library --count 60 --seed 0
    python scripts/annotate.py /tmp/demo-library --out /tmp/demo-dataset

What it holds, and why: see `cropjax.demo_library`.
"""

import sys

from cropjax.demo_library import main

if __name__ == '__main__':
  sys.exit(main())
