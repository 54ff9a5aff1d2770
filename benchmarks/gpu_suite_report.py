"""Helpers of ``benchmarks/gpu_suite.py``: the machine description and the lego rows' summary.

Reads only files (``metrics.json``, ``experiment_config.json``, the latest checkpoint when a
row was stopped at its limit), so it works on partial results.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

#: Headline keys copied from each run's metrics.json (those present).
METRIC_KEYS = ("test_psnr", "test_ssim", "rotation_error_mean", "rotation_error_px_mean",
               "translation_error_mean", "translation_error_px_mean",
               "aligned_rotation_error_mean", "aligned_translation_error_mean", "train_time_s",
               "iters_per_sec", "peak_memory_bytes", "device", "step", "best_val_psnr")


def _run(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


#: Modules the suite's stages import; their versions (or None when missing) go in summary.json.
MODULES = ("torch", "taichi", "numpy", "imageio", "PIL", "tyro", "tqdm", "tensorboard", "pytest",
           "pytest_timeout")


def _module_versions() -> dict:
    from importlib import import_module

    versions = {}
    for name in MODULES:
        try:
            module = import_module(name)
            versions[name] = str(getattr(module, "__version__", "present"))
        except Exception:  # noqa: BLE001 - missing or broken: record it, do not stop
            versions[name] = None
    return versions


def environment() -> dict:
    """Device, versions, git commit, available modules: what a result file must name."""
    import torch

    try:
        import taichi as ti

        taichi_version = ".".join(map(str, ti.__version__))
    except ImportError:
        taichi_version = None
    root = Path(__file__).resolve().parents[1]
    cuda = torch.cuda.is_available()
    return {
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "cuda_available": cuda, "cpu_count": os.cpu_count(),
        "nvidia_smi": _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"]) if cuda else None,
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "taichi": taichi_version,
        "modules": _module_versions(),
        "git_commit": _run(["git", "-C", str(root), "rev-parse", "HEAD"]),
        "git_dirty": bool(_run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"])),
    }


def _from_checkpoint(run: Path) -> dict:
    """A row stopped at its limit: the last history entry of checkpoint_latest.pt, if any."""
    path = run / "checkpoint_latest.pt"
    if not path.exists():
        return {"status": "no metrics.json and no checkpoint"}
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    last = (state.get("history") or [{}])[-1]
    return {"status": "stopped at its limit (from checkpoint_latest.pt)",
            "step": state.get("step"), "train_time_s": state.get("elapsed_s"),
            "rotation_error_mean": last.get("rotation_error_mean"),
            "translation_error_mean": last.get("translation_error_mean"),
            "val_psnr": (state.get("val_metrics") or {}).get("val_psnr")}


def lego_summary(runs: Path) -> dict:
    """One row per run folder under ``runs``: headline metrics, or what a stopped row left."""
    rows = {}
    for run in sorted(p for p in runs.glob("*") if p.is_dir()) if runs.exists() else []:
        metrics_path = run / "metrics.json"
        if metrics_path.exists():
            metrics = json.loads(metrics_path.read_text())
            row = {"status": "done", **{k: metrics.get(k) for k in METRIC_KEYS}}
            initial = metrics.get("initial_pose_errors") or {}
            row["initial_rotation_error_mean"] = initial.get("rotation_error_mean")
            row["initial_translation_error_mean"] = initial.get("translation_error_mean")
            if row.get("peak_memory_bytes"):
                row["peak_memory_mib"] = row["peak_memory_bytes"] / 2**20
        else:
            row = _from_checkpoint(run)
        config = run / "experiment_config.json"
        if config.exists():
            info = json.loads(config.read_text())
            row["image_size"] = info.get("image_size")
            row["device"] = row.get("device") or info.get("device")
        rows[run.name] = row
    return {"rows": rows}
