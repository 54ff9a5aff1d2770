"""Refined poses out of a run folder: a ``transforms.json`` or a COLMAP text model.

A run folder holds ``final_poses.pt`` (``optimized_poses``, ``ground_truth_poses`` = the
scene's training poses, ``file_paths`` of the training images) and ``config.json`` (``scene``,
``data_dir``, ``downscale``). The scene is loaded again for its held-out views and intrinsics.

- Training cameras get their **refined** poses, in the input's own frame: the field was trained
  in the frame of the scene's poses, so the poses are written as they are (no re-centring or
  rescaling, unlike nerfstudio's own export).
- Held-out (val / test) cameras were never refined; they are carried over with the Sim(3)
  ``x -> s R x + t`` fitted from the scene's training camera centres onto the refined ones
  (``taichi_nerf.poses.align_sim3``), the frame evaluation renders them in, and marked so.
- Intrinsics are written for the **original** image resolution (the run's ``downscale``
  undone), so the files go with the images on disk.

Poses are OpenGL camera-to-world ``[N, 3, 4]`` (looks down -z, +y up) inside this module; the
COLMAP model gets world-to-camera with an OpenCV camera (looks down +z, +y down).

Example::

    from taichi_nerf.export import export_transforms, export_colmap, load_run_poses
    poses = load_run_poses("outputs/demo_poseopt_...")
    export_transforms(poses, "outputs/demo_poseopt_.../transforms.json")
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "ExportError",
    "ExportFrame",
    "RunPoses",
    "export_colmap",
    "export_transforms",
    "load_run_poses",
    "rotation_to_quaternion",
]

_FLIP_YZ = np.diag([1.0, -1.0, -1.0])
_FINAL_KEYS = ("optimized_poses",)


class ExportError(ValueError):
    """A run folder that cannot be exported; the message names the file and the fix."""


@dataclass
class ExportFrame:
    """One camera to export.

    Attributes:
        image: absolute path of its image file.
        c2w: ``float64 [3, 4]`` OpenGL camera-to-world pose in the run's frame.
        intrinsics: ``(fx, fy, cx, cy)`` in pixels of the original image.
        width, height: original image size in pixels.
        splits: the splits it belongs to (``"train"``, ``"val"``, ``"test"``; a capture's
            held-out views are both val and test).
        refined: whether training refined this pose (train views of a pose-optimising run).
    """

    image: Path
    c2w: np.ndarray
    intrinsics: tuple[float, float, float, float]
    width: int
    height: int
    splits: list[str]
    refined: bool


@dataclass
class RunPoses:
    """Every camera of a run, ready to write, plus the scene bounds the run used.

    Attributes:
        frames: training frames first (in training order), then held-out ones.
        near, far: ray bounds (scene units); aabb: ``[6]`` scene box.
        run_dir: the run folder.
    """

    frames: list[ExportFrame]
    near: float
    far: float
    aabb: list[float]
    run_dir: Path


def _read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(final_poses.pt, config.json)`` of a run folder, checked."""
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: not a folder; pass a run folder (outputs/<experiment>)")
    final_path, config_path = run_dir / "final_poses.pt", run_dir / "config.json"
    if not final_path.is_file():
        raise ExportError(
            f"{final_path}: not found; export needs a finished run (final_poses.pt is written "
            "at the end of training; resume an interrupted run with --resume first)"
        )
    try:
        final = torch.load(final_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"{final_path}: cannot read ({first})") from None
    missing = [k for k in _FINAL_KEYS if not isinstance(final, dict) or k not in final]
    if missing:
        raise ExportError(f"{final_path}: not a taichi-nerf final_poses.pt (no {missing[0]!r})")
    if not config_path.is_file():
        raise ExportError(f"{config_path}: not found; the run folder is incomplete")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{config_path}: cannot read ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("scene"), str):
        raise ExportError(f"{config_path}: no 'scene' entry; not a taichi-nerf run config")
    return final, config


