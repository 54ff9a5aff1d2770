"""Ray/box clipping and the world-to-grid transform shared by the Taichi marcher and its twin.

Both start from these exact values, so the kernel and :func:`taichi_nerf.reference.march_rays`
put samples on bit-identical t grids. Not public ops.
"""

from __future__ import annotations

import torch

__all__ = ["ray_aabb_bounds", "grid_transform"]

#: Rays per chunk of the CPU slab test: 4096 x 6 values stay under torch's parallel grain.
_CPU_RAY_CHUNK = 4096


def ray_aabb_bounds(
    aabb: torch.Tensor,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    near: float | torch.Tensor,
    far: float | torch.Tensor,
    step_size: float,
    stratified: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """First sample start ``t_begin [R]`` and end of the marched segment ``t_end [R]``.

    The segment is the ray inside the box ``aabb [6]`` (xmin, ymin, zmin, xmax, ymax, zmax)
    clipped to ``[near, far]``; rays missing it get ``t_end <= t_begin`` (no samples). With
    ``stratified`` the start moves by ``u * step_size``, ``u ~ U[0, 1)`` per ray from
    ``generator``. Shared by :func:`march_rays` and the Taichi marcher (not a public op).
    """
    dtype, device = rays_o.dtype, rays_o.device
    box = aabb.to(device=device, dtype=dtype).reshape(2, 3)
    # Slab test. A zero direction component divides into +-inf, which IEEE min/max handle
    # (inside that slab for all t, or never); only 0/0 (an origin exactly on a face plane of a
    # parallel ray) gives NaN, and NaN rays get no samples. On the CPU, in chunks small enough
    # that torch runs each op on one thread: on a busy machine every OpenMP parallel region
    # waits for all its threads to be scheduled, which made these few cheap ops cost more
    # than the marching itself.
    chunk = _CPU_RAY_CHUNK if device.type == "cpu" else max(rays_o.shape[0], 1)
    t_enter, t_exit = [], []
    for first in range(0, rays_o.shape[0], chunk):
        o, d = rays_o[first : first + chunk, None, :], rays_d[first : first + chunk, None, :]
        t_faces = (box - o) / d  # [r, 2, 3]
        t_enter.append(t_faces.amin(dim=1).amax(dim=-1))
        t_exit.append(t_faces.amax(dim=1).amin(dim=-1))
    t_enter = torch.cat(t_enter) if t_enter else rays_o.new_zeros(0)
    t_exit = torch.cat(t_exit) if t_exit else rays_o.new_zeros(0)
    if isinstance(near, torch.Tensor):
        t_begin = torch.maximum(t_enter, near.to(device=device, dtype=dtype))
    else:
        t_begin = t_enter.clamp(min=float(near))
    if isinstance(far, torch.Tensor):
        t_end = torch.minimum(t_exit, far.to(device=device, dtype=dtype))
    else:
        t_end = t_exit.clamp(max=float(far))
    if stratified:
        u = torch.rand(t_begin.shape, generator=generator, dtype=dtype, device=device)
        t_begin = t_begin + u * torch.as_tensor(step_size, dtype=dtype, device=device)
    return t_begin.contiguous(), t_end.contiguous()


def grid_transform(aabb: torch.Tensor, resolution: int, dtype: torch.dtype, device) -> tuple:
    """``(lo [3], scale [3])``: a point ``o + t d`` has cell coordinates (in ``[0, res)``
    inside the box) ``u = (o - lo) * scale + t * (d * scale)``, evaluated in that order."""
    box = aabb.to(device=device, dtype=dtype)
    lo = box[:3].contiguous()
    scale = (resolution / (box[3:] - box[:3])).contiguous()
    return lo, scale
