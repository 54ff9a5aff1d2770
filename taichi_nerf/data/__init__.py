"""Datasets: scene lookup, Blender, instant-ngp/nerfstudio and COLMAP loaders, pixel sampling.

>>> from taichi_nerf.data import load_scene, PixelSampler
>>> scene = load_scene("lego", data_dir="/data", splits=("train", "test"), downscale=2)
>>> train = scene["train"]          # ImageSet: images uint8 [N, H, W, 3], poses [N, 3, 4], ...
>>> sampler = PixelSampler(train.images, seed=0, device="cuda")

Every problem with the files on disk raises ``DatasetError`` (a ``ValueError``) whose message
names the file and what is wrong. ``ImageSet.poses_are_ground_truth`` says whether a split's
poses are exact (synthetic Blender / demo scenes) or the capture's own estimate (COLMAP,
``transforms.json``), which training refines but cannot score against.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

from taichi_nerf.data.blender import ImageSet, load_blender_scene
from taichi_nerf.data.paths import DatasetError, data_root, find_scene, scene_format
from taichi_nerf.data.pixels import PixelDataset, PixelSampler
from taichi_nerf.data.transforms import DEFAULT_HOLDOUT_EVERY, load_transforms_scene

__all__ = [
    "DatasetError",
    "ImageSet",
    "PixelDataset",
    "PixelSampler",
    "data_root",
    "find_scene",
    "load_scene",
]

_SPLITS = ("train", "val", "test")


def load_scene(
    scene: str,
    data_dir: str | PathLike | None = None,
    splits: Sequence[str] = _SPLITS,
    downscale: int = 1,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    holdout_every: int = DEFAULT_HOLDOUT_EVERY,
) -> dict[str, ImageSet]:
    """Load the splits of a scene found by ``find_scene`` (Blender, ``transforms.json``, COLMAP).

    Args:
        scene: scene name under the data root (``lego``, ``demo``, ...) or a path to its folder.
        data_dir: the data root (``--data-dir``); None: ``$TAICHI_NERF_DATA``, else ``./data``.
        splits: which of ``"train"``, ``"val"``, ``"test"`` to load.
        downscale: integer factor; images are area-averaged and intrinsics scaled by ``1/d``.
        background: RGB in [0, 1] that RGBA images are composited on (white for Blender).
        holdout_every: for a single ``transforms.json`` or a COLMAP model, every Nth frame
            (sorted by file name) is the test (= val) set; Blender scenes come with their own
            splits.

    Returns:
        ``{split: ImageSet}`` in the order of ``splits``; poses are OpenGL camera-to-world
        ``[N, 3, 4]`` in the scene's own frame.

    Raises:
        DatasetError: the scene is missing or its files are malformed.
        ValueError: a bad option (split name, downscale, background).
    """
    if isinstance(splits, str):
        splits = (splits,)
    unknown = [s for s in splits if s not in _SPLITS]
    if unknown:
        raise ValueError(f"unknown split {unknown[0]!r}; use 'train', 'val' or 'test'")
    scene_dir = find_scene(scene, data_dir)
    fmt = scene_format(scene_dir)
    if fmt == "blender":
        return load_blender_scene(scene_dir, splits, downscale, background)
    if fmt == "transforms":
        return load_transforms_scene(scene_dir, splits, downscale, background, holdout_every)
    if fmt == "colmap":
        from taichi_nerf.data.colmap import load_colmap_scene

        return load_colmap_scene(scene_dir, splits, downscale, background, holdout_every)
    raise DatasetError(
        f"{scene_dir}: neither transforms_train.json (Blender layout), transforms.json "
        "(instant-ngp / nerfstudio layout) nor a COLMAP sparse/0 model found"
    )
