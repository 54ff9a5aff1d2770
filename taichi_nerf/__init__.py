"""taichi-nerf: joint NeRF and camera-pose optimization on Taichi kernels wired into torch.

The public API, flat. Importing this package never starts Taichi: the first op (or an explicit
:func:`init`) does.

Conventions (see each module's docstrings): poses are camera-to-world ``[N, 3, 4]`` in the
Blender/OpenGL camera frame (looks down -z, +y up, +x right); pose deltas act as
``R = exp(omega) @ R0``, ``t = t0 + delta_t``.
"""

import os as _os

# Before taichi is imported anywhere: no version check (it phones home), no banner on import.
_os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")
_os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")

from taichi_nerf import reference  # noqa: E402
from taichi_nerf.data import (  # noqa: E402
    DatasetError,
    ImageSet,
    PixelDataset,
    PixelSampler,
    find_scene,
    load_scene,
)
from taichi_nerf.kernels.specs import HashGridSpec  # noqa: E402  (no Taichi)

# The Taichi ops load on first use, so ``import taichi_nerf`` (and the twins in
# ``taichi_nerf.reference``) work without importing Taichi.
_KERNEL_NAMES = ("HashGrid", "OccupancyGrid", "composite", "hash_encode", "march_rays",
                 "sh_encode")


def __getattr__(name: str):
    if name in _KERNEL_NAMES:
        from taichi_nerf import kernels

        return getattr(kernels, name)
    raise AttributeError(f"module 'taichi_nerf' has no attribute {name!r}")
from taichi_nerf.models import NGPField, NGPRenderer, build_renderer  # noqa: E402
from taichi_nerf.poses import (  # noqa: E402
    CameraPoseParameters,
    align_sim3,
    apply_sim3_to_poses,
    perturb_poses,
    pose_errors,
    rotation_geodesic_deg,
    so3_exp,
    so3_log,
)
from taichi_nerf.rays import Intrinsics, image_rays, pixels_to_rays  # noqa: E402
from taichi_nerf.render import render_image, render_rays  # noqa: E402
from taichi_nerf.runtime import init  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CameraPoseParameters",
    "DatasetError",
    "HashGrid",
    "HashGridSpec",
    "ImageSet",
    "Intrinsics",
    "NGPField",
    "NGPRenderer",
    "OccupancyGrid",
    "PixelDataset",
    "PixelSampler",
    "__version__",
    "align_sim3",
    "apply_sim3_to_poses",
    "build_renderer",
    "composite",
    "find_scene",
    "hash_encode",
    "image_rays",
    "init",
    "load_scene",
    "march_rays",
    "perturb_poses",
    "pixels_to_rays",
    "pose_errors",
    "reference",
    "render_image",
    "render_rays",
    "rotation_geodesic_deg",
    "sh_encode",
    "so3_exp",
    "so3_log",
]
