"""``python examples/view.py RUN ...`` = the console script ``taichi-nerf-view``: see its usage and
flags in :mod:`taichi_nerf.commands.view` (or ``--help``)."""

import sys

from taichi_nerf.commands.view import main

if __name__ == "__main__":
    sys.exit(main())
