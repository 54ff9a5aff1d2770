"""What the browser asked for, recorded by the server's threads, read by the training thread.

Taichi kernels must never run from two threads at once, so viser's callbacks (its event loop and
its thread pool) do nothing but write here, under a lock; rendering, field and pose access all
happen on the training thread between steps (:mod:`taichi_nerf.viewer.hook`). Nothing here
imports viser or Taichi.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Literal

import numpy as np

__all__ = ["CameraView", "ViewerControls", "opencv_to_opengl"]

RenderMode = Literal["rgb", "depth"]


def opencv_to_opengl(rotation: np.ndarray) -> np.ndarray:
    """A camera-to-world rotation ``[3, 3]`` in OpenCV axes (viser: +z forward, +y down) in this
    project's OpenGL axes (looks down -z, +y up), or back: the same flip of y and z both ways."""
    return np.asarray(rotation, dtype=np.float64) @ np.diag([1.0, -1.0, -1.0])


@dataclasses.dataclass(frozen=True)
class CameraView:
    """The viewer's own camera as a browser last sent it.

    Attributes:
        c2w: ``[3, 4]`` camera-to-world, OpenGL axes (as the training poses), scene units.
        fov_y: vertical field of view, radians.
        aspect: width / height of the browser's view.
        stamp: ``time.monotonic()`` when it arrived (the render refines once it rests).
    """

    c2w: np.ndarray
    fov_y: float
    aspect: float
    stamp: float

    @classmethod
    def from_viser(cls, wxyz, position, fov_y: float, aspect: float) -> CameraView:
        """From viser's camera state: quaternion ``wxyz`` and ``position`` of an OpenCV c2w."""
        w, x, y, z = (float(v) for v in np.asarray(wxyz, dtype=np.float64) /
                      max(float(np.linalg.norm(wxyz)), 1e-12))
        rotation = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
        c2w = np.concatenate([opencv_to_opengl(rotation),
                              np.asarray(position, dtype=np.float64).reshape(3, 1)], axis=1)
        return cls(c2w=c2w, fov_y=float(fov_y), aspect=float(aspect), stamp=time.monotonic())


class ViewerControls:
    """Thread-safe record of the browser's requests (server threads write, training reads).

    Attributes read by the training thread: ``paused``, ``render_mode``, ``show`` (the scene
    toggles: ``truth``, ``initial``, ``box``, ``grid``), :meth:`camera` and
    :meth:`take_save_request`. ``version`` counts every change, so a reader can tell at the cost
    of one integer comparison whether anything happened since it last looked.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.paused = False
        self.render_mode: RenderMode = "rgb"
        self.show = {"truth": True, "initial": True, "box": True, "grid": False}
        self.version = 0
        self._camera: CameraView | None = None
        self._save_requests = 0

    def _changed(self) -> None:
        self.version += 1

    def set_camera(self, view: CameraView | None) -> None:
        """The browser's camera (None: no browser is connected any more)."""
        with self._lock:
            self._camera = view
            self._changed()

    def camera(self) -> CameraView | None:
        with self._lock:
            return self._camera

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self.paused = bool(paused)
            self._changed()

    def toggle_pause(self) -> None:
        with self._lock:
            self.paused = not self.paused
            self._changed()

    def set_render_mode(self, mode: str) -> None:
        if mode not in ("rgb", "depth"):
            raise ValueError(f"render mode must be rgb or depth, got {mode!r}")
        with self._lock:
            self.render_mode = mode  # type: ignore[assignment]
            self._changed()

    def set_shown(self, what: str, visible: bool) -> None:
        if what not in self.show:
            raise ValueError(f"unknown scene toggle {what!r}; one of {', '.join(self.show)}")
        with self._lock:
            self.show = {**self.show, what: bool(visible)}
            self._changed()

    def request_save(self) -> None:
        with self._lock:
            self._save_requests += 1
            self._changed()

    def take_save_request(self) -> bool:
        """True once per burst of "save checkpoint now" clicks since the last call."""
        with self._lock:
            asked, self._save_requests = self._save_requests > 0, 0
            return asked
