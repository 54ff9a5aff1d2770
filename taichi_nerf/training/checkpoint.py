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

Files are serialised in memory, written to a temporary name in the same folder, fsynced and
renamed over the target, so a crash never leaves a torn ``checkpoint_latest.pt``; a full disk
or a write error is a one-line :class:`SaveError` (the temporary file removed, earlier files
intact); the temporary files of a killed run are removed at resume
(:func:`remove_stale_temp_files`). Finding the checkpoint for ``--resume`` is
:mod:`taichi_nerf.training.resume`.
"""

from __future__ import annotations

import errno
import io
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


class SaveError(OSError):
    """Writing a run file failed (disk full, I/O error); the message is one line naming the
    folder, the space needed and what to do. Files written before are left intact."""


_TEMP_FILE = re.compile(r"^\..+\.tmp\d+$")  # what atomic_write / atomic_link leave on a kill


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**17 else f"{size / 2**10:.0f} kB"


def _save_error(path: Path, exc: BaseException, size: int | None) -> SaveError:
    folder, name = path.parent, path.name
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
        size is not None and free is not None and free < size)
    room = "" if free is None else f"{_megabytes(free)} free"
    if full:
        need = f"needs {_megabytes(size)}, " if size is not None else ""
        what = f"no space left on the device ({need}{room})"
    else:
        what = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0]
    error = SaveError(f"cannot write {name} in {folder}: {what}; the files written before are "
                      f"intact: free space (or move the run folder), then continue with "
                      f"--resume {folder}")
    error.errno = getattr(exc, "errno", None) or errno.EIO
    return error


def _write_bytes(tmp: Path, data: bytes) -> None:
    """Write, flush and fsync ``data`` into a new file ``tmp`` (a seam for fault-injection tests)."""
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None]) -> Path:
    """The one atomic writer: ``data`` (bytes, or ``write(file)``) into a temporary file beside
    ``path``, fsync, then ``os.replace`` over ``path``; the temporary file never outlives a
    failure, and the old ``path`` stays as it was.

    Raises:
        SaveError: disk full (checked before writing when ``data`` is bytes) or any write error.
    """
    path = Path(path)
    if callable(data):
        buffer = io.BytesIO()
        data(buffer)
        data = buffer.getvalue()
    size = len(data)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        free = shutil.disk_usage(path.parent).free
        if free < size:
            raise OSError(errno.ENOSPC, "no space left on device")
        _write_bytes(tmp, data)
        os.replace(tmp, path)
    except OSError as exc:
        raise _save_error(path, exc, size) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write` (serialised in memory first, so the size is
    known and a full disk is a clear :class:`SaveError`, not torch's zip-writer error)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """JSON (indent 2) through :func:`atomic_write`."""
    return atomic_write(path, (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8"))


def atomic_link(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s bytes atomically: hard link (no copy) else copy, then rename."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        raise _save_error(dst, exc, src.stat().st_size if src.exists() else None) from None
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[str]:
    """Delete the temporary files (``.checkpoint_N.pt.tmpPID`` ...) a killed run left in
    ``run_dir``; call it only while holding the run folder's lock. Returns their names."""
    removed = []
    for path in sorted(Path(run_dir).iterdir()):
        if _TEMP_FILE.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def count_nonfinite(obj: Any) -> int:
    """Non-finite entries in the floating-point tensors of a (nested) state dict."""
    if torch.is_tensor(obj):
        return int((~torch.isfinite(obj)).sum()) if obj.is_floating_point() else 0
    if isinstance(obj, dict):
        return sum(count_nonfinite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(count_nonfinite(v) for v in obj)
    return 0


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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (``mmap``: tensors are mapped, not read,
    for a cheap look at its ``config`` and ``step``).

    Raises:
        CheckpointError: missing file, unreadable file, or a file that is not one of ours.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable taichi-nerf checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a taichi-nerf checkpoint (no '{CHECKPOINT_FORMAT}' tag)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint (missing {', '.join(missing)})")
    return state


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
