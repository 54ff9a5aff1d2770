"""Shared command-line plumbing of ``examples/train_pose_opt.py``, ``train.py``, ``evaluate.py``.

User mistakes (bad flag combination, missing scene or checkpoint, no GPU, unwritable folder)
print one ``error: ...`` line on stderr and return exit status 2; a diverged run returns 1.
"""

from __future__ import annotations

import sys
from typing import Any

from taichi_nerf.training.config import TrainConfig

__all__ = ["run_training", "print_summary", "USER_ERROR", "TRAINING_FAILED"]

USER_ERROR = 2
TRAINING_FAILED = 1


def _error(message: Any) -> None:
    text = " ".join(str(message).split()) or type(message).__name__
    print(f"error: {text}", file=sys.stderr)


def run_training(config: TrainConfig) -> int:
    """Train with ``config``; print a summary; return the process exit status."""
    from taichi_nerf.training.trainer import TrainingError, train_with_pose_optimization

    try:
        result = train_with_pose_optimization(config)
    except TrainingError as exc:
        _error(exc)
        return TRAINING_FAILED
    except (ValueError, OSError) as exc:  # ConfigError, DatasetError, CheckpointError, paths
        _error(exc)
        return USER_ERROR
    print_summary(result)
    return 0


def print_summary(result: dict[str, Any]) -> None:
    """A few lines: where the run went, test PSNR/SSIM, pose errors before -> after."""
    out = result["output_dir"]
    metrics = result.get("metrics")
    if metrics is None:
        print(f"stopped early; resume with --resume {out}")
        return
    before = metrics["initial_pose_errors"]
    after = metrics["pose_errors"]
    r0, r1 = before["rotation_error_mean"], after["rotation_error_mean"]
    t0, t1 = before["translation_error_mean"], after["translation_error_mean"]
    cut = f" ({100 * (1 - r1 / r0):.1f}% lower)" if r0 > 0 else ""
    print(f"run folder      {out}")
    print(f"test PSNR/SSIM  {metrics['test_psnr']:.2f} dB / {metrics['test_ssim']:.4f} "
          f"({metrics['test']['num_views']} views)")
    px0, px1 = before.get("rotation_error_px_mean"), after.get("rotation_error_px_mean")
    in_px = f" = {px0:.3f} -> {px1:.3f} px" if px0 is not None and px1 is not None else ""
    if str(metrics.get("pose_errors_against", "ground_truth")).startswith("input"):
        moved_px = f" ({px1:.3f} px)" if px1 is not None else ""
        print(f"poses moved     rotation {r1:.4f} deg{moved_px}, centre {t1:.5f} scene units "
              f"from the input poses (a capture: no ground truth to compare with)")
        print(f"training        {metrics.get('train_time_s', 0.0):.1f} s, "
              f"{result['iters_per_sec']:.1f} it/s")
        return
    print(f"rotation error  {r0:.4f} -> {r1:.4f} deg{in_px}{cut}")
    t_px = after.get("translation_error_px_mean")
    print(f"translation err {t0:.5f} -> {t1:.5f} scene units"
          + (f" = {t_px:.3f} px" if t_px is not None else "")
          + f" (aligned {after.get('aligned_translation_error_mean', float('nan')):.5f})")
    print(f"training        {metrics.get('train_time_s', 0.0):.1f} s, "
          f"{result['iters_per_sec']:.1f} it/s")
