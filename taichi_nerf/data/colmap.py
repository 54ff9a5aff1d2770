"""COLMAP captures: a sparse model under ``<scene>/sparse/0/`` (or ``sparse/``) plus ``images/``.

The model (binary ``*.bin`` or text ``*.txt``: cameras, images, points3D) is read with
``pycolmap``, the COLMAP project's own binding (``pip install 'taichi-nerf[colmap]'``).

- **Poses.** COLMAP stores world-to-camera ``x_cam = R x_world + t`` with an OpenCV camera
  (looks down +z, +y down). Each registered image becomes an OpenGL camera-to-world pose
  (looks down -z, +y up, the convention of ``taichi_nerf.rays``):
  ``c2w = [R^T | -R^T t] @ diag(1, -1, -1, 1)``, in COLMAP's own world frame (no re-centring
  or rescaling, so refined poses go back into the capture's frame and units). The poses are
  the capture's estimate, not ground truth: ``ImageSet.poses_are_ground_truth`` is False.
- **Intrinsics** per camera: ``PINHOLE`` (fx, fy, cx, cy), ``SIMPLE_PINHOLE`` (f, cx, cy), and
  ``SIMPLE_RADIAL`` / ``RADIAL`` / ``OPENCV`` when all their distortion coefficients are zero.
  A camera with lens distortion, or any other model (fisheye, ...), is refused with the command
  that undistorts the capture (``colmap image_undistorter`` writes ``images/`` + ``sparse/``
  with PINHOLE cameras, which this loader reads). COLMAP puts pixel centres at ``+0.5``, as we
  do, so ``cx, cy`` carry over unchanged.
- **Images** are ``images/<name>`` for each image ``name`` in the model; an image on disk of
  another size with the camera's aspect ratio rescales the intrinsics (as ``transforms.py``).
- **Splits**: images sorted by name; every ``holdout_every``-th (0, 8, 16, ... by default, as
  nerfstudio / mip-NeRF 360) is the test set, ``val`` is the same held-out set, the rest train.
- **Bounds**: the scene box spans the 1st..99th percentile of the sparse points per axis, padded
  by ``AABB_PADDING`` of its size on each side (robust to stray points); ``near`` is half the
  1st-percentile depth of the points in front of the cameras, ``far`` the distance from the
  farthest camera to the farthest box corner. A model without points falls back to the camera
  box of ``transforms.capture_bounds``.

Example::

    from taichi_nerf.data import load_scene
    scene = load_scene("/captures/garden", splits=("train", "test"), downscale=4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taichi_nerf.data.blender import ImageSet, check_load_options, load_frames
from taichi_nerf.data.paths import COLMAP_IMAGES_DIR, DatasetError, colmap_model_dir
from taichi_nerf.data.transforms import DEFAULT_HOLDOUT_EVERY, capture_bounds, holdout_split

__all__ = [
    "AABB_PADDING",
    "ColmapModel",
    "colmap_bounds",
    "colmap_to_opengl_c2w",
    "load_colmap_scene",
    "read_colmap_model",
]

#: Padding of the point-percentile scene box, as a fraction of its size on each side.
AABB_PADDING = 0.1
#: Percentiles of the sparse points that bound the scene box (drops stray points).
POINT_PERCENTILES = (1.0, 99.0)
_MAX_DEPTH_POINTS = 20000
#: ``(fx, fy, cx, cy)`` parameter indices and distortion indices of each accepted model.
_PINHOLE_LAYOUT = {
    "SIMPLE_PINHOLE": ((0, 0, 1, 2), ()),
    "PINHOLE": ((0, 1, 2, 3), ()),
    "SIMPLE_RADIAL": ((0, 0, 1, 2), (3,)),
    "RADIAL": ((0, 0, 1, 2), (3, 4)),
    "OPENCV": ((0, 1, 2, 3), (4, 5, 6, 7)),
}
_FLIP_YZ = np.diag([1.0, -1.0, -1.0])


@dataclass
class ColmapModel:
    """The parts of a COLMAP model the loader uses, sorted by image name.

    Attributes:
        names: image names (relative to ``images/``).
        c2w: ``float64 [N, 3, 4]`` OpenGL camera-to-world poses (COLMAP's world frame).
        intrinsics: ``float64 [N, 4]`` ``(fx, fy, cx, cy)`` in pixels of the camera's size.
        sizes: ``(width, height)`` of each image's camera.
        points: ``float64 [P, 3]`` sparse points (world frame).
    """

    names: list[str]
    c2w: np.ndarray
    intrinsics: np.ndarray
    sizes: list[tuple[int, int]]
    points: np.ndarray


def colmap_to_opengl_c2w(cam_from_world: np.ndarray) -> np.ndarray:
    """COLMAP world-to-camera ``[..., 3, 4]`` (OpenCV camera) -> OpenGL c2w ``[..., 3, 4]``."""
    rot, t = cam_from_world[..., :3, :3], cam_from_world[..., :3, 3:]
    rot_c2w = np.swapaxes(rot, -1, -2)
    centre = -rot_c2w @ t
    return np.concatenate([rot_c2w @ _FLIP_YZ, centre], axis=-1)


def _import_pycolmap(model_dir: Path):
    try:
        import pycolmap
    except ImportError:
        raise DatasetError(
            f"{model_dir}: reading a COLMAP model needs pycolmap; "
            "install it with: pip install 'taichi-nerf[colmap]'"
        ) from None
    return pycolmap


def _camera_intrinsics(model_dir: Path, camera_id: int, camera: Any) -> np.ndarray:
    """``(fx, fy, cx, cy)`` of a pinhole(-equivalent) camera; anything else is refused."""
    model = camera.model.name if hasattr(camera.model, "name") else str(camera.model)
    params = np.asarray(camera.params, dtype=np.float64)
    scene_dir = model_dir.parent.parent if model_dir.name == "0" else model_dir.parent
    images, out = scene_dir / COLMAP_IMAGES_DIR, scene_dir.with_name(scene_dir.name + "_undistorted")
    undistort = (
        f"undistort the capture first: colmap image_undistorter --image_path {images} "
        f"--input_path {model_dir} --output_path {out} (or in Python: pycolmap."
        f"undistort_images('{out}', '{model_dir}', '{images}')), then pass --scene {out}"
    )
    if model not in _PINHOLE_LAYOUT:
        raise DatasetError(
            f"{model_dir}: camera {camera_id} uses the {model} model, which is not supported "
            f"(only PINHOLE / SIMPLE_PINHOLE, or {', '.join(list(_PINHOLE_LAYOUT)[2:])} without "
            f"distortion); {undistort}"
        )
    focal_centre, distortion = _PINHOLE_LAYOUT[model]
    coefficients = params[list(distortion)]
    if np.any(coefficients != 0.0):
        values = ", ".join(f"{c:.4g}" for c in coefficients)
        raise DatasetError(
            f"{model_dir}: camera {camera_id} is {model} with lens distortion ({values}); rays "
            f"assume an undistorted pinhole camera, so {undistort}"
        )
    return params[list(focal_centre)]


def _cam_from_world(image: Any) -> np.ndarray:
    """``[3, 4]`` world-to-camera of a pycolmap image (a method since pycolmap 3.12)."""
    pose = image.cam_from_world
    pose = pose() if callable(pose) else pose
    matrix = pose.matrix
    return np.asarray(matrix() if callable(matrix) else matrix, dtype=np.float64)[:3, :4]


def _is_registered(image: Any) -> bool:
    value = getattr(image, "has_pose", None)
    if value is None:
        value = getattr(image, "registered", True)
    return bool(value() if callable(value) else value)


def read_colmap_model(model_dir: str | Path) -> ColmapModel:
    """Registered images, cameras and points of the COLMAP model in ``model_dir``.

    Raises:
        DatasetError: no pycolmap, an unreadable model, no registered image, or a camera that is
            not an undistorted pinhole.
    """
    model_dir = Path(model_dir)
    pycolmap = _import_pycolmap(model_dir)
    try:
        reconstruction = pycolmap.Reconstruction(str(model_dir))
    except Exception as exc:  # pycolmap raises ValueError / RuntimeError from C++
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatasetError(
            f"{model_dir}: cannot read the COLMAP model ({first}); it needs cameras, images "
            "and points3D as .bin or .txt files written by COLMAP"
        ) from None
    images = [im for im in reconstruction.images.values() if _is_registered(im)]
    if not images:
        raise DatasetError(
            f"{model_dir}: the COLMAP model has no registered images (COLMAP placed no camera); "
            "rerun the mapper, or point at another model folder"
        )
    images.sort(key=lambda im: im.name)
    cameras = reconstruction.cameras
    intrinsics_of: dict[int, np.ndarray] = {}
    for image in images:
        if image.camera_id not in intrinsics_of:
            camera = cameras[image.camera_id]
            intrinsics_of[image.camera_id] = _camera_intrinsics(model_dir, image.camera_id, camera)
    points = [np.asarray(p.xyz, dtype=np.float64) for p in reconstruction.points3D.values()]
    return ColmapModel(
        names=[im.name for im in images],
        c2w=colmap_to_opengl_c2w(np.stack([_cam_from_world(im) for im in images])),
        intrinsics=np.stack([intrinsics_of[im.camera_id] for im in images]),
        sizes=[(int(cameras[im.camera_id].width), int(cameras[im.camera_id].height))
               for im in images],
        points=np.stack(points) if points else np.zeros((0, 3)),
    )


def colmap_bounds(points: np.ndarray, c2w: np.ndarray) -> tuple[float, float, list[float]]:
    """``(near, far, aabb [6])`` from sparse points ``[P, 3]`` and OpenGL c2w ``[N, 3, 4]``
    (see the module docstring); without usable points, the box around the cameras.

    Raises:
        ValueError: no points and all cameras at one place (no scale to guess a box from).
    """
    centres = c2w[:, :, 3]
    finite = points[np.isfinite(points).all(axis=1)]
    if finite.shape[0] < 4:
        return capture_bounds(centres)
    lo, hi = np.percentile(finite, POINT_PERCENTILES, axis=0)
    pad = AABB_PADDING * np.maximum(hi - lo, 1e-3 * max(float((hi - lo).max()), 1e-9))
    lo, hi = lo - pad, hi + pad
    step = max(1, finite.shape[0] // _MAX_DEPTH_POINTS)
    sample = finite[::step]
    # Depth along the viewing direction (-z of the OpenGL camera) of every point in each camera.
    depth = -np.einsum("nk,npk->np", c2w[:, :, 2], sample[None] - centres[:, None])
    in_front = depth[depth > 0]
    corners = np.stack(np.meshgrid(*zip(lo, hi), indexing="ij"), -1).reshape(-1, 3)
    far = float(np.linalg.norm(centres[:, None] - corners[None], axis=-1).max())
    near = 0.5 * float(np.percentile(in_front, 1.0)) if in_front.size else 1e-3 * far
    near = min(max(near, 1e-4 * far), 0.5 * far)
    return near, far, np.concatenate([lo, hi]).tolist()


def _check_images_on_disk(images_dir: Path, names: Sequence[str]) -> list[Path]:
    paths = [images_dir / name for name in names]
    missing = [name for name, path in zip(names, paths) if not path.is_file()]
    if missing:
        raise DatasetError(
            f"{images_dir}: {len(missing)} of the {len(names)} images the COLMAP model lists are "
            f"not there (first: {missing[0]!r}); put the captured images in {images_dir} "
            "(image names in the model are relative to it)"
        )
    return paths


def _model_dir_or_error(scene_dir: Path) -> Path:
    model_dir = colmap_model_dir(scene_dir)
    if model_dir is None:
        raise DatasetError(
            f"{scene_dir / 'sparse' / '0'}: no COLMAP model (cameras.bin or cameras.txt, with "
            f"images and points3D) here or in {scene_dir / 'sparse'}; run COLMAP's mapper with "
            f"--output_path {scene_dir / 'sparse'} (it writes sparse/0)"
        )
    return model_dir


def _frames(model: ColmapModel, paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The model as frame dicts of the shared frame loader (``blender.load_frames``)."""
    frames = []
    for path, pose, (fx, fy, cx, cy), (w, h) in zip(
        paths, model.c2w, model.intrinsics, model.sizes
    ):
        frames.append({"file_path": str(path), "transform_matrix": pose.tolist(),
                       "fl_x": float(fx), "fl_y": float(fy), "cx": float(cx), "cy": float(cy),
                       "w": w, "h": h})
    return frames


def load_colmap_scene(
    scene_dir: Path,
    splits: Sequence[str] = ("train", "val", "test"),
    downscale: int = 1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    holdout_every: int = DEFAULT_HOLDOUT_EVERY,
) -> dict[str, ImageSet]:
    """The requested splits of a COLMAP capture (``sparse/0`` or ``sparse`` + ``images/``).

    Args:
        scene_dir: the capture folder.
        splits: any of ``"train"``, ``"val"``, ``"test"``.
        downscale: integer area-averaging downscale factor (intrinsics scaled by ``1/d``).
        background: RGB in [0, 1] that transparent pixels (RGBA images) are composited on.
        holdout_every: every Nth image (sorted by name) is the test = val set.

    Returns:
        ``{split: ImageSet}`` with OpenGL c2w poses ``[N, 3, 4]`` in COLMAP's world frame,
        ``poses_are_ground_truth=False``; all splits share the bounds.

    Raises:
        DatasetError: one line naming the file and the fix (no model, images missing on disk,
            unsupported camera model, no registered image, empty split).
    """
    downscale, background = check_load_options(downscale, background)
    scene_dir = Path(scene_dir)
    model_dir = _model_dir_or_error(scene_dir)
    model = read_colmap_model(model_dir)
    paths = _check_images_on_disk(scene_dir / COLMAP_IMAGES_DIR, model.names)
    split_indices = holdout_split(len(model.names), holdout_every)
    for split in splits:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
        if not split_indices[split]:
            raise DatasetError(
                f"{model_dir}: the {split!r} split is empty ({len(model.names)} registered "
                f"images, every {holdout_every}th held out for test/val); add images or change "
                "--holdout-every"
            )
    try:
        near, far, aabb = colmap_bounds(model.points, model.c2w)
    except ValueError:
        raise DatasetError(
            f"{model_dir}: the model has no 3D points and all cameras sit at one place, so the "
            "scene box cannot be guessed; keep points3D in the model (COLMAP's mapper writes them)"
        ) from None
    frames = _frames(model, paths)
    label = model_dir / "images"  # error messages of the frame loader name this model
    return {
        split: load_frames(label, {}, frames, split_indices[split], downscale, background,
                           near, far, torch.tensor(aabb, dtype=torch.float32),
                           poses_are_ground_truth=False)
        for split in splits
    }
