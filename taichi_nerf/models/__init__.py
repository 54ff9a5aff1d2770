"""Radiance fields and their renderers.

Every renderer module follows one protocol (what the trainer and evaluation rely on):

- ``render_rays(rays_o [R,3], rays_d [R,3] unit, *, background [3], train: bool) -> dict`` with
  ``rgb [R,3]``, ``opacity [R]``, ``depth [R]``, ``num_samples`` (int); vanilla adds
  ``rgb_coarse [R,3]``. Gradients reach the field parameters and ``rays_o`` / ``rays_d``.
- ``update_step(step)`` once per training step before rendering (occupancy grid for ngp).
- ``state_dict()`` / ``load_state_dict()`` round-trip all state (grid buffers included).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from taichi_nerf.models.ngp import NGPField, NGPRenderer, trunc_exp

__all__ = ["NGPField", "NGPRenderer", "trunc_exp", "build_renderer"]


def build_renderer(model: str, scene_aabb, near: float, far: float, **kwargs: Any) -> nn.Module:
    """Make a renderer: ``"ngp"`` -> :class:`NGPRenderer`, ``"vanilla"`` -> ``VanillaNeRF``.

    ``kwargs`` go to the renderer's constructor (``VanillaNeRF`` takes no scene box: its
    samples span ``[near, far]``).
    """
    if model == "ngp":
        return NGPRenderer(scene_aabb, near, far, **kwargs)
    if model == "vanilla":
        from taichi_nerf.models.vanilla import VanillaNeRF

        return VanillaNeRF(near, far, **kwargs)
    raise ValueError(f"unknown model {model!r}; choose 'ngp' or 'vanilla'")
