"""Fixed-pose baselines: train a NeRF on clean poses, or on noisy poses that never move.

    python examples/train.py                          # clean (dataset) poses
    python examples/train.py --init-mode noisy        # the noise of train_pose_opt.py, fixed

Same flags and outputs as train_pose_opt.py (run folder {scene}_fixed_...), minus pose learning.
"""

from __future__ import annotations

import dataclasses
import sys

import tyro

from taichi_nerf.training import TrainConfig
from taichi_nerf.training.cli import run_training
from taichi_nerf.training.config import preset_help
from taichi_nerf.training.resume import flags_in_argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    config = tyro.cli(TrainConfig, args=argv, description=f"{__doc__}\n{preset_help()}",
                      default=TrainConfig(init_mode="clean", fixed_poses=True))
    # --fixed-poses counts as given: resuming a pose-optimising run here is refused by name.
    return run_training(dataclasses.replace(config, fixed_poses=True),
                        given=flags_in_argv(argv) | {"fixed_poses"})


def cli() -> None:
    """Console-script entry point: ``main()`` with ``sys.argv``, as the exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
