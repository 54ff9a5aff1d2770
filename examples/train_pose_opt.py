"""Train a NeRF and refine the training camera poses at the same time.

    python examples/train_pose_opt.py --init-mode noisy            # built-in demo scene
    python examples/train_pose_opt.py --scene lego --data-dir ../shared/data --init-mode noisy \
        --rotation-noise 2 --translation-noise-pct 1

Writes outputs/{scene}_poseopt_{init}init_rot{r}deg_trans{t}pct_{timestamp}/ (checkpoints,
final_poses.pt, metrics.json, images/, logs/). Flags take both spellings: --init-mode and
--init_mode. Continue an interrupted run with --resume latest (or a run folder / checkpoint).
"""

import sys

from taichi_nerf.commands.train_pose_opt import main

if __name__ == "__main__":
    sys.exit(main())
