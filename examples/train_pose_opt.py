"""``python examples/train_pose_opt.py ...`` = the console script ``taichi-nerf-train-pose-opt``: see its usage and flags
in :mod:`taichi_nerf.commands.train_pose_opt` (or ``--help``)."""

import sys

from taichi_nerf.commands.train_pose_opt import main

if __name__ == "__main__":
    sys.exit(main())
