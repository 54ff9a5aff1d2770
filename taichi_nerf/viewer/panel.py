"""The render panel: the viewer's own camera, rendered from the current field, a slice at a time.

:class:`RenderPanel` renders on the calling (training) thread in chunks of rays that fit the
time it is given, so a training step is never held up by more than its budget: a moved camera
restarts at the coarsest width of :data:`LEVEL_WIDTHS`; while the camera rests each finished
image is followed by one twice as wide, up to the finest, which is then re-rendered as the field
trains. Rendering never draws from torch's global RNG (it is forked and restored), never from
the sampler's, and leaves the renderer in the train/eval mode it found it in, so a run with the
viewer gives the same numbers as one without.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from taichi_nerf.viewer.controls import CameraView

__all__ = ["LEVEL_WIDTHS", "RenderSource", "RenderPanel"]

#: Widths (pixels) of the successive refinements of a resting view.
LEVEL_WIDTHS = (64, 128, 256)
MIN_CHUNK = 256  # rays: below this a call costs more in overhead than it renders


@dataclasses.dataclass
class RenderSource:
    """What rendering needs: a renderer (``render_rays(rays_o, rays_d, background=, train=)``),
    the background ``[3]``, the device, the scene box ``[6]`` (the ray bounds of a view) and the
    field's version (the training step: an image rendered at the current version is up to
    date)."""

    renderer: torch.nn.Module
    background: torch.Tensor
    device: torch.device
    scene_aabb: torch.Tensor
    version: int

    def bounds(self, position: np.ndarray) -> tuple[float, float]:
        """``(near, far)`` that hold the whole scene box seen from ``position``: the training
        cameras' bounds would cut the scene off for a viewer camera further away."""
        box = self.scene_aabb.detach().double().cpu().numpy()
        centre, half = 0.5 * (box[:3] + box[3:]), 0.5 * float(np.linalg.norm(box[3:] - box[:3]))
        distance = float(np.linalg.norm(np.asarray(position) - centre))
        return max(distance - half, 1e-3 * half), distance + half


@dataclasses.dataclass
class _Job:
    view: CameraView
    level: int
    width: int
    height: int
    rays_o: torch.Tensor
    rays_d: torch.Tensor
    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    version: int
    near: float
    far: float
    done: int = 0


class RenderPanel:
    """Progressive render of one camera view, in time slices (see the module docstring).

    ``finished`` holds the last complete image: ``{"rgb": uint8 [H, W, 3], "depth": uint8
    [H, W, 3], "width", "height", "version", "level"}``, or None before the first.
    """

    def __init__(self, level_widths: tuple[int, ...] = LEVEL_WIDTHS) -> None:
        self.level_widths = tuple(level_widths)
        self.view: CameraView | None = None
        self.job: _Job | None = None
        self.finished: dict | None = None
        self.rays_per_s = 20000.0  # first guess; measured from the first chunk on
        self.renders = 0

    def set_view(self, view: CameraView | None) -> None:
        """A new camera: drop the image in progress, start again at the coarsest width."""
        if view is not self.view:
            self.view, self.job = view, None

    def idle(self, version: int) -> bool:
        """Nothing to do: no view yet, or the finest image is of the current field."""
        if self.view is None:
            return True
        done = self.finished
        return (self.job is None and done is not None and done["view"] is self.view and
                done["level"] == len(self.level_widths) - 1 and done["version"] == version)

    def work(self, source: RenderSource, seconds: float) -> bool:
        """Render for about ``seconds`` (at least one chunk); True when an image was finished."""
        if self.idle(source.version):
            return False
        deadline = time.perf_counter() + max(seconds, 0.0)
        finished = False
        while True:
            if self.job is None:
                self.job = self._new_job(source)
            job = self.job
            left = job.rgb.shape[0] - job.done
            budget = deadline - time.perf_counter()
            count = min(left, max(MIN_CHUNK, int(self.rays_per_s * max(budget, 0.0))))
            tic = time.perf_counter()
            self._render_chunk(source, job, count)
            rate = count / max(time.perf_counter() - tic, 1e-6)
            self.rays_per_s = 0.7 * self.rays_per_s + 0.3 * rate
            if job.done == job.rgb.shape[0]:
                self._finish(source, job)
                finished = True
                if self.idle(source.version):
                    break
            if time.perf_counter() >= deadline:
                break
        return finished

    def _next_level(self) -> int:
        done = self.finished
        if done is None or done["view"] is not self.view:
            return 0
        return min(done["level"] + 1, len(self.level_widths) - 1)

    def _new_job(self, source: RenderSource) -> _Job:
        from taichi_nerf.rays import image_rays

        view, level = self.view, self._next_level()
        aspect = min(max(view.aspect, 0.25), 4.0)
        width = self.level_widths[level]
        height = max(1, int(round(width / aspect)))
        fy = 0.5 * height / math.tan(0.5 * min(max(view.fov_y, 1e-3), math.pi - 1e-3))
        intrinsics = torch.tensor([fy, fy, 0.5 * width, 0.5 * height], dtype=torch.float32,
                                  device=source.device)
        pose = torch.as_tensor(view.c2w, dtype=torch.float32, device=source.device)
        with torch.no_grad():
            rays_o, rays_d = image_rays(pose, intrinsics, width, height)
        n = rays_o.shape[0]
        empty = dict(dtype=torch.float32, device=source.device)
        return _Job(view, level, width, height, rays_o, rays_d, torch.zeros(n, 3, **empty),
                    torch.zeros(n, **empty), torch.zeros(n, **empty), source.version,
                    *source.bounds(view.c2w[:, 3]))

    def _render_chunk(self, source: RenderSource, job: _Job, count: int) -> None:
        renderer = source.renderer
        was_training = renderer.training
        # the renderer's own ray bounds (near, far) are the training cameras'; the view's
        # are set for this call only and put back before training goes on
        bounds = {k: getattr(renderer, k) for k in ("near", "far") if hasattr(renderer, k)}
        devices = [source.device] if source.device.type == "cuda" else []
        lo, hi = job.done, job.done + count
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                renderer.eval()
                if len(bounds) == 2:
                    renderer.near, renderer.far = job.near, job.far
                out = renderer.render_rays(job.rays_o[lo:hi], job.rays_d[lo:hi],
                                           background=source.background, train=False)
            job.rgb[lo:hi] = out["rgb"]
            job.opacity[lo:hi] = out["opacity"]
            job.depth[lo:hi] = out["depth"]
        finally:
            for key, value in bounds.items():
                setattr(renderer, key, value)
            renderer.train(was_training)
        job.done = hi

    def _finish(self, source: RenderSource, job: _Job) -> None:
        from taichi_nerf.video import colorize_depth, depth_range

        h, w = job.height, job.width
        rgb = job.rgb.reshape(h, w, 3).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        depth, opacity = job.depth.reshape(h, w), job.opacity.reshape(h, w)
        lo, hi = depth_range(depth, opacity, job.near, job.far)
        self.finished = {"rgb": rgb, "depth": colorize_depth(depth, opacity, lo, hi),
                         "width": w, "height": h, "version": job.version, "level": job.level,
                         "view": job.view}
        self.renders += 1
        self.job = None

    def image(self, mode: str) -> np.ndarray | None:
        """The last finished image, ``uint8 [H, W, 3]``, RGB or colour-mapped depth."""
        if self.finished is None:
            return None
        return np.ascontiguousarray(self.finished["depth" if mode == "depth" else "rgb"])
