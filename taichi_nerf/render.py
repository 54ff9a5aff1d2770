"""Volume rendering with an occupancy grid: march (no grad) -> field (torch) -> composite.

The nerfacc recipe, which is what lets poses learn: :func:`~taichi_nerf.kernels.march_rays`
returns only distances ``t`` (no gradient), sample positions ``o[idx] + t_mid * d[idx]`` and view
directions ``d[idx]`` are formed here in torch, so the photometric loss reaches the field **and**
``rays_o`` / ``rays_d`` (and through them the camera poses). The ``t`` values themselves are
treated as constants, as in nerfacc and instant-ngp.

Example::

    out = render_rays(field, grid, rays_o, rays_d, near=2.0, far=6.0, step_size=5e-3,
                      background=torch.ones(3))
    loss = F.mse_loss(out["rgb"], target)   # gradients to field params, rays_o, rays_d
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import record_function

from taichi_nerf.kernels.packed import (
    PackedInfo,
    exclusive_transmittance,
    gather_rays,
    ray_points,
    select_samples,
)

__all__ = ["render_rays", "render_image", "prune_occluded"]


@torch.no_grad()
def prune_occluded(density_fn: Callable[[torch.Tensor], torch.Tensor], rays_o: torch.Tensor,
                   rays_d: torch.Tensor, ray_indices: torch.Tensor, t_starts: torch.Tensor,
                   t_ends: torch.Tensor, early_stop_eps: float = 1e-4, alpha_thre: float = 0.0,
                   packed_info: PackedInfo | None = None) -> torch.Tensor:
    """Mask ``[M]`` of samples worth a differentiable pass (nerfacc's ``sigma_fn`` pruning).

    Evaluates the density once without gradients and drops samples behind the point where the
    transmittance falls under ``early_stop_eps`` (their weights are < eps, so dropping them
    changes the image by less than eps) and, when ``alpha_thre > 0``, samples whose own alpha is
    below it. Far fewer samples then go through the backward pass on opaque scenes. The
    transmittance is :func:`~taichi_nerf.kernels.packed.exclusive_transmittance` (per-ray sums,
    in the rays' dtype); ``packed_info`` from the marcher saves it a host sync.
    """
    if ray_indices.numel() == 0:
        return torch.ones(0, dtype=torch.bool, device=ray_indices.device)
    t_mid = 0.5 * (t_starts + t_ends)
    positions = rays_o[ray_indices] + t_mid[:, None] * rays_d[ray_indices]
    optical_depths = density_fn(positions).reshape(-1) * (t_ends - t_starts)
    trans = exclusive_transmittance(optical_depths, ray_indices, rays_o.shape[0], packed_info)
    keep = trans >= early_stop_eps
    if alpha_thre > 0:
        keep &= (1.0 - torch.exp(-optical_depths)) >= alpha_thre
    return keep


def render_rays(field: Callable[..., Any], grid, rays_o: torch.Tensor, rays_d: torch.Tensor, *,
                near: float, far: float, step_size: float, background: torch.Tensor | None,
                max_samples_per_ray: int = 1024, density_fn: Callable | None = None,
                early_stop_eps: float = 1e-4, alpha_thre: float = 0.0, stratified: bool = False,
                generator: torch.Generator | None = None) -> dict[str, Any]:
    """Render rays through a field with occupancy-grid marching.

    Args:
        field: ``field(positions [M,3], directions [M,3]) -> (sigmas [M], rgbs [M,3])``, world
            coordinates, unit directions; one with ``forward_packed(positions, rays_d,
            ray_indices, packed_info)`` (the same from per-ray directions) is called so.
        grid: an :class:`~taichi_nerf.kernels.OccupancyGrid` over the scene box.
        rays_o: ``[R,3]`` origins, ``rays_d``: ``[R,3]`` unit directions (world).
        near, far: distance bounds along the rays; step_size: marching step (scene units).
        background: ``[3]`` or ``[R,3]`` colour behind the scene (None: black).
        max_samples_per_ray: marching cap.
        density_fn: ``positions -> sigmas`` for the no-grad pruning pass
            (:func:`prune_occluded`); None skips pruning.
        early_stop_eps, alpha_thre: pruning thresholds.
        stratified, generator: jitter each ray's t grid (training), see ``march_rays``.

    Returns:
        dict with ``rgb [R,3]``, ``opacity [R]``, ``depth [R]`` (differentiable in the field
        parameters, ``rays_o`` and ``rays_d``), ``num_samples`` (int, samples shaded),
        ``num_marched`` (int, samples before pruning) and ``packed_info`` (the
        :class:`~taichi_nerf.kernels.packed.PackedInfo` of the shaded samples).

    Host syncs: two (the marcher's sample count, the pruned count; one without pruning). The
    marcher's ``packed_info`` flows on into pruning, the ray gathers and compositing. The
    gradient to ``rays_o`` / ``rays_d`` is summed per ray in a fixed order
    (:func:`~taichi_nerf.kernels.packed.gather_rays`), so CPU training repeats bit for bit.
    """
    from taichi_nerf.kernels.compositing import composite
    from taichi_nerf.kernels.marching import march_rays

    n_rays = rays_o.shape[0]
    with torch.no_grad():
        ray_indices, t_starts, t_ends, info = march_rays(
            grid, rays_o.detach().contiguous(), rays_d.detach().contiguous(), near, far,
            step_size, max_samples_per_ray=max_samples_per_ray, stratified=stratified,
            generator=generator, return_packed_info=True)
        num_marched = info.n_samples
        if density_fn is not None and num_marched > 0:
            keep = prune_occluded(density_fn, rays_o.detach(), rays_d.detach(), ray_indices,
                                  t_starts, t_ends, early_stop_eps, alpha_thre, info)
            kept, info = select_samples(ray_indices, info, keep)
            ray_indices, t_starts, t_ends = ray_indices[kept], t_starts[kept], t_ends[kept]
    positions = ray_points(rays_o, rays_d, 0.5 * (t_starts + t_ends), ray_indices, info)
    with record_function("taichi_nerf.render_rays.field"):
        if hasattr(field, "forward_packed"):  # view encoding once per ray (NGPField)
            sigmas, rgbs = field.forward_packed(positions, rays_d, ray_indices, info)
        else:
            sigmas, rgbs = field(positions, gather_rays(rays_d, ray_indices, info))
    rgb, opacity, depth = composite(sigmas.reshape(-1), rgbs, t_starts, t_ends, ray_indices,
                                    n_rays, background, packed_info=info)
    return {"rgb": rgb, "opacity": opacity, "depth": depth, "num_samples": info.n_samples,
            "num_marched": num_marched, "packed_info": info}


@torch.no_grad()
def render_image(renderer, rays_o: torch.Tensor, rays_d: torch.Tensor, *,
                 background: torch.Tensor, chunk: int = 16384,
                 height: int | None = None, width: int | None = None) -> dict[str, torch.Tensor]:
    """Render many rays (a whole image) in chunks with any renderer module (no gradients).

    Args:
        renderer: module with ``render_rays(rays_o, rays_d, background=..., train=False)``.
        rays_o, rays_d: ``[H*W,3]`` rays, row-major (``taichi_nerf.rays.image_rays``).
        chunk: rays per call (bounds memory).
        height, width: when given, outputs are reshaped to ``[H,W,3]`` / ``[H,W]``.

    Returns:
        ``rgb``, ``opacity``, ``depth`` (and ``num_samples`` as a 0-d tensor).
    """
    pieces: dict[str, list[torch.Tensor]] = {"rgb": [], "opacity": [], "depth": []}
    num_samples = 0
    for start in range(0, rays_o.shape[0], chunk):
        out = renderer.render_rays(rays_o[start:start + chunk], rays_d[start:start + chunk],
                                   background=background, train=False)
        for key in pieces:
            pieces[key].append(out[key])
        num_samples += int(out.get("num_samples", 0))
    result = {key: torch.cat(value) for key, value in pieces.items()}
    if height is not None and width is not None:
        result["rgb"] = result["rgb"].reshape(height, width, 3)
        result["opacity"] = result["opacity"].reshape(height, width)
        result["depth"] = result["depth"].reshape(height, width)
    result["num_samples"] = torch.tensor(num_samples)
    return result
