"""``python examples/render.py ...`` = the console script ``taichi-nerf-render``: see its usage and flags
in :mod:`taichi_nerf.commands.render` (or ``--help``)."""

import sys

from taichi_nerf.commands.render import main

if __name__ == "__main__":
    sys.exit(main())
