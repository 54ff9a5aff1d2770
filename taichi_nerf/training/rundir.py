"""Run folders and what describes a run: the folder itself, ``experiment_config.json``, device.

A run folder is never shared: it is created with an atomic ``mkdir`` (``_2``, ``_3`` ... when two
unnamed runs start in the same second) and then locked (``fcntl.flock`` on ``.lock`` inside it,
held until the process ends, so even ``kill -9`` releases it); a second process that wants the
same folder, new or resumed, is refused with the holder's pid. An ``--experiment-name`` that
exists with content is refused with what to do about it.
"""

from __future__ import annotations

import errno
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from taichi_nerf.training.config import ConfigError, experiment_name, preset_name

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no folder locks, mkdir still atomic
    fcntl = None

__all__ = ["check_output_dir", "new_run_dir", "lock_run_dir", "unlock_run_dir",
           "experiment_info", "device_name", "peak_memory_bytes"]

LOCK_FILE = ".lock"
_HELD: dict[str, TextIO] = {}  # run folders this process holds: re-entered, not re-locked


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


def lock_run_dir(run_dir: Path) -> None:
    """Hold ``run_dir`` for this process until it exits (or :func:`unlock_run_dir`).

    Raises:
        ConfigError: another process holds it (named by pid).
    """
    key = str(Path(run_dir).resolve())
    if key in _HELD or fcntl is None:
        return
    handle = open(Path(run_dir) / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(f"{run_dir} is in use by another training process (pid {holder}); "
                          f"wait for it to end, or choose another --experiment-name") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _HELD[key] = handle


def unlock_run_dir(run_dir: Path) -> None:
    """Release a folder taken with :func:`lock_run_dir` (nothing if this process does not hold it)."""
    handle = _HELD.pop(str(Path(run_dir).resolve()), None)
    if handle is not None:
        handle.close()  # closing the descriptor drops the flock


def describe_existing(run_dir: Path, name: str) -> str:
    """Why an existing folder cannot take a new run, and what to do instead (one line)."""
    again = f"--resume latest --experiment-name {name}"
    if (run_dir / "metrics.json").is_file():
        return (f"{run_dir} already holds a finished run; choose another --experiment-name "
                f"(or train it longer with {again} --num-iters N)")
    if (run_dir / "checkpoint_latest.pt").is_file():
        return f"{run_dir} already exists; continue it with {again}, or choose another --experiment-name"
    if (run_dir / "config.json").is_file():
        return (f"{run_dir} already exists but holds no checkpoint (its run stopped before the "
                f"first one); start it again with {again}, or choose another --experiment-name")
    return f"{run_dir} already exists and is not a run folder; choose another --experiment-name"


def _claim(run_dir: Path) -> bool:
    """Atomically create and lock ``run_dir``; False if it already existed (then unlocked)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        if any(p.name != LOCK_FILE for p in run_dir.iterdir()):
            return False
    lock_run_dir(run_dir)  # another process may have made it in between: then "in use"
    if any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        unlock_run_dir(run_dir)
        return False
    return True


def _claim_quietly(run_dir: Path) -> bool:
    try:
        return _claim(run_dir)
    except ConfigError:  # created and locked by another process a moment ago
        return False


def new_run_dir(cfg) -> Path:
    """A fresh, locked run folder (with ``images/`` and ``logs/``) for a resolved config."""
    root = Path(cfg.output_dir)
    try:
        if cfg.experiment_name:
            run_dir = root / cfg.experiment_name
            if not _claim(run_dir):
                lock_run_dir(run_dir)  # a run still going there: "in use (pid N)"
                unlock_run_dir(run_dir)
                raise ConfigError(describe_existing(run_dir, cfg.experiment_name))
        else:
            base = experiment_name(cfg, time.strftime("%Y%m%d_%H%M%S"))
            run_dir, k = root / base, 1
            while not _claim_quietly(run_dir):  # two runs in one second: never share a folder
                k += 1
                run_dir = root / f"{base}_{k}"
        (run_dir / "images").mkdir(exist_ok=True)
        (run_dir / "logs").mkdir(exist_ok=True)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a fault, not a bad flag (exit 1)
            from taichi_nerf.training.checkpoint import SaveError

            error = SaveError(f"cannot create a run folder under {root}: no space left on the "
                              f"device; free space, or pass another --output-dir")
            error.errno = exc.errno
            raise error from None
        raise ConfigError(f"cannot create run folder under {root}: {exc.strerror or exc}; pass a "
                          f"writable --output-dir") from None
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
