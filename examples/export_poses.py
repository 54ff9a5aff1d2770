"""``python examples/export_poses.py ...`` = the console script ``taichi-nerf-export``: see its usage and flags
in :mod:`taichi_nerf.commands.export_poses` (or ``--help``)."""

import sys

from taichi_nerf.commands.export_poses import main

if __name__ == "__main__":
    sys.exit(main())
