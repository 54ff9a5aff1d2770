"""Shared command-line plumbing of ``examples/train_pose_opt.py``, ``train.py``, ``evaluate.py``.

Nothing a user does ends in a traceback: a user mistake (bad flag or combination, missing scene
or checkpoint, a flag that cannot change on ``--resume``, no GPU, unwritable folder) prints one
``error: ...`` line on stderr and returns 2; a fault (the run diverged, the disk filled up, a
write failed) one line and 1; Ctrl-C one line and 130. Warnings print as one ``warning:`` line.
tyro's own parse errors (unknown flag: it names the closest valid ones) keep tyro's exit 2.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

from taichi_nerf.training.config import TrainConfig

__all__ = ["run_training", "guarded", "print_summary", "USER_ERROR", "TRAINING_FAILED",
           "INTERRUPTED"]

USER_ERROR = 2
TRAINING_FAILED = 1
INTERRUPTED = 130


def _error(message: Any) -> None:
    text = " ".join(str(message).split()) or type(message).__name__
    print(f"error: {text}", file=sys.stderr)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {' '.join(str(message).split())}\n"


def _write_fault(exc: OSError) -> str | None:
    """The message of a failed write (a SaveError anywhere in the chain, or a full disk)."""
    from taichi_nerf.training.checkpoint import SaveError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SaveError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return (f"no space left on the device{where}; the checkpoints written before are "
                f"intact: free space, then continue with --resume latest")
    return None


def guarded(run: Callable[[], int], resume_hint: str | None = None) -> int:
    """``run()`` with every expected failure turned into one line and an exit status."""
    from taichi_nerf.training.trainer import TrainingError

    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        return run()
    except KeyboardInterrupt:
        _error("interrupted" + (f"; the checkpoints written so far are intact: continue "
                                f"with {resume_hint}" if resume_hint else ""))
        return INTERRUPTED
    except TrainingError as exc:
        _error(exc)
        return TRAINING_FAILED
    except OSError as exc:
        fault = _write_fault(exc)
        _error(fault or exc)
        return TRAINING_FAILED if fault else USER_ERROR
    except ValueError as exc:  # ConfigError, DatasetError, CheckpointError
        _error(exc)
        return USER_ERROR
    finally:
        warnings.formatwarning = formatwarning


def _plan_resume(config: TrainConfig, given: set[str] | None) -> TrainConfig:
    """Check ``--resume`` against the flags the user typed (before any data is read): the run
    to continue, with the checkpoint (or run folder) pinned so the trainer takes the same one."""
    from taichi_nerf.training import resume

    target = resume.find_run(config.resume, config.output_dir, config.experiment_name)
    merged = resume.resume_config(config, target, given)
    if target.checkpoint is not None:
        print(f"resuming {target.run_dir} at step {target.step} ({target.checkpoint.name})")
    return dataclasses.replace(merged, resume=str(target.checkpoint or target.run_dir))


def run_training(config: TrainConfig, given: set[str] | None = None) -> int:
    """Train with ``config``; print a summary; return the process exit status.

    Args:
        given: the fields named on the command line (``resume.flags_in_argv``), so a resumed
            run can tell a flag typed at its default value from one not typed at all; None
            compares with ``TrainConfig()`` instead.
    """
    from taichi_nerf.training.trainer import train_with_pose_optimization

    def run() -> int:
        cfg = _plan_resume(config, given) if config.resume else config
        print_summary(train_with_pose_optimization(cfg))
        return 0

    hint = "--resume latest"
    if config.experiment_name:
        hint += f" --experiment-name {config.experiment_name}"
    if config.output_dir != TrainConfig.output_dir:
        hint += f" --output-dir {config.output_dir}"
    return guarded(run, resume_hint=hint)


def _aligned(after: dict[str, Any]) -> str:
    value = after.get("aligned_translation_error_mean", math.nan)
    if after.get("aligned_degenerate"):
        return "aligned: n/a, the camera centres have too little spread for a Sim(3) fit"
    return f"aligned {value:.5f}"


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
          + (f" = {t_px:.3f} px" if t_px is not None else "") + f" ({_aligned(after)})")
    if after.get("anchored_rotation_error_mean") is not None:
        print(f"anchored        rotation {after['anchored_rotation_error_mean']:.4f} deg "
              f"({after.get('anchored_rotation_error_px_mean', math.nan):.3f} px), centre "
              f"{after['anchored_translation_error_mean']:.5f} (rig moved onto the initial "
              f"centres; exact relative poses would give "
              f"{after.get('anchor_floor_rotation_error_mean', math.nan):.4f} deg)")
    print(f"training        {metrics.get('train_time_s', 0.0):.1f} s, "
          f"{result['iters_per_sec']:.1f} it/s")
