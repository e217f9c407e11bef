"""Is one photo a crop of the other? Or: which crop would the photographer choose?

    python scripts/predict.py A.jpg B.jpg --model workdirs/demo [--json] [--show out.png]
    python scripts/predict.py --crop PHOTO [PHOTO ...] --model workdirs/autocrop [--write-xmp]

Also installed as `cropjax-predict`; see `cropjax.cli.predict`.
"""

import sys

from cropjax.cli.predict import main

if __name__ == '__main__':
  sys.exit(main())
