"""Pure-torch twins of the rendering ops (march_rays, composite); see taichi_nerf.reference.

The twins are the specification the Taichi ops are tested against, written for clarity: the
marcher evaluates every step of every ray densely and masks, the compositor scatters samples
into a padded ``[R, S]`` layout and uses ``cumsum``. They share the ray/box clipping and the grid
transform below with the Taichi marcher, so both put samples on bit-identical t grids.
"""

from __future__ import annotations

import torch

__all__ = ["composite", "march_rays"]

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


@torch.no_grad()
def march_rays(
    grid,
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    near: float | torch.Tensor,
    far: float | torch.Tensor,
    step_size: float,
    max_samples_per_ray: int = 1024,
    stratified: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Twin of :func:`taichi_nerf.kernels.marching.march_rays`: dense reference marcher.

    Takes every step ``t_k = t_begin + k * step_size`` of every ray (``t_end`` clipped to the
    segment end), keeps the steps whose midpoint lies in an occupied cell, caps each ray at
    ``max_samples_per_ray`` and packs the rest (sorted by ray, then t).
    """
    dtype, device = rays_o.dtype, rays_o.device
    n_rays = rays_o.shape[0]
    res = int(grid.resolution)
    t_begin, t_end = ray_aabb_bounds(
        grid.aabb, rays_o, rays_d, near, far, step_size, stratified, generator
    )
    lo, scale = grid_transform(grid.aabb, res, dtype, device)
    occupancy = grid.occupancy.to(device).reshape(-1)
    step = torch.as_tensor(step_size, dtype=dtype, device=device)
    empty = (
        torch.zeros(0, dtype=torch.long, device=device),
        torch.zeros(0, dtype=dtype, device=device),
        torch.zeros(0, dtype=dtype, device=device),
    )
    span = (t_end - t_begin).nan_to_num(0.0).clamp(min=0.0)
    if n_rays == 0 or float(span.max()) <= 0.0:
        return empty
    n_steps = int(torch.ceil(span.max() / step)) + 1
    chunk = max(1, (1 << 22) // n_steps)
    out_idx, out_ts, out_te = [], [], []
    k = torch.arange(n_steps, device=device).to(dtype)
    for first in range(0, n_rays, chunk):
        rays = slice(first, min(first + chunk, n_rays))
        t0, t1 = t_begin[rays, None], t_end[rays, None]
        ts = t0 + k[None, :] * step
        valid = ts < t1
        te = torch.minimum(ts + step, t1)
        tm = (ts + te) * 0.5
        # The point in cell units as u = (o - lo) * scale + t_mid * (d * scale), the same
        # operations in the same order as the Taichi marcher, so both round alike.
        o_cells = ((rays_o[rays] - lo) * scale)[:, None, :]
        d_cells = (rays_d[rays] * scale)[:, None, :]
        u = o_cells + tm[..., None] * d_cells
        cell = torch.floor(u).nan_to_num(-1.0).clamp(-1, res).long()
        inside = ((cell >= 0) & (cell < res)).all(dim=-1)
        cell = cell.clamp(0, res - 1)
        flat = (cell[..., 0] * res + cell[..., 1]) * res + cell[..., 2]
        keep = valid & inside & occupancy[flat]
        keep &= torch.cumsum(keep, dim=1) <= max_samples_per_ray
        ray_id, step_id = torch.nonzero(keep, as_tuple=True)
        out_idx.append(ray_id + first)
        out_ts.append(ts[ray_id, step_id])
        out_te.append(te[ray_id, step_id])
    return torch.cat(out_idx), torch.cat(out_ts), torch.cat(out_te)


def composite(
    sigmas: torch.Tensor,
    rgbs: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    background: torch.Tensor | None = None,
    early_stop_eps: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Twin of :func:`taichi_nerf.kernels.compositing.composite` (autograd through torch ops).

    Scatters the packed samples into a padded ``[R, S]`` layout, takes the exclusive
    ``cumsum`` of ``sigma * delta`` per row for the transmittance, and sums the weights back per
    ray. Same maths, conventions (unnormalised depth) and early termination as the op.
    """
    n_rays = int(n_rays)
    dtype, device = sigmas.dtype, sigmas.device
    m = sigmas.shape[0]
    counts = torch.bincount(ray_indices, minlength=n_rays)[:n_rays]
    starts = torch.cumsum(counts, 0) - counts
    col = torch.arange(m, device=device) - starts[ray_indices]
    width = int(counts.max()) if n_rays > 0 and m > 0 else 0

    tau = sigmas * (t_ends - t_starts)
    padded = torch.zeros(n_rays, width + 1, dtype=dtype, device=device)
    padded = padded.index_put((ray_indices, col + 1), tau)
    exclusive = torch.cumsum(padded, dim=1)[:, :-1]  # column j holds sum of the first j taus
    trans = torch.exp(-exclusive[ray_indices, col])
    weights = trans * (1.0 - torch.exp(-tau))
    if early_stop_eps > 0.0:
        # The op stops at the first sample with T < eps; T can only fall along a ray, but count
        # the first drop explicitly so the twin says exactly that.
        below = torch.zeros(n_rays, width, dtype=torch.long, device=device)
        below = below.index_put((ray_indices, col), (trans.detach() < early_stop_eps).long())
        stopped = torch.cumsum(below, dim=1)[ray_indices, col] > 0
        weights = torch.where(stopped, torch.zeros_like(weights), weights)

    t_mid = (t_starts + t_ends) * 0.5
    zero = torch.zeros(n_rays, dtype=dtype, device=device)
    opacity = zero.index_add(0, ray_indices, weights)
    depth = zero.index_add(0, ray_indices, weights * t_mid)
    rgb = torch.zeros(n_rays, 3, dtype=dtype, device=device).index_add(
        0, ray_indices, weights[:, None] * rgbs
    )
    if background is not None:
        rgb = rgb + (1.0 - opacity)[:, None] * background.to(dtype)
    return rgb, opacity, depth
