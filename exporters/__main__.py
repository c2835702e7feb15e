"""``python -m exporters CKPT``: the same as ``python -m exporters.all CKPT``."""

import sys

from exporters.all import main

if __name__ == "__main__":
    sys.exit(main())
