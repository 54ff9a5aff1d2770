"""``python examples/evaluate.py ...`` = the console script ``taichi-nerf-eval``: see its usage and flags
in :mod:`taichi_nerf.commands.evaluate` (or ``--help``)."""

import sys

from taichi_nerf.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
