"""The 3-D scene of the viewer: the training cameras, the scene box, the occupancy grid.

Every training camera is drawn three times: its **current** pose (with its image as a
thumbnail, coloured by its current rotation error in pixels, :func:`error_colour`), its
**ground-truth** pose (blue, when the scene has one) and its **initial** pose (grey). Poses are
this project's camera-to-world ``[N, 3, 4]`` in OpenGL axes; viser's frustums use OpenCV axes,
so each rotation is flipped (:func:`~taichi_nerf.viewer.controls.opencv_to_opengl`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from taichi_nerf.viewer.controls import opencv_to_opengl

__all__ = ["CameraSet", "SceneView", "error_colour", "legend_html", "TRUTH_COLOUR",
           "INITIAL_COLOUR", "ERROR_STOPS", "to_wxyz"]

TRUTH_COLOUR = (40, 110, 240)
INITIAL_COLOUR = (150, 150, 150)
BOX_COLOUR = (90, 90, 90)
GRID_COLOUR = (255, 140, 0)
#: The error colour ramp, ``(fraction of the legend's top, RGB)``: green, yellow, red.
ERROR_STOPS = ((0.0, (30, 170, 70)), (0.5, (235, 190, 20)), (1.0, (220, 30, 30)))
THUMBNAIL_WIDTH = 48
MAX_GRID_POINTS = 40000


def error_colour(error_px: float, top_px: float) -> tuple[int, int, int]:
    """The ramp's colour of ``error_px`` on a legend from 0 to ``top_px`` (clamped)."""
    x = min(max(float(error_px) / max(top_px, 1e-9), 0.0), 1.0)
    for (x0, c0), (x1, c1) in zip(ERROR_STOPS[:-1], ERROR_STOPS[1:]):
        if x <= x1:
            a = (x - x0) / (x1 - x0)
            return tuple(int(round(u + a * (v - u))) for u, v in zip(c0, c1))
    return ERROR_STOPS[-1][1]


def legend_html(top_px: float, label: str) -> str:
    """The colour legend: a gradient bar from 0 to ``top_px`` pixels and what it measures."""
    stops = ", ".join(f"rgb{c} {100 * x:.0f}%" for x, c in ERROR_STOPS)
    swatch = ("display:inline-block;width:0.9em;height:0.9em;border-radius:2px;"
              "vertical-align:middle;margin-right:0.3em;background:rgb{}")
    return (f'<div style="font-size:0.8em;padding:0.2em 0.5em">'
            f"<div>{label}</div>"
            f'<div style="height:0.8em;border-radius:3px;background:linear-gradient(to right, '
            f'{stops})"></div>'
            f'<div style="display:flex;justify-content:space-between"><span>0</span>'
            f"<span>{top_px / 2:g}</span><span>&ge; {top_px:g} px</span></div>"
            f'<div><span style="{swatch.format(TRUTH_COLOUR)}"></span>ground truth '
            f'<span style="{swatch.format(INITIAL_COLOUR)};margin-left:0.8em"></span>initial'
            f"</div></div>")


