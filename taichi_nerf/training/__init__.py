"""Joint NeRF + camera-pose training, evaluation and checkpoints.

Example::

    from taichi_nerf.training import TrainConfig, train_with_pose_optimization
    result = train_with_pose_optimization(TrainConfig(scene="demo", init_mode="noisy"))
    print(result["metrics"]["test_psnr"], result["final_pose_errors"]["rotation_error_mean"])
"""

from taichi_nerf.training.checkpoint import CheckpointError, load_checkpoint
from taichi_nerf.training.config import (
    PRESETS,
    ConfigError,
    EvalConfig,
    NGPConfig,
    TrainConfig,
    resolve_config,
)
from taichi_nerf.training.eval import evaluate_run, psnr, ssim
from taichi_nerf.training.trainer import TrainingError, train_with_pose_optimization

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "EvalConfig",
    "NGPConfig",
    "TrainConfig",
    "TrainingError",
    "evaluate_run",
    "load_checkpoint",
    "psnr",
    "resolve_config",
    "ssim",
    "train_with_pose_optimization",
]
