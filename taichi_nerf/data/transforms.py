"""instant-ngp / nerfstudio captures: one ``transforms.json`` for all images.

This is what COLMAP conversions (instant-ngp's ``colmap2nerf.py``, nerfstudio's
``ns-process-data``) and phone capture apps write::

    {"fl_x": 1100.0, "fl_y": 1100.0, "cx": 640.0, "cy": 360.0, "w": 1280, "h": 720,
     "frames": [{"file_path": "images/frame_00001.jpg", "transform_matrix": 4x4 c2w}, ...]}

- Intrinsics ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` may be file-wide or per frame
  (per frame wins); ``camera_angle_x`` / ``camera_angle_y`` are accepted instead of focal
  lengths. When the image on disk is a resized copy (same aspect as ``w x h``), the intrinsics
  are rescaled to it. Lens distortion (``k1``, ``k2``, ``p1``, ...) is ignored with a warning:
  undistort the images first. Fisheye / equirectangular cameras are rejected.
- ``file_path`` is relative to the json's folder; the extension may be left out.
- ``transform_matrix`` is an OpenGL camera-to-world matrix (camera looks down -z, +y up), the
  same convention as the Blender scenes, so it is used as is (no re-centring or rescaling: the
  poses stay in the capture's frame, which keeps pose-error numbers in its units).

Ground truth. The poses of a capture are its own estimate, not ground truth, so the
``ImageSet``s say ``poses_are_ground_truth=False``; a json of a synthetic scene can say
``"poses_are_ground_truth": true``.

Splits. Frames are sorted by ``file_path`` (as nerfstudio does, so the split does not depend on
the order the json lists them in). Every ``holdout_every``-th frame, starting with the first
(indices 0, 8, 16, ... for the default 8, the LLFF / mip-NeRF 360 convention), is held out as
``test``; ``val`` is the same held-out set (a capture has no third set of views to spare); the
rest is ``train``. A json with nerfstudio's ``train_filenames`` / ``val_filenames`` /
``test_filenames`` keys uses those lists instead (``val`` falls back to ``test``).

Bounds. ``near``, ``far`` and ``aabb`` keys in the json are used when present. Otherwise they
come from the camera centres ``c_i`` of all frames, like nerfstudio's default scene box
(poses centred on their mean, box half-size = largest coordinate offset of a camera) but
without moving the poses: ``centre = mean(c_i)``, ``half = max_i ||c_i - centre||_inf``,
``aabb = centre -+ half`` (a cube holding every camera, which suits inward-facing captures
whose object sits among the cameras), ``near = 0.05 * half`` and ``far = 2 * sqrt(3) * half``
(the box diagonal: a ray from inside the box has left it by then). Forward-facing captures,
whose content lies beyond the cameras, should give ``aabb`` / ``far`` explicitly.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taichi_nerf.data.blender import (
    ImageSet,
    check_frames,
    check_load_options,
    ground_truth_flag,
    load_frames,
    parse_bounds,
    parse_pose,
)
from taichi_nerf.data.paths import DatasetError, read_json

__all__ = [
    "DEFAULT_HOLDOUT_EVERY",
    "NEAR_FRACTION",
    "capture_bounds",
    "holdout_split",
    "load_transforms_scene",
]

#: Every Nth frame (by sorted file name, starting with the first) is a held-out test/val view.
DEFAULT_HOLDOUT_EVERY = 8
#: ``near`` of a capture without a ``near`` key, as a fraction of the camera box half-size.
NEAR_FRACTION = 0.05
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_SUPPORTED_CAMERA_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "SIMPLE_RADIAL", "RADIAL")


def holdout_split(
    num_frames: int, holdout_every: int = DEFAULT_HOLDOUT_EVERY
) -> dict[str, list[int]]:
    """Frame indices per split: ``test = val = [0, N, 2N, ...]``, ``train`` = the others."""
    if isinstance(holdout_every, bool) or int(holdout_every) != holdout_every or holdout_every < 2:
        raise ValueError(f"holdout_every must be an integer >= 2, got {holdout_every!r}")
    held = [i for i in range(num_frames) if i % holdout_every == 0]
    train = [i for i in range(num_frames) if i % holdout_every != 0]
    return {"train": train, "val": list(held), "test": held}


def capture_bounds(camera_centres: np.ndarray) -> tuple[float, float, list[float]]:
    """``(near, far, aabb [6])`` from camera centres ``[N, 3]`` (see the module docstring)."""
    centre = camera_centres.mean(axis=0)
    half = float(np.abs(camera_centres - centre).max())
    if not half > 1e-6:
        raise ValueError("all cameras are at one place")
    aabb = np.concatenate([centre - half, centre + half]).tolist()
    return NEAR_FRACTION * half, 2.0 * math.sqrt(3.0) * half, aabb


def _check_camera_model(
    json_path: Path, meta: dict[str, Any], frames: list[dict[str, Any]]
) -> None:
    model = meta.get("camera_model")
    if isinstance(model, str) and model.upper() not in _SUPPORTED_CAMERA_MODELS:
        raise DatasetError(
            f"{json_path}: camera_model {model!r} is not supported; only pinhole cameras "
            f"({', '.join(_SUPPORTED_CAMERA_MODELS)}, distortion ignored) can be loaded"
        )
    if meta.get("is_fisheye") or any(f.get("is_fisheye") for f in frames):
        raise DatasetError(f"{json_path}: fisheye cameras (is_fisheye) are not supported")
    for source in [meta, *frames]:
        for key in _DISTORTION_KEYS:
            value = source.get(key)
            if isinstance(value, (int, float)) and value != 0:
                warnings.warn(
                    f"{json_path}: lens distortion ({key}={value}) is ignored; rays assume an "
                    "undistorted pinhole camera, so undistort the images first",
                    stacklevel=3,
                )
                return


def _named_split(
    json_path: Path, frames: list[dict[str, Any]], meta: dict[str, Any]
) -> dict[str, list[int]] | None:
    """Indices from nerfstudio's ``{split}_filenames`` lists, or None when the json has none."""
    if not any(f"{s}_filenames" in meta for s in ("train", "val", "test")):
        return None

    def key(file_path: str) -> str:
        path = Path(file_path).expanduser()
        path = path if path.is_absolute() else json_path.parent / path
        return os.path.splitext(os.path.normpath(path))[0]

    index_of = {key(f["file_path"]): i for i, f in enumerate(frames)}
    splits: dict[str, list[int]] = {}
    for split in ("train", "val", "test"):
        names = meta.get(f"{split}_filenames")
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DatasetError(f"{json_path}: '{split}_filenames' must be a list of file names")
        missing = [n for n in names if key(n) not in index_of]
        if missing:
            raise DatasetError(
                f"{json_path}: '{split}_filenames' lists {missing[0]!r}, which no frame's "
                "file_path names"
            )
        splits[split] = sorted(index_of[key(n)] for n in names)
    if "val" not in splits and "test" in splits:
        splits["val"] = list(splits["test"])
    return splits