def to_wxyz(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(wxyz [4], position [3])`` of viser's OpenCV frame for an OpenGL c2w ``[3, 4]``."""
    r = opencv_to_opengl(np.asarray(c2w, dtype=np.float64)[:3, :3])
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = (0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s)
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = ((r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s)
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = ((r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = ((r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s)
    q = np.asarray(q) / np.linalg.norm(q)
    return (q if q[0] >= 0 else -q), np.asarray(c2w, dtype=np.float64)[:3, 3].copy()


@dataclasses.dataclass
class CameraSet:
    """What the scene shows of the training cameras (CPU tensors, this project's conventions).

    Attributes:
        initial: ``[N, 3, 4]`` c2w poses training started from.
        reference: ``[N, 3, 4]`` what errors are measured against: the ground truth, or the
            input poses of a capture (``has_truth`` False: then no ground-truth frustums).
        has_truth: whether ``reference`` is a ground truth.
        intrinsics: ``[N, 4]`` ``(fx, fy, cx, cy)`` in pixels of a ``width x height`` image.
        thumbnails: ``uint8 [N, h, w, 3]`` small copies of the training images.
        pixel_deg: degrees per pixel (horizontal field of view / width): errors in px.
        scene_aabb: ``[6]`` scene box ``(min xyz, max xyz)``.
    """

    initial: torch.Tensor
    reference: torch.Tensor
    has_truth: bool
    intrinsics: torch.Tensor
    width: int
    height: int
    thumbnails: np.ndarray
    pixel_deg: float
    scene_aabb: torch.Tensor

    @classmethod
    def from_image_set(cls, train, initial: torch.Tensor, reference: torch.Tensor,
                       has_truth: bool, pixel_deg: float) -> CameraSet:
        """From a training image set (``images uint8 [N, H, W, 3]``, ``intrinsics``, box)."""
        images = torch.as_tensor(train.images)
        stride = max(1, math.ceil(int(train.width) / THUMBNAIL_WIDTH))
        thumbs = images[:, ::stride, ::stride, :3].contiguous().cpu().numpy().astype(np.uint8)
        return cls(initial=initial.detach().cpu().double(),
                   reference=reference.detach().cpu().double(), has_truth=bool(has_truth),
                   intrinsics=torch.as_tensor(train.intrinsics).detach().cpu().double(),
                   width=int(train.width), height=int(train.height), thumbnails=thumbs,
                   pixel_deg=float(pixel_deg),
                   scene_aabb=torch.as_tensor(train.scene_aabb).detach().cpu().double())

    def rotation_errors_px(self, poses: torch.Tensor) -> np.ndarray:
        """Per-camera rotation error ``[N]`` of ``poses`` against ``reference``, in pixels."""
        from taichi_nerf.pose_metrics import rotation_geodesic_deg

        deg = rotation_geodesic_deg(poses.detach().cpu().double()[:, :3, :3],
                                    self.reference[:, :3, :3])
        return (deg / self.pixel_deg).numpy()

    def centre_and_radius(self) -> tuple[np.ndarray, float]:
        """The scene box centre and the median camera distance to it."""
        box = self.scene_aabb.numpy()
        centre = 0.5 * (box[:3] + box[3:])
        distances = np.linalg.norm(self.reference[:, :, 3].numpy() - centre, axis=1)
        return centre, float(np.median(distances)) if len(distances) else 1.0

    def up(self) -> np.ndarray:
        """The cameras' mean up direction (their +y), the viewer's up."""
        up = self.reference[:, :, 1].mean(0).numpy()
        norm = float(np.linalg.norm(up))
        return up / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])


class SceneView:
    """The viser scene nodes of a :class:`CameraSet` and their updates.

    Node names: ``/cameras/current/NNN``, ``/cameras/truth/NNN``, ``/cameras/initial/NNN``,
    ``/scene_box``, ``/occupancy``. ``top_px`` is the legend's top (fixed for the run: the
    largest initial error, at least 1 px), ``colours`` the current frustums' colours.
    """

    def __init__(self, server, cameras: CameraSet) -> None:
        self.server, self.cameras = server, cameras
        n = cameras.initial.shape[0]
        centre, radius = cameras.centre_and_radius()
        self.scale = 0.06 * radius
        fy = cameras.intrinsics[:, 1].numpy() if n else np.ones(0)
        self.fov_y = 2.0 * np.arctan(0.5 * cameras.height / np.maximum(fy, 1e-9))
        self.aspect = cameras.width / max(cameras.height, 1)
        initial_px = cameras.rotation_errors_px(cameras.initial)
        self.top_px = float(max(1.0, math.ceil(float(initial_px.max()) if n else 1.0)))
        scene = server.scene
        scene.set_up_direction(tuple(float(v) for v in cameras.up()))
        self.current, self.truth, self.initial = [], [], []
        self.colours: list[tuple[int, int, int]] = []
        self._poses = np.zeros((n, 3, 4))
        for i in range(n):
            self.initial.append(self._frustum(f"/cameras/initial/{i:03d}", cameras.initial[i],
                                              INITIAL_COLOUR, i, thickness=0.6))
            if cameras.has_truth:
                self.truth.append(self._frustum(f"/cameras/truth/{i:03d}", cameras.reference[i],
                                                TRUTH_COLOUR, i, thickness=0.6))
        for i in range(n):
            colour = error_colour(initial_px[i], self.top_px)
            self.current.append(self._frustum(f"/cameras/current/{i:03d}", cameras.initial[i],
                                              colour, i, image=cameras.thumbnails[i]))
            self.colours.append(colour)
            self._poses[i] = cameras.initial[i].numpy()
        box = cameras.scene_aabb.numpy()
        self.box = scene.add_line_segments("/scene_box", _box_edges(box), colors=BOX_COLOUR,
                                           thickness=0.004 * radius)
        self.grid_points = None
        self.grid_step = -1
        self.centre, self.radius = centre, radius

    def _frustum(self, name: str, pose: torch.Tensor, colour, i: int, *, image=None,
                 thickness: float = 1.0):
        wxyz, position = to_wxyz(pose.numpy())
        return self.server.scene.add_camera_frustum(
            name, fov=float(self.fov_y[i]), aspect=float(self.aspect), scale=self.scale,
            thickness=0.04 * self.scale * thickness, color=colour, image=image,
            format="jpeg", jpeg_quality=80, wxyz=wxyz, position=position)

    def legend(self) -> str:
        what = ("rotation error vs ground truth" if self.cameras.has_truth else
                "rotation moved from the input poses (no ground truth)")
        return legend_html(self.top_px, f"current cameras: {what}, pixels")

    def update(self, poses: torch.Tensor, errors_px: np.ndarray) -> None:
        """Move the current frustums to ``poses [N, 3, 4]`` and colour them by ``errors_px``
        (nodes whose pose and colour did not change send nothing)."""
        poses_np = poses.detach().cpu().double().numpy()
        moved = np.abs(poses_np - self._poses).reshape(len(poses_np), -1).max(1) > 1e-7
        for i, handle in enumerate(self.current):
            if moved[i]:
                handle.wxyz, handle.position = to_wxyz(poses_np[i])
                self._poses[i] = poses_np[i]
            colour = error_colour(errors_px[i], self.top_px)
            if colour != self.colours[i]:
                handle.color = colour
                self.colours[i] = colour

    def set_shown(self, show: dict[str, bool]) -> None:
        """Visibility of the ground-truth / initial frustums, the box and the grid."""
        for key, handles in (("truth", self.truth), ("initial", self.initial)):
            for handle in handles:
                if handle.visible != show[key]:
                    handle.visible = show[key]
        if self.box.visible != show["box"]:
            self.box.visible = show["box"]
        if self.grid_points is not None and self.grid_points.visible != show["grid"]:
            self.grid_points.visible = show["grid"]

    def update_grid(self, grid, step: int) -> None:
        """Points at the centres of the occupied cells of an ``OccupancyGrid`` (a fixed stride
        when there are more than ``MAX_GRID_POINTS``: no random numbers are drawn)."""
        if step == self.grid_step:
            return
        occupied = torch.nonzero(grid.occupancy.reshape(-1)).reshape(-1)
        if occupied.numel() > MAX_GRID_POINTS:
            occupied = occupied[::math.ceil(occupied.numel() / MAX_GRID_POINTS)]
        box = grid.aabb.detach().cpu().double()
        cells = (grid.cell_coords(occupied).cpu().double() + 0.5) / grid.resolution
        points = (box[:3] + cells * (box[3:] - box[:3])).numpy().astype(np.float32)
        size = float((box[3:] - box[:3]).min()) / grid.resolution
        if self.grid_points is not None:
            self.grid_points.remove()
        self.grid_points = self.server.scene.add_point_cloud(
            "/occupancy", points=points.reshape(-1, 3), colors=GRID_COLOUR, point_size=size,
            point_shape="square", point_shading="flat")
        self.grid_step = step


def _box_edges(box: np.ndarray) -> np.ndarray:
    """The 12 edges ``[12, 2, 3]`` of an axis-aligned box ``(min xyz, max xyz)``."""
    lo, hi = box[:3], box[3:]
    corners = np.array([[(hi if (k >> a) & 1 else lo)[a] for a in range(3)] for k in range(8)])
    edges = [(k, k | (1 << a)) for k in range(8) for a in range(3) if not (k >> a) & 1]
    return np.stack([corners[[i, j]] for i, j in edges]).astype(np.float32)
