"""Taichi start-up for taichi_nerf: lazy, idempotent, never at import.

Every op calls :func:`ensure_initialized` with the device of its tensors, so a user who never
calls :func:`init` gets the CPU backend for CPU tensors and CUDA for CUDA tensors. Call
``taichi_nerf.init("cuda")`` (or ``"cpu"``) first to choose explicitly.

Taichi can run one backend per process. Tensors must live where the backend runs: CPU tensors
given to ops on the CUDA backend (which Taichi would copy host -> device -> host on every launch)
and CUDA tensors given to the CPU backend raise :class:`DeviceMismatchError`.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import Literal

import torch

# Taichi's version check phones home at ti.init; turn it off before taichi is imported anywhere.
os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")

Arch = Literal["auto", "cpu", "cuda"]


class DeviceMismatchError(ValueError):
    """Tensors on a device the running Taichi backend does not serve (CPU tensors on CUDA, ...)."""


class BackendSwitchError(RuntimeError):
    """``init`` asked for another backend than the one Taichi already runs on."""

_lock = threading.Lock()
_arch: str | None = None


def cache_dir() -> Path:
    """Offline kernel cache: ``$TAICHI_NERF_CACHE``, else ``$XDG_CACHE_HOME/taichi_nerf/ticache``."""
    if os.environ.get("TAICHI_NERF_CACHE"):
        return Path(os.environ["TAICHI_NERF_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "taichi_nerf" / "ticache"


def init(arch: Arch = "auto", *, debug: bool = False, fast_math: bool = False) -> str:
    """Start Taichi once. Returns the backend in use, ``"cpu"`` or ``"cuda"``.

    Args:
        arch: ``"auto"`` picks CUDA when ``torch.cuda.is_available()``, else the CPU.
            ``"cuda"`` without a GPU raises ``RuntimeError``; it never falls back silently.
        debug: Taichi debug mode (bounds checks; slow).
        fast_math: let the compiler reorder float arithmetic (Taichi's default). Off by
            default: with it on, float32 marching can differ from its twin by a sample where a
            midpoint lies on a cell face, and we measured no speed-up on the CPU.

    Calling again with the same (or ``"auto"``) arch is a no-op; asking for a different backend
    after start-up raises ``RuntimeError`` (Taichi cannot switch backends in one process).
    """
    global _arch
    if arch not in ("auto", "cpu", "cuda"):
        raise ValueError(f"taichi_nerf.init: arch must be 'auto', 'cpu' or 'cuda', got {arch!r}")
    with _lock:
        if _arch is not None:
            if arch != "auto" and arch != _arch:
                raise BackendSwitchError(
                    f"taichi_nerf.init: Taichi already runs on {_arch!r}; it cannot switch to "
                    f"{arch!r} in the same process. Call init({arch!r}) before any op runs."
                )
            return _arch
        want = arch
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "taichi_nerf.init: arch='cuda' asked for, but torch sees no CUDA GPU; "
                "use arch='cpu' (or --device cpu)."
            )
        import taichi as ti

        path = cache_dir()
        path.mkdir(parents=True, exist_ok=True)
        ti.init(
            arch=ti.cuda if want == "cuda" else ti.cpu,
            offline_cache=True,
            offline_cache_file_path=str(path),
            log_level=ti.ERROR,
            debug=debug,
            fast_math=fast_math,
        )
        _arch = want
        atexit.register(_shutdown)
        return _arch


def _shutdown() -> None:
    # ti.reset flushes the offline cache to disk so the next process compiles nothing.
    global _arch
    if _arch is None:
        return
    try:
        import taichi as ti

        ti.reset()
    except Exception:  # noqa: BLE001 - best effort at interpreter exit
        pass
    _arch = None


def current_arch() -> str | None:
    """The backend Taichi runs on, or ``None`` before start-up."""
    return _arch


def ensure_initialized(device: torch.device, op: str = "taichi_nerf") -> str:
    """Start Taichi for tensors on ``device`` if needed; check the backend can take them.

    Raises:
        DeviceMismatchError: CUDA tensors on the CPU backend, or CPU tensors on the CUDA backend.
        ValueError: a device other than cpu or cuda.
    """
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: tensors on {device} are not supported (cpu or cuda only)")
    arch = _arch or init("cuda" if device.type == "cuda" else "cpu")
    if device.type == "cuda" and arch != "cuda":
        raise DeviceMismatchError(
            f"{op}: got CUDA tensors but Taichi runs on the CPU backend; call "
            "taichi_nerf.init('cuda') before the first op, or move the tensors to the CPU."
        )
    if device.type == "cpu" and arch == "cuda":
        raise DeviceMismatchError(
            f"{op}: got CPU tensors but Taichi runs on the CUDA backend (it would copy them to "
            "the GPU and back on every call); move them with .cuda(), or run CPU work in a "
            "process that calls taichi_nerf.init('cpu')."
        )
    return arch
