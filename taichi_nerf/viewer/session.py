"""One viewer: the server, its panel, the scene and the render panel, driven from one thread.

:class:`ViewerSession` is what both the live viewer (:class:`~taichi_nerf.viewer.hook.
ViewerHook`, between training steps) and the viewer of a finished run
(:func:`~taichi_nerf.viewer.run.serve_run`) drive: :meth:`refresh` pushes the poses, colours,
numbers and plot; :meth:`render` spends a time slice on the render panel. Both must be called on
the thread that owns the field (Taichi kernels never run from two threads at once); the server's
own threads only record requests in :attr:`controls`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from taichi_nerf.viewer.controls import ViewerControls
from taichi_nerf.viewer.panel import RenderPanel, RenderSource
from taichi_nerf.viewer.scene import CameraSet, SceneView
from taichi_nerf.viewer.server import ControlPanel, start_server, stop_server

__all__ = ["ViewerSession", "format_numbers"]

MAX_PLOT_POINTS = 2000


def _fmt(value: Any, spec: str, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:{spec}}{unit}"


def format_numbers(numbers: dict[str, Any], has_truth: bool) -> list[tuple[str, str]]:
    """The live-numbers table rows from ``numbers`` (step, loss, psnr, val_psnr, pose errors)."""
    what = "error" if has_truth else "moved"
    rows = [("step", f"{numbers['step']}" + (f" / {numbers['num_iters']}"
                                             if numbers.get("num_iters") else "")),
            ("loss", _fmt(numbers.get("loss"), ".5f")),
            ("train PSNR", _fmt(numbers.get("psnr"), ".2f", " dB"))]
    if numbers.get("val_psnr") is not None:
        rows.append(("val PSNR", _fmt(numbers["val_psnr"], ".2f", " dB")))
    rows += [(f"rotation {what} (mean)",
              f"{_fmt(numbers.get('rotation_deg'), '.3f', '°')} = "
              f"{_fmt(numbers.get('rotation_px'), '.2f', ' px')}"),
             (f"translation {what} (mean)",
              f"{_fmt(numbers.get('translation'), '.4f')} = "
              f"{_fmt(numbers.get('translation_px'), '.2f', ' px')}")]
    return rows


class ViewerSession:
    """A started viewer (see the module docstring).

    Args:
        cameras: the training cameras to draw.
        host, port: where to serve (exactly there, else :class:`ViewerError`).
        live: a training run (pause / save buttons) or a finished run.
        grid: the renderer's occupancy grid, or None (no grid toggle).
        label: shown at the top of the panel.
    """

    def __init__(self, cameras: CameraSet, *, host: str, port: int, live: bool, grid=None,
                 label: str = "taichi-nerf") -> None:
        self.controls = ViewerControls()
        self.server = start_server(host, port, label)
        self.host, self.port = host, port
        self.closed = False
        try:
            self.panel = ControlPanel(self.server, self.controls, live=live,
                                      has_grid=grid is not None)
            self.scene = SceneView(self.server, cameras)
            self.panel.set_legend(self.scene.legend())
            self._initial_camera(cameras)
        except BaseException:
            self.close()
            raise
        self.cameras, self.grid = cameras, grid
        self.render_panel = RenderPanel()
        self.numbers: dict[str, Any] = {}
        self.plot: tuple[list[int], list[float], list[float]] = ([], [], [])
        self._seen = (-1, -1)  # (controls version, step) last shown
        self._shown_image = None

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def _initial_camera(self, cameras: CameraSet) -> None:
        centre, radius = cameras.centre_and_radius()
        up = cameras.up()
        if cameras.reference.shape[0]:
            away = cameras.reference[0, :, 3].numpy() - centre
            away = away - up * float(away @ up)  # level with the scene, then lifted
            norm = float((away @ away) ** 0.5)
            away = away / norm if norm > 1e-6 else cameras.reference[0, :, 2].numpy()
        else:
            away = up
        initial = self.server.initial_camera
        initial.position = tuple(float(v) for v in centre + 1.9 * radius * (0.8 * away + 0.6 * up))
        initial.look_at = tuple(float(v) for v in centre)
        initial.up = tuple(float(v) for v in up)

    # ------------------------------------------------------------------ on the owning thread
    def add_plot_point(self, step: int, rotation_px: float, translation_px: float) -> None:
        steps, rot, trans = self.plot
        if steps and steps[-1] >= step:
            return
        steps.append(int(step))
        rot.append(float(rotation_px))
        trans.append(float(translation_px))
        if len(steps) > MAX_PLOT_POINTS:  # keep the first point and every other one after it
            self.plot = (steps[:1] + steps[1::2], rot[:1] + rot[1::2], trans[:1] + trans[1::2])

    def refresh(self, poses: torch.Tensor, numbers: dict[str, Any], status: str) -> None:
        """Show ``poses [N, 3, 4]`` (current c2w), ``numbers`` (see :func:`format_numbers`) and
        ``status``; the scene toggles and the occupancy grid as asked."""
        errors_px = self.cameras.rotation_errors_px(poses)
        show = dict(self.controls.show)
        with self.server.atomic():
            self.scene.update(poses, errors_px)
            if show["grid"] and self.grid is not None:
                self.scene.update_grid(self.grid, int(numbers["step"]))
            self.scene.set_shown(show)
            self.numbers = dict(numbers)
            self.panel.set_numbers(format_numbers(numbers, self.cameras.has_truth), status)
            self.panel.set_plot(*self.plot)
            self.panel.set_paused(self.controls.paused)
        self._seen = (self.controls.version, int(numbers["step"]))

    def needs_refresh(self, step: int) -> bool:
        """Something to show: a new step, or a toggle / button since the last refresh."""
        return self._seen != (self.controls.version, step)

    def render(self, source: RenderSource, seconds: float) -> bool:
        """Spend about ``seconds`` on the render panel; True when something was done."""
        self.render_panel.set_view(self.controls.camera())
        mode = self.controls.render_mode
        worked = False
        if not self.render_panel.idle(source.version):
            self.render_panel.work(source, seconds)
            worked = True
        finished = self.render_panel.finished
        key = (self.render_panel.renders, mode)  # the image count: which image is shown
        if finished is not None and key != self._shown_image:
            self.panel.image.image = self.render_panel.image(mode)
            self.panel.render_info.content = (
                f"{finished['width']}x{finished['height']} px, {mode}, field of step "
                f"{finished['version']}")
            self._shown_image = key
        return worked

    def set_saved(self, text: str) -> None:
        self.panel.saved.content = text

    def close(self, status: str | None = None) -> None:
        """Stop the server (idempotent); ``status`` is shown first to connected browsers."""
        if self.closed:
            return
        self.closed = True
        try:
            if status is not None and hasattr(self, "panel"):
                self.panel.status.content = status
                self.server.flush()
                time.sleep(0.05)
        finally:
            stop_server(self.server)
