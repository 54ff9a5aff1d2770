"""Fixed-pose baselines: train a NeRF on clean poses, or on noisy poses that never move.

    python examples/train.py                          # clean (dataset) poses
    python examples/train.py --init-mode noisy        # the noise of train_pose_opt.py, fixed

Same flags and outputs as train_pose_opt.py (run folder {scene}_fixed_...), minus pose learning.
"""

import sys

from taichi_nerf.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
