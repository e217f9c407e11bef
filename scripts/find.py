"""Which photos of a library are crops of which, or which library photo each query is cut from.

    python scripts/find.py LIBRARY... --model workdirs/demo [--queries CROP...] [--csv F] [--report F]

Also installed as `cropjax-find`; see `cropjax.cli.find`.
"""

import sys

from cropjax.cli.find import main

if __name__ == '__main__':
  sys.exit(main())
