"""Checkpoint files: atomic writes, ``weights_only`` loading, resume-path lookup.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` reads it (no pickled classes). Keys:

- ``format`` (``"taichi_nerf.checkpoint"``), ``version``, ``step`` (completed steps)
- ``config`` (the resolved TrainConfig as a dict)
- ``renderer`` (field + occupancy grid state_dict), ``poses`` (CameraPoseParameters state_dict:
  deltas and initial poses), ``initial_poses``, ``ground_truth_poses`` ``[N,3,4]``
- ``field_optimizer``, ``field_scheduler``, ``pose_optimizer``, ``pose_scheduler`` (None when
  poses are fixed)
- ``rng``: ``torch`` (CPU generator state), ``cuda`` (list or None), ``sampler`` (PixelSampler
  state), ``renderer`` (the marching jitter generator, or None; the occupancy grid's update
  RNG is seeded from its step, so it needs no state)
- ``num_rays`` (the adapted ray count), ``pose_errors``, ``val_metrics``, ``best_val_psnr``,
  ``history``, ``elapsed_s``

Files are written to a temporary name in the same folder and renamed over the target, so a crash
never leaves a torn ``checkpoint_latest.pt``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

CHECKPOINT_FORMAT = "taichi_nerf.checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("format", "step", "config", "renderer", "poses", "field_optimizer")
_STEP_FILE = re.compile(r"^checkpoint_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint path that is missing, unreadable or not a taichi-nerf checkpoint."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """The one atomic writer: ``write(file)`` into a temporary file beside ``path``, fsync,
    then ``os.replace`` over ``path``; the temporary file never outlives a failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """JSON (indent 2) through :func:`atomic_write`."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_link(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s bytes atomically: hard link (no copy) else copy, then rename."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def save_checkpoint(run_dir: Path, state: dict[str, Any], *, is_best: bool,
                    keep: int = 3) -> Path:
    """Write ``checkpoint_{step}.pt``, point ``checkpoint_latest.pt`` (and ``checkpoint_best.pt``
    when ``is_best``) at it, and drop all but the newest ``keep`` step files (0 keeps all)."""
    run_dir = Path(run_dir)
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    path = atomic_torch_save(state, run_dir / f"checkpoint_{state['step']}.pt")
    atomic_link(path, run_dir / "checkpoint_latest.pt")
    if is_best:
        atomic_link(path, run_dir / "checkpoint_best.pt")
    if keep > 0:
        steps = sorted(int(m.group(1)) for p in run_dir.iterdir()
                       if (m := _STEP_FILE.match(p.name)))
        for old in steps[:-keep]:
            (run_dir / f"checkpoint_{old}.pt").unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: missing file, unreadable file, or a file that is not one of ours.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable taichi-nerf checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a taichi-nerf checkpoint (no '{CHECKPOINT_FORMAT}' tag)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint (missing {', '.join(missing)})")
    return state


def resolve_resume_path(resume: str, output_dir: str | os.PathLike,
                        experiment_name: str | None = None) -> Path:
    """Turn ``--resume`` into a checkpoint file.

    ``latest``: ``{output_dir}/{experiment_name}/checkpoint_latest.pt`` when a name is given,
    else the newest run folder under ``output_dir`` that has one. A folder: its
    ``checkpoint_latest.pt``. Anything else: the file itself.
    """
    output_dir = Path(output_dir)
    if resume == "latest":
        if experiment_name:
            candidate = output_dir / experiment_name / "checkpoint_latest.pt"
            if not candidate.is_file():
                raise CheckpointError(f"--resume latest: no checkpoint_latest.pt in "
                                      f"{output_dir / experiment_name}")
            return candidate
        runs = [p for p in output_dir.glob("*/checkpoint_latest.pt")] if output_dir.is_dir() else []
        if not runs:
            raise CheckpointError(f"--resume latest: no run with a checkpoint_latest.pt under "
                                  f"{output_dir}")
        return max(runs, key=lambda p: p.stat().st_mtime)
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoint_latest.pt"
    if not path.is_file():
        raise CheckpointError(f"--resume: checkpoint not found: {path}")
    return path


def rng_state(sampler=None, renderer=None) -> dict[str, Any]:
    """Every random state the training loop draws from, as tensors (weights_only-safe): torch's
    global generators, the pixel sampler's, and the renderer's own (``rng_state()``, if any)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "sampler": sampler.state_dict() if sampler is not None else None,
        "renderer": renderer.rng_state() if hasattr(renderer, "rng_state") else None,
    }


def set_rng_state(state: dict[str, Any], sampler=None, renderer=None) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if sampler is not None and state.get("sampler") is not None:
        sampler.load_state_dict(state["sampler"])
    if hasattr(renderer, "set_rng_state") and state.get("renderer") is not None:
        renderer.set_rng_state(state["renderer"])