def _original_size(path: Path, fallback: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (no decoding)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return int(image.size[0]), int(image.size[1])
    except Exception:  # noqa: BLE001 - a format Pillow cannot open (EXR): assume no crop
        return fallback


def _frames_of(image_set, poses: torch.Tensor, split: str, refined: bool, downscale: int
               ) -> list[ExportFrame]:
    """Export frames of one split; intrinsics scaled back to the original resolution."""
    fallback = (image_set.width * downscale, image_set.height * downscale)
    width, height = _original_size(Path(image_set.file_paths[0]), fallback)
    frames = []
    for k, path in enumerate(image_set.file_paths):
        fx, fy, cx, cy = (float(v) * downscale for v in image_set.intrinsics[k].double())
        frames.append(ExportFrame(image=Path(path), c2w=poses[k].double().numpy(),
                                  intrinsics=(fx, fy, cx, cy), width=width, height=height,
                                  splits=[split], refined=refined))
    return frames


def _check_same_train_set(final: dict[str, Any], train, final_path: Path, scene: str) -> None:
    count = int(final["optimized_poses"].shape[0])
    names = final.get("file_paths")
    same = count == len(train) and (names is None or
                                    [Path(p).name for p in names] ==
                                    [Path(p).name for p in train.file_paths])
    if not same:
        raise ExportError(
            f"{final_path}: its {count} training poses do not match the {len(train)} training "
            f"images scene {scene!r} has now; pass the --data-dir the run used"
        )


def _optimised(config: dict[str, Any], moved: bool) -> bool:
    """Whether the run optimised its training poses (from its config; else: did they move)."""
    if "fixed_poses" not in config:
        return moved
    learns = config.get("learn_rotation", True) or config.get("learn_translation", True)
    return bool(learns and not config["fixed_poses"])


def load_run_poses(run_dir: str | os.PathLike, data_dir: str | None = None) -> RunPoses:
    """All cameras of a finished run: refined train poses, held-out poses moved by the Sim(3)
    fitted on the train cameras, intrinsics at the original resolution.

    Args:
        run_dir: ``outputs/<experiment>/`` (holds ``final_poses.pt`` and ``config.json``).
        data_dir: the data root, when the scene is no longer where the run found it.

    Raises:
        ExportError / DatasetError (``ValueError``): one line naming the file and the fix.
    """
    from taichi_nerf.data import load_scene
    from taichi_nerf.data.transforms import DEFAULT_HOLDOUT_EVERY
    from taichi_nerf.poses import align_sim3, apply_sim3_to_poses

    run_dir = Path(run_dir)
    final, config = _read_run(run_dir)
    downscale = int(config.get("downscale", 1))
    scenes = load_scene(config["scene"], data_dir or config.get("data_dir"),
                        splits=("train", "val", "test"), downscale=downscale,
                        holdout_every=int(config.get("holdout_every", DEFAULT_HOLDOUT_EVERY)))
    train = scenes["train"]
    _check_same_train_set(final, train, run_dir / "final_poses.pt", config["scene"])
    refined = final["optimized_poses"].detach().double().cpu()[:, :3, :4]
    # The frame the held-out poses are in: the scene's training poses (a capture's run may
    # store no ground truth; then the scene itself gives them).
    source = final.get("ground_truth_poses")
    source = (train.poses if source is None else source).detach().double().cpu()[:, :3, :4]
    moved = not torch.equal(refined, source)
    frames = _frames_of(train, refined, "train", _optimised(config, moved), downscale)
    scale, rotation, translation = align_sim3(source[:, :, 3], refined[:, :, 3])
    by_image = {f.image: f for f in frames}
    for split in ("val", "test"):
        held = scenes[split]
        poses = held.poses.double()
        if moved:
            poses = apply_sim3_to_poses(poses, scale, rotation, translation)
        for frame in _frames_of(held, poses, split, False, downscale):
            if frame.image in by_image:  # a capture's val and test are one set of views
                by_image[frame.image].splits.append(split)
            else:
                by_image[frame.image] = frame
                frames.append(frame)
    return RunPoses(frames=frames, near=float(train.near), far=float(train.far),
                    aabb=[float(v) for v in train.scene_aabb], run_dir=run_dir)


# --------------------------------------------------------------------------------------------
# transforms.json


def _relative(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(path.absolute(), folder.absolute())).as_posix()


def export_transforms(poses: RunPoses, out_path: str | os.PathLike) -> Path:
    """Write an instant-ngp / nerfstudio ``transforms.json`` (and return its path).

    Frames carry ``file_path`` (relative to the json's folder), the 4x4 OpenGL c2w
    ``transform_matrix`` and ``pose_refined``; nerfstudio's ``train_filenames`` /
    ``val_filenames`` / ``test_filenames`` keep the run's split, and ``near`` / ``far`` /
    ``aabb`` its scene bounds, so ``taichi_nerf.data.load_scene`` reads back the same scene.
    Intrinsics ``fl_x, fl_y, cx, cy, w, h`` are file-wide when all cameras share them, else
    per frame.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    folder = out_path.parent
    cameras = {(f.intrinsics, f.width, f.height) for f in poses.frames}
    shared = len(cameras) == 1

    def intrinsics(frame: ExportFrame) -> dict[str, Any]:
        fx, fy, cx, cy = frame.intrinsics
        return {"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": frame.width, "h": frame.height}

    meta: dict[str, Any] = {"camera_model": "OPENCV"}
    if shared:
        meta.update(intrinsics(poses.frames[0]))
    meta.update(near=poses.near, far=poses.far, aabb=[poses.aabb[:3], poses.aabb[3:]])
    frames = []
    for frame in poses.frames:
        matrix = np.concatenate([frame.c2w, [[0.0, 0.0, 0.0, 1.0]]]).tolist()
        entry = {"file_path": _relative(frame.image, folder), "transform_matrix": matrix,
                 "pose_refined": frame.refined}
        if not shared:
            entry.update(intrinsics(frame))
        frames.append(entry)
    meta["frames"] = frames
    for split in ("train", "val", "test"):
        meta[f"{split}_filenames"] = [entry["file_path"] for entry, f in zip(frames, poses.frames)
                                      if split in f.splits]
    meta["taichi_nerf"] = {
        "run": str(poses.run_dir.absolute()),
        "note": "train poses refined (pose_refined true); held-out poses carried over with the "
                "Sim(3) fitted on the train cameras (pose_refined false)",
    }
    out_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out_path


# --------------------------------------------------------------------------------------------
# COLMAP text model


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of a rotation matrix ``[3, 3]``
    (Shepperd's method: the largest of the four candidates, so no cancellation)."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(r)
    candidates = [trace, r[0, 0], r[1, 1], r[2, 2]]
    k = int(np.argmax(candidates))
    if k == 0:
        w = 0.5 * math.sqrt(max(1.0 + trace, 0.0))
        q = [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w),
             (r[1, 0] - r[0, 1]) / (4 * w)]
    else:
        i, j, m = k - 1, k % 3, (k + 1) % 3
        v = np.zeros(3)
        v[i] = 0.5 * math.sqrt(max(1.0 + r[i, i] - r[j, j] - r[m, m], 0.0))
        v[j] = (r[j, i] + r[i, j]) / (4 * v[i])
        v[m] = (r[m, i] + r[i, m]) / (4 * v[i])
        q = [(r[m, j] - r[j, m]) / (4 * v[i]), *v]
    q = np.asarray(q) / np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def _image_root(frames: list[ExportFrame]) -> Path:
    """The deepest folder holding every image (COLMAP's ``--image_path``)."""
    return Path(os.path.commonpath([str(f.image.absolute().parent) for f in frames]))


def export_colmap(poses: RunPoses, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write a COLMAP text model (``cameras.txt``, ``images.txt``, empty ``points3D.txt``).

    One PINHOLE camera per distinct intrinsics; image ids ``1..n`` follow ``poses.frames``
    (training views first). Image names are relative to the deepest folder holding all the
    images, returned as the ``image_path`` to give COLMAP.

    Returns:
        ``(out_dir, image_path)``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = _image_root(poses.frames)
    camera_ids: dict[tuple, int] = {}
    for f in poses.frames:
        camera_ids.setdefault((f.intrinsics, f.width, f.height), len(camera_ids) + 1)
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(camera_ids)}"]
    for (intr, width, height), camera_id in camera_ids.items():
        lines.append(f"{camera_id} PINHOLE {width} {height} " + " ".join(repr(v) for v in intr))
    (out_dir / "cameras.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    num_refined = sum(f.refined for f in poses.frames)
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)",
             f"# Number of images: {len(poses.frames)}; refined by taichi-nerf: {num_refined}; "
             "the others were carried over with the Sim(3) fitted on the train cameras",
             f"# Image names are relative to {root}"]
    for image_id, f in enumerate(poses.frames, start=1):
        name = _relative(f.image, root)
        if any(c.isspace() for c in name):
            raise ExportError(f"{f.image}: COLMAP image names cannot hold spaces; rename it")
        rot_cv = f.c2w[:, :3] @ _FLIP_YZ
        rot_w2c = rot_cv.T
        t_w2c = -rot_w2c @ f.c2w[:, 3]
        values = [*rotation_to_quaternion(rot_w2c), *t_w2c]
        camera_id = camera_ids[(f.intrinsics, f.width, f.height)]
        lines.append(f"{image_id} " + " ".join(repr(float(v)) for v in values)
                     + f" {camera_id} {name}")
        lines.append("")
    (out_dir / "images.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / "points3D.txt").write_text(
        "# 3D point list with one line of data per point:\n"
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
        "# Number of points: 0\n", encoding="utf-8")
    return out_dir, root
