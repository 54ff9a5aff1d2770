"""Radiance fields and their renderers, and the factory that builds one from a config.

Every renderer module follows one protocol (what the trainer and evaluation rely on):

- ``render_rays(rays_o [R,3], rays_d [R,3] unit, *, background [3], train: bool) -> dict`` with
  ``rgb [R,3]``, ``opacity [R]``, ``depth [R]``, ``num_samples`` (int); vanilla adds
  ``rgb_coarse [R,3]``. Gradients reach the field parameters and ``rays_o`` / ``rays_d``.
- ``update_step(step)`` once per training step before rendering (occupancy grid for ngp).
- The training policy, so the trainer has no per-model branches:
  ``make_optimizer(lr) -> Optimizer`` (the model's Adam settings),
  ``training_loss(out, target) -> (loss, mse)`` (its loss terms),
  ``next_num_rays(num_rays, out) -> int`` (how many rays the next step gets),
  ``eval_chunk`` (rays per chunk when rendering whole images).
- ``state_dict()`` / ``load_state_dict()`` round-trip all state (grid buffers included).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from taichi_nerf.models.ngp import NGPField, NGPRenderer, trunc_exp

__all__ = ["NGPField", "NGPRenderer", "trunc_exp", "build_renderer", "make_renderer"]


def build_renderer(model: str, scene_aabb, near: float, far: float, **kwargs: Any) -> nn.Module:
    """Make a renderer: ``"ngp"`` -> :class:`NGPRenderer`, ``"vanilla"`` -> ``VanillaNeRF``.

    ``kwargs`` go to the renderer's constructor (``VanillaNeRF`` has no scene box: its samples
    span ``[near, far]``, so ``scene_aabb`` is not passed to it).
    """
    if model == "ngp":
        return NGPRenderer(scene_aabb, near, far, **kwargs)
    if model == "vanilla":
        from taichi_nerf.models.vanilla import VanillaNeRF

        return VanillaNeRF(near, far, **kwargs)
    raise ValueError(f"unknown model {model!r}; choose 'ngp' or 'vanilla'")


def make_renderer(cfg, scene_aabb, near: float, far: float) -> nn.Module:
    """The renderer a **resolved** ``TrainConfig`` describes (``training.resolve_config``).

    Reads ``cfg.model``, ``cfg.seed`` and ``cfg.ngp`` / ``cfg.vanilla``; every value there is
    already final (marching steps, coarse-to-fine window), nothing is defaulted here.
    """
    if cfg.model == "ngp":
        n = cfg.ngp
        if n.marching_steps is None:
            raise ValueError("make_renderer needs a resolved config: resolve_config(cfg, "
                             "device, image_width) fills ngp.marching_steps")
        return build_renderer(
            "ngp", scene_aabb, near, far, n_levels=n.n_levels, n_features=n.n_features,
            log2_table_size=n.log2_table_size, base_resolution=n.base_resolution,
            finest_resolution=n.finest_resolution, hidden_dim=n.hidden_dim,
            grid_resolution=n.grid_resolution, marching_steps=n.marching_steps,
            max_samples_per_ray=n.max_samples_per_ray,
            coarse_to_fine=n.coarse_to_fine_window(), c2f_min_levels=n.c2f_min_levels,
            x_grad=n.x_grad, target_samples=n.target_samples, max_batch_rays=n.max_batch_rays,
            eval_chunk=n.eval_chunk, smooth_l1_beta=n.smooth_l1_beta, seed=cfg.seed)
    v = cfg.vanilla
    return build_renderer("vanilla", scene_aabb, near, far, num_coarse=v.num_coarse,
                          num_fine=v.num_fine, pos_freqs=v.pos_freqs, dir_freqs=v.dir_freqs,
                          width=v.width, depth=v.depth, skip=v.skip, eval_chunk=v.eval_chunk)
