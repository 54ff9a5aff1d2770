"""Run folders and what describes a run: the folder itself, ``experiment_config.json``, device.

A run folder is never reused: a new run gets a fresh name (``_2``, ``_3`` ... when two runs start
in the same second), an ``--experiment-name`` that exists with content is refused.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from taichi_nerf.training.config import ConfigError, experiment_name, preset_name

__all__ = ["check_output_dir", "new_run_dir", "experiment_info", "device_name",
           "peak_memory_bytes"]


def check_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` and prove it is writable, else a one-line ConfigError."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to output dir {output_dir}: "
                          f"{exc.strerror or exc}; pass a writable --output-dir") from None


def new_run_dir(cfg) -> Path:
    """A fresh run folder (with ``images/`` and ``logs/``) for a resolved config."""
    root = Path(cfg.output_dir)
    if cfg.experiment_name:
        run_dir = root / cfg.experiment_name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(
                f"{run_dir} already exists; continue it with --resume latest --experiment-name "
                f"{cfg.experiment_name}, or choose another --experiment-name")
    else:
        base = experiment_name(cfg, time.strftime("%Y%m%d_%H%M%S"))
        run_dir, k = root / base, 1
        while run_dir.exists():  # two runs in one second: never share a folder
            k += 1
            run_dir = root / f"{base}_{k}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "images").mkdir(exist_ok=True)
        (run_dir / "logs").mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run folder {run_dir}: {exc.strerror or exc}") from None
    return run_dir


def device_name(device: torch.device) -> str:
    """Human-readable device name for result files."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_bytes(device: torch.device) -> int:
    """Peak CUDA memory allocated, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except ImportError:  # pragma: no cover - not on Linux/macOS
        return 0


def experiment_info(cfg, run_dir: Path, device: torch.device, train_set) -> dict[str, Any]:
    """The ``experiment_config.json`` dict: what was run, on what, with which versions."""
    import taichi_nerf

    noisy = cfg.init_mode == "noisy"
    return {
        "experiment_name": run_dir.name, "scene": cfg.scene, "model": cfg.model,
        "preset": preset_name(cfg.model, device), "init_mode": cfg.init_mode,
        "rotation_noise_deg": cfg.rotation_noise if noisy else 0.0,
        "translation_noise": cfg.translation_noise if noisy else None,
        "translation_noise_pct": cfg.translation_noise_pct if noisy else 0.0,
        "noise_seed": cfg.noise_seed, "noise_protocol": cfg.noise_protocol,
        "pose_mode": cfg.pose_mode,
        "learn_rotation": cfg.pose_mode in ("rotation", "both"),
        "learn_translation": cfg.pose_mode in ("translation", "both"),
        "pose_preconditioning": cfg.pose_preconditioning,
        "num_train_images": len(train_set), "image_size": [train_set.width, train_set.height],
        "device": device_name(device), "command": sys.argv,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": {"taichi_nerf": taichi_nerf.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }
