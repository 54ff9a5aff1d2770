"""Blender / nerf_synthetic scenes, plus the frame-loading code shared with ``transforms.py``.

Layout: ``<scene>/transforms_{train,val,test}.json``, each ``{"camera_angle_x": ..., "frames":
[{"file_path": "./train/r_0", "transform_matrix": 4x4 c2w}, ...]}``; images are RGBA PNGs (the
extension may be left out of ``file_path``). Poses are OpenGL camera-to-world (camera looks down
-z, +y up), the convention of ``taichi_nerf.rays``.

Images are composited on the background (white for nerf_synthetic), optionally downscaled by an
integer factor with area averaging (in float, then rounded to uint8), and kept as
``uint8 [N, H, W, 3]``. Scene bounds default to the Blender values (near 2, far 6, box
``[-1.5, 1.5]^3``); a transforms json may override them with the keys ``near``, ``far`` and
``aabb`` (``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taichi_nerf.data.paths import DatasetError, read_json
from taichi_nerf.rays import Intrinsics

__all__ = [
    "ImageSet",
    "BLENDER_NEAR",
    "BLENDER_FAR",
    "BLENDER_AABB",
    "ROTATION_TOLERANCE",
    "load_blender_scene",
    "load_blender_split",
    "check_frames",
    "check_load_options",
    "ground_truth_flag",
    "frame_intrinsics",
    "load_frames",
    "parse_bounds",
    "parse_pose",
    "read_image",
    "downscale_area",
]

BLENDER_NEAR = 2.0
BLENDER_FAR = 6.0
BLENDER_AABB = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)
#: Largest accepted ``max |R^T R - I|`` and ``|det R - 1|`` of a transform matrix; json files
#: store floats with ~7 significant digits, so this is loose enough for any rigid pose.
ROTATION_TOLERANCE = 1e-3
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".exr", ".webp")
_PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_MAX_READERS = 8


@dataclass
class ImageSet:
    """One split of a scene, ready for training or evaluation.

    Attributes:
        images: ``uint8 [N, H, W, 3]`` CPU tensor, composited on the background.
        alphas: ``uint8 [N, H, W]`` CPU tensor, the images' own alpha (None when they have
            none); ``images`` are already composited with it, so training can re-composite a
            pixel on another colour (``--train-background random``).
        poses: ``float32 [N, 3, 4]`` camera-to-world matrices (OpenGL camera: looks down -z).
        intrinsics: ``float32 [N, 4]`` ``(fx, fy, cx, cy)`` per image, in pixels of ``images``.
        width, height: image size in pixels.
        file_paths: the image file of each frame.
        near, far: ray distance bounds in scene units.
        scene_aabb: ``float32 [6]`` scene box ``(xmin, ymin, zmin, xmax, ymax, zmax)``.
        poses_are_ground_truth: True when ``poses`` are exact (synthetic scenes: Blender, demo),
            False when they come from the capture itself (COLMAP, ``transforms.json``): then
            they are only a starting point, and how far training moves them is not an error.
    """

    images: torch.Tensor
    poses: torch.Tensor
    intrinsics: torch.Tensor
    width: int
    height: int
    file_paths: list[str]
    near: float
    far: float
    scene_aabb: torch.Tensor
    poses_are_ground_truth: bool = True
    alphas: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def camera(self, index: int) -> Intrinsics:
        """``Intrinsics`` of image ``index`` (for ``taichi_nerf.rays.image_rays``)."""
        fx, fy, cx, cy = (float(x) for x in self.intrinsics[index])
        return Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=self.width, height=self.height)


# --------------------------------------------------------------------------------------------
# Images


def read_image(path: Path, background: Sequence[float]) -> np.ndarray:
    """Image at ``path`` as ``float64 [H, W, 3]`` in [0, 1], alpha composited on ``background``.

    8- and 16-bit integer images are divided by their maximum; grey and grey+alpha are
    expanded to RGB.
    """
    return read_image_alpha(path, background)[0]


def read_image_alpha(
    path: Path, background: Sequence[float]
) -> tuple[np.ndarray, np.ndarray | None]:
    """``read_image``'s composited RGB and the image's alpha ``float64 [H, W]`` (None: none)."""
    import imageio.v3 as iio

    # Pillow reads the common formats; naming it stops imageio from trying every plugin
    # (and warning from each) on a broken file.
    plugin = "pillow" if path.suffix.lower() in _PILLOW_SUFFIXES else None
    try:
        raw = np.asarray(iio.imread(path, plugin=plugin))
    except Exception as exc:  # imageio raises many types for a broken file
        raise DatasetError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    if raw.dtype == np.uint8:
        img = raw.astype(np.float64) / 255.0
    elif raw.dtype == np.uint16:
        img = raw.astype(np.float64) / 65535.0
    elif np.issubdtype(raw.dtype, np.floating):
        img = raw.astype(np.float64)
    else:
        raise DatasetError(f"{path}: unsupported pixel type {raw.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise DatasetError(f"{path}: expected an RGB(A) or grey image, got array shape {raw.shape}")
    if not np.isfinite(img).all():
        raise DatasetError(f"{path}: image contains NaN or infinite values")
    has_alpha = img.shape[2] in (2, 4)
    rgb = img[:, :, :-1] if has_alpha else img
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    if not has_alpha:
        return rgb, None
    alpha = img[:, :, -1:]
    return rgb * alpha + np.asarray(background, dtype=np.float64) * (1.0 - alpha), alpha[:, :, 0]


def downscale_area(image: np.ndarray, factor: int) -> np.ndarray:
    """Shrink ``[H, W, C]`` by an integer ``factor``: each output pixel is the mean of a
    ``factor x factor`` block. A last partial row/column of blocks is cropped off."""
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    blocks = image[: h * factor, : w * factor].reshape(h, factor, w, factor, -1)
    return blocks.mean(axis=(1, 3))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def _resolve_image(json_path: Path, file_path: str, where: str) -> Path:
    """The image file a frame names: relative to the json folder, extension optional."""
    path = Path(file_path).expanduser()
    if not path.is_absolute():
        path = json_path.parent / path
    if path.is_file():
        return path
    tried = [path] + [path.with_name(path.name + ext) for ext in IMAGE_EXTENSIONS]
    for candidate in tried[1:]:
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"{json_path}: {where}: image {file_path!r} not found (looked for "
        f"{path} and that name with {', '.join(IMAGE_EXTENSIONS[:3])}, ...)"
    )


# --------------------------------------------------------------------------------------------
# Poses, intrinsics, bounds


def _finite_number(value: Any, json_path: Path, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(f"{json_path}: {what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise DatasetError(f"{json_path}: {what} must be finite, got {value!r}")
    return float(value)


def parse_pose(json_path: Path, frame: dict[str, Any], where: str) -> np.ndarray:
    """``float64 [3, 4]`` camera-to-world from ``frame["transform_matrix"]``, checked rigid."""
    if "transform_matrix" not in frame:
        raise DatasetError(f"{json_path}: {where}: missing 'transform_matrix'")
    try:
        m = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(
            f"{json_path}: {where}: transform_matrix is not a 3x4 or 4x4 array of numbers"
        ) from None
    if m.shape not in ((3, 4), (4, 4)):
        raise DatasetError(
            f"{json_path}: {where}: transform_matrix must be 3x4 or 4x4, got shape {list(m.shape)}"
        )
    if not np.isfinite(m).all():
        raise DatasetError(f"{json_path}: {where}: transform_matrix has NaN or infinite entries")
    if m.shape == (4, 4):
        bottom_error = float(np.abs(m[3] - np.array([0.0, 0.0, 0.0, 1.0])).max())
        if bottom_error > ROTATION_TOLERANCE:
            raise DatasetError(
                f"{json_path}: {where}: transform_matrix is not rigid: bottom row is "
                f"{m[3].tolist()}, expected [0, 0, 0, 1]"
            )
    rot = m[:3, :3]
    ortho_error = float(np.abs(rot.T @ rot - np.eye(3)).max())
    if ortho_error > ROTATION_TOLERANCE:
        raise DatasetError(
            f"{json_path}: {where}: transform_matrix is not rigid: its rotation part is not "
            f"orthonormal (max |R^T R - I| = {ortho_error:.3g} > {ROTATION_TOLERANCE:g}; "
            "scale or shear in the pose?)"
        )
    det = float(np.linalg.det(rot))
    if abs(det - 1.0) > ROTATION_TOLERANCE:
        raise DatasetError(
            f"{json_path}: {where}: transform_matrix is not rigid: rotation determinant is "
            f"{det:.4g}, expected +1 (a reflection or a flipped axis?)"
        )
    return m[:3, :4].copy()


def _lookup(frame: dict[str, Any], meta: dict[str, Any], key: str) -> Any:
    """Per-frame value of ``key``, else the file-wide one, else None."""
    if key in frame:
        return frame[key]
    return meta.get(key)


def frame_intrinsics(
    json_path: Path,
    meta: dict[str, Any],
    frame: dict[str, Any],
    where: str,
    width: int,
    height: int,
) -> Intrinsics:
    """Intrinsics of one frame for its image of ``width x height`` (before any downscale).

    Keys (per frame, else file-wide): ``fl_x`` / ``fl_y`` (pixels) or ``camera_angle_x`` /
    ``camera_angle_y`` (radians); ``cx``, ``cy`` (default: image centre); ``w``, ``h`` (the size
    the intrinsics refer to; when the image on disk has another size with the same aspect, the
    intrinsics are rescaled to it). A missing ``fl_y`` / ``camera_angle_y`` means square pixels.
    """

    def number(key: str) -> float | None:
        value = _lookup(frame, meta, key)
        return None if value is None else _finite_number(value, json_path, f"{where}: {key!r}")

    ref_w, ref_h = number("w"), number("h")
    ref_w = float(width) if ref_w is None else ref_w
    ref_h = float(height) if ref_h is None else ref_h
    if ref_w <= 0 or ref_h <= 0:
        raise DatasetError(f"{json_path}: {where}: 'w' and 'h' must be positive")
    fl_x, fl_y = number("fl_x"), number("fl_y")
    angle_x, angle_y = number("camera_angle_x"), number("camera_angle_y")
    if fl_x is None and angle_x is not None:
        if not 0.0 < angle_x < math.pi:
            raise DatasetError(f"{json_path}: {where}: camera_angle_x must be in (0, pi) radians")
        fl_x = 0.5 * ref_w / math.tan(0.5 * angle_x)
    if fl_y is None and angle_y is not None:
        if not 0.0 < angle_y < math.pi:
            raise DatasetError(f"{json_path}: {where}: camera_angle_y must be in (0, pi) radians")
        fl_y = 0.5 * ref_h / math.tan(0.5 * angle_y)
    if fl_x is None and fl_y is None:
        raise DatasetError(
            f"{json_path}: {where}: no focal length; give 'camera_angle_x' (radians) or 'fl_x' "
            "(pixels), per frame or for the whole file"
        )
    fl_x = fl_y if fl_x is None else fl_x
    fl_y = fl_x if fl_y is None else fl_y
    if fl_x <= 0 or fl_y <= 0:
        raise DatasetError(f"{json_path}: {where}: focal lengths must be positive")
    cx, cy = number("cx"), number("cy")
    intr = Intrinsics(
        fx=fl_x,
        fy=fl_y,
        cx=0.5 * ref_w if cx is None else cx,
        cy=0.5 * ref_h if cy is None else cy,
        width=int(round(ref_w)),
        height=int(round(ref_h)),
    )
    if (intr.width, intr.height) == (width, height):
        return intr
    sx, sy = width / ref_w, height / ref_h
    if abs(sx - sy) > 1e-2 * max(sx, sy):
        raise DatasetError(
            f"{json_path}: {where}: the json says the image is {intr.width}x{intr.height} but "
            f"the file is {width}x{height} (a different aspect ratio)"
        )
    return Intrinsics(
        fx=intr.fx * sx,
        fy=intr.fy * sy,
        cx=intr.cx * sx,
        cy=intr.cy * sy,
        width=width,
        height=height,
    )


def parse_bounds(
    json_path: Path,
    meta: dict[str, Any],
    default_near: float,
    default_far: float,
    default_aabb: Sequence[float],
) -> tuple[float, float, torch.Tensor]:
    """``(near, far, scene_aabb [6])`` from the json keys ``near``/``far``/``aabb`` or defaults."""
    near = default_near if "near" not in meta else _finite_number(meta["near"], json_path, "'near'")
    far = default_far if "far" not in meta else _finite_number(meta["far"], json_path, "'far'")
    if not 0.0 <= near < far:
        raise DatasetError(f"{json_path}: need 0 <= near < far, got near={near}, far={far}")
    aabb = list(default_aabb)
    if "aabb" in meta:
        try:
            box = np.asarray(meta["aabb"], dtype=np.float64)
        except (TypeError, ValueError):
            box = np.zeros(0)
        if box.shape != (2, 3) or not np.isfinite(box).all() or not (box[0] < box[1]).all():
            raise DatasetError(
                f"{json_path}: 'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with "
                f"min < max, got {meta['aabb']!r}"
            )
        aabb = box.reshape(-1).tolist()
    return float(near), float(far), torch.tensor(aabb, dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# Frames -> ImageSet


def _frame_where(index: int, frame: Any) -> str:
    name = frame.get("file_path") if isinstance(frame, dict) else None
    return f"frame {index}" + (f" ({name})" if isinstance(name, str) else "")


def check_frames(json_path: Path, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The json's ``frames`` list, checked to be a non-empty list of objects with a file path."""
    frames = meta.get("frames")
    if frames is None:
        raise DatasetError(f"{json_path}: missing the 'frames' list")
    if not isinstance(frames, list):
        raise DatasetError(f"{json_path}: 'frames' must be a list, got {type(frames).__name__}")
    if not frames:
        raise DatasetError(f"{json_path}: the 'frames' list is empty; a split needs images")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise DatasetError(f"{json_path}: frame {i} must be an object, got {frame!r:.60}")
        if not isinstance(frame.get("file_path"), str) or not frame["file_path"]:
            raise DatasetError(f"{json_path}: frame {i}: missing or empty 'file_path'")
    return frames


def load_frames(
    json_path: Path,
    meta: dict[str, Any],
    frames: list[dict[str, Any]],
    indices: Sequence[int],
    downscale: int,
    background: Sequence[float],
    near: float,
    far: float,
    scene_aabb: torch.Tensor,
    poses_are_ground_truth: bool = True,
) -> ImageSet:
    """Read the frames ``indices`` of a checked frame list into an ``ImageSet``.

    ``indices`` are positions in ``frames``; error messages name frames by that position.
    """
    if not indices:
        raise DatasetError(f"{json_path}: no frames selected for this split")
    wheres = [_frame_where(i, frames[i]) for i in indices]
    poses = [parse_pose(json_path, frames[i], w) for i, w in zip(indices, wheres)]
    paths = [_resolve_image(json_path, frames[i]["file_path"], w) for i, w in zip(indices, wheres)]

    def process(path: Path) -> tuple[tuple[int, int], np.ndarray, np.ndarray | None]:
        rgb, alpha = read_image_alpha(path, background)
        size = (rgb.shape[1], rgb.shape[0])
        if rgb.shape[0] < downscale or rgb.shape[1] < downscale:
            raise DatasetError(
                f"{path}: image {size[0]}x{size[1]} is smaller than downscale {downscale}"
            )
        if alpha is not None:
            alpha = _to_uint8(downscale_area(alpha[:, :, None], downscale))[:, :, 0]
        return size, _to_uint8(downscale_area(rgb, downscale)), alpha

    workers = max(1, min(_MAX_READERS, os.cpu_count() or 1, len(paths)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(process, paths))

    width, height = results[0][0]
    for path, (size, *_) in zip(paths, results):
        if size != (width, height):
            raise DatasetError(
                f"{path}: image is {size[0]}x{size[1]} but {paths[0]} is {width}x{height}; "
                "all images of a split must have the same size"
            )
    intrinsics = []
    for i, w in zip(indices, wheres):
        intr = frame_intrinsics(json_path, meta, frames[i], w, width, height)
        if downscale != 1:
            intr = intr.scaled(1.0 / downscale)
        intrinsics.append([intr.fx, intr.fy, intr.cx, intr.cy])
    images = torch.from_numpy(np.stack([img for _, img, _ in results]))
    # Alpha only when every image has it (a mixed split is trained on the fixed background).
    alphas = (torch.from_numpy(np.stack([a for *_, a in results]))
              if all(a is not None for *_, a in results) else None)
    return ImageSet(
        images=images,
        poses=torch.from_numpy(np.stack(poses)).to(torch.float32),
        intrinsics=torch.tensor(intrinsics, dtype=torch.float32),
        width=int(images.shape[2]),
        height=int(images.shape[1]),
        file_paths=[str(p) for p in paths],
        near=near,
        far=far,
        scene_aabb=scene_aabb.clone(),
        poses_are_ground_truth=bool(poses_are_ground_truth),
        alphas=alphas,
    )


def ground_truth_flag(json_path: Path, meta: dict[str, Any], default: bool) -> bool:
    """The json's optional ``poses_are_ground_truth`` key (true/false), else ``default``."""
    value = meta.get("poses_are_ground_truth", default)
    if not isinstance(value, bool):
        raise DatasetError(
            f"{json_path}: 'poses_are_ground_truth' must be true or false, got {value!r}"
        )
    return value


def check_load_options(
    downscale: int, background: Sequence[float]
) -> tuple[int, tuple[float, ...]]:
    """Validate the loader options shared by both formats (a bad flag -> ``ValueError``)."""
    if isinstance(downscale, bool) or int(downscale) != downscale or downscale < 1:
        raise ValueError(f"downscale must be an integer >= 1, got {downscale!r}")
    bg = tuple(float(c) for c in background)
    if len(bg) != 3 or not all(0.0 <= c <= 1.0 for c in bg):
        raise ValueError(f"background must be 3 floats in [0, 1], got {background!r}")
    return int(downscale), bg


def load_blender_split(
    scene_dir: Path,
    split: str,
    downscale: int = 1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> ImageSet:
    """One split (``transforms_{split}.json``) of a Blender-layout scene."""
    downscale, background = check_load_options(downscale, background)
    json_path = Path(scene_dir) / f"transforms_{split}.json"
    meta = read_json(json_path)
    frames = check_frames(json_path, meta)
    near, far, aabb = parse_bounds(json_path, meta, BLENDER_NEAR, BLENDER_FAR, BLENDER_AABB)
    exact = ground_truth_flag(json_path, meta, default=True)
    return load_frames(
        json_path, meta, frames, range(len(frames)), downscale, background, near, far, aabb, exact
    )


def load_blender_scene(
    scene_dir: Path,
    splits: Sequence[str] = ("train", "val", "test"),
    downscale: int = 1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[str, ImageSet]:
    """The requested splits of a Blender-layout scene folder, keyed by split name."""
    return {split: load_blender_split(scene_dir, split, downscale, background) for split in splits}
