"""``python examples/train.py ...`` = the console script ``taichi-nerf-train``: see its usage and flags
in :mod:`taichi_nerf.commands.train` (or ``--help``)."""

import sys

from taichi_nerf.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
