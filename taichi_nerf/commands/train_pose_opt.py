"""Train a NeRF and refine the training camera poses at the same time.

    python examples/train_pose_opt.py --init-mode noisy            # built-in demo scene
    python examples/train_pose_opt.py --scene lego --data-dir ../shared/data --init-mode noisy \
        --rotation-noise 2 --translation-noise-pct 1

Writes outputs/{scene}_poseopt_{init}init_rot{r}deg_trans{t}pct_{timestamp}/ (checkpoints,
final_poses.pt, metrics.json, images/, logs/). Flags take both spellings: --init-mode and
--init_mode. Continue an interrupted run with --resume latest (or a run folder / checkpoint).
"""

from __future__ import annotations

import sys

import tyro

from taichi_nerf.training import TrainConfig
from taichi_nerf.training.cli import run_training
from taichi_nerf.training.config import preset_help
from taichi_nerf.training.resume import flags_in_argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    config = tyro.cli(TrainConfig, args=argv, description=f"{__doc__}\n{preset_help()}")
    return run_training(config, given=flags_in_argv(argv))


def cli() -> None:
    """Console-script entry point: ``main()`` with ``sys.argv``, as the exit status."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