def load_transforms_scene(
    scene_dir: Path,
    splits: Sequence[str] = ("train", "val", "test"),
    downscale: int = 1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    holdout_every: int = DEFAULT_HOLDOUT_EVERY,
) -> dict[str, ImageSet]:
    """The requested splits of a capture described by ``<scene_dir>/transforms.json``.

    Args:
        scene_dir: folder holding ``transforms.json`` (or the json file itself).
        splits: any of ``"train"``, ``"val"``, ``"test"``.
        downscale: integer area-averaging downscale factor.
        background: RGB in [0, 1] that transparent pixels (RGBA images) are composited on.
        holdout_every: every Nth frame (sorted by file name) is the test = val set.

    Returns:
        ``{split: ImageSet}``; all splits share the bounds (``near``, ``far``, ``scene_aabb``).
    """
    downscale, background = check_load_options(downscale, background)
    scene_dir = Path(scene_dir)
    json_path = scene_dir if scene_dir.suffix == ".json" else scene_dir / "transforms.json"
    meta = read_json(json_path)
    frames = check_frames(json_path, meta)
    _check_camera_model(json_path, meta, frames)

    # Indices stay positions in the json (error messages name frames by them); the order of
    # the frames within a split, and the every-Nth holdout, follow the sorted file names.
    order = sorted(range(len(frames)), key=lambda i: frames[i]["file_path"])
    split_indices = _named_split(json_path, frames, meta)
    named = split_indices is not None
    if split_indices is None:
        by_position = holdout_split(len(frames), holdout_every)
        split_indices = {s: [order[p] for p in ps] for s, ps in by_position.items()}
    else:
        rank = {i: r for r, i in enumerate(order)}
        split_indices = {s: sorted(ids, key=rank.__getitem__) for s, ids in split_indices.items()}

    for split in splits:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
        if not split_indices.get(split):
            how = (
                f"'{split}_filenames' lists none"
                if named
                else f"{len(frames)} frames, every {holdout_every}th held out for test/val; "
                "add frames or change holdout_every"
            )
            raise DatasetError(f"{json_path}: the {split!r} split is empty ({how})")

    if all(k in meta for k in ("near", "far", "aabb")):
        near, far, aabb = parse_bounds(json_path, meta, 0.0, 1.0, [0.0] * 6)
    else:
        centres = np.stack(
            [
                parse_pose(json_path, f, f"frame {i} ({f['file_path']})")[:, 3]
                for i, f in enumerate(frames)
            ]
        )
        try:
            default_near, default_far, default_aabb = capture_bounds(centres)
        except ValueError:
            raise DatasetError(
                f"{json_path}: all cameras sit at one point, so scene bounds cannot be guessed "
                "from them; add 'near', 'far' and 'aabb' keys to the json"
            ) from None
        near, far, aabb = parse_bounds(json_path, meta, default_near, default_far, default_aabb)

    exact = ground_truth_flag(json_path, meta, default=False)
    return {
        split: load_frames(
            json_path, meta, frames, split_indices[split], downscale, background, near, far,
            aabb, exact,
        )
        for split in splits
    }
