"""Taichi kernels wired into torch autograd, one module per op family.

Each op validates its inputs, starts Taichi for the tensors' device on first use (never at
import) and has a pure-torch twin in :mod:`taichi_nerf.reference`.

- :mod:`~taichi_nerf.kernels.hash_grid`: :func:`hash_encode`, :class:`HashGrid`,
  :class:`HashGridSpec` (gradients to the table and the positions).
- :mod:`~taichi_nerf.kernels.sh`: :func:`sh_encode` (gradient to the directions).
- :mod:`~taichi_nerf.kernels.marching`: :class:`OccupancyGrid`, :func:`march_rays` (no grad).
- :mod:`~taichi_nerf.kernels.compositing`: :func:`composite` (gradients to sigmas and rgbs).
"""

from taichi_nerf.kernels.compositing import composite
from taichi_nerf.kernels.hash_grid import HashGrid, HashGridSpec, hash_encode
from taichi_nerf.kernels.marching import OccupancyGrid, march_rays
from taichi_nerf.kernels.sh import sh_encode

__all__ = [
    "HashGrid",
    "HashGridSpec",
    "OccupancyGrid",
    "composite",
    "hash_encode",
    "march_rays",
    "sh_encode",
]
