"""Pure-torch twins of every public kernel op, with identical signatures.

Each twin is the specification its Taichi op is tested against (forward, backward with a random
upstream gradient, float64 gradcheck) and a readable fallback: plain torch autograd gives the
gradients. Shared definitions come from one place, none of which imports Taichi: the hash-grid
level layout and primes and the SH constants from :mod:`taichi_nerf.kernels.specs`, the ray/box
clipping and grid transform from :mod:`taichi_nerf.kernels._geometry`, the packed-sample helpers
and the transmittance primitive from :mod:`taichi_nerf.kernels.packed`. This module imports no
Taichi.

===========================  =========================================
twin                         mirrors
===========================  =========================================
``hash_encode``              :func:`taichi_nerf.kernels.hash_grid.hash_encode`
``sh_encode``                :func:`taichi_nerf.kernels.sh.sh_encode`
``march_rays``               :func:`taichi_nerf.kernels.marching.march_rays` (dense marcher)
``composite``                :func:`taichi_nerf.kernels.compositing.composite`
``gather_rays``              :func:`taichi_nerf.kernels.packed.gather_rays`
``ray_points``               :func:`taichi_nerf.kernels.packed.ray_points`
===========================  =========================================
"""

from __future__ import annotations

import math

import torch

from taichi_nerf.kernels._geometry import grid_transform, ray_aabb_bounds
from taichi_nerf.kernels.packed import (
    PackedInfo,
    exclusive_transmittance,
    packed_info_from_sorted,
)
from taichi_nerf.kernels.specs import HASH_PRIMES, SH_C, HashGridSpec

__all__ = ["hash_encode", "sh_encode", "march_rays", "composite", "gather_rays", "ray_points"]

_CORNERS = [((c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1) for c in range(8)]


def hash_encode(x: torch.Tensor, table: torch.Tensor, spec: HashGridSpec, *,
                x_grad: str = "exact") -> torch.Tensor:
    """Twin of :func:`taichi_nerf.kernels.hash_grid.hash_encode` in plain torch.

    Args:
        x: ``[N, 3]`` points, clamped to ``[0, 1]``.
        table: ``[spec.table_size, spec.n_features]``.
        spec: grid layout.
        x_grad: ``"smooth"``: trilinear values, the x-gradient of the cosine-weighted blend
            (straight-through: ``w_lin(sg t) + w_cos(t) - sg(w_cos(t))``).

    Returns:
        ``[N, spec.n_levels * spec.n_features]``, differentiable in ``x`` and ``table``.
    """
    xc = x.clamp(0.0, 1.0)
    corners = torch.tensor(_CORNERS, device=x.device)  # [8, 3] offsets of the cell corners
    upper = corners.bool()
    out = []
    for res, offset, _, dense in spec.levels():
        pos = xc * res
        # Cells are piecewise constant (no gradient); the weights carry d/dx through `frac`.
        cell = pos.detach().floor().clamp(max=res - 1)
        frac = pos - cell
        vertex = cell.long()[:, None, :] + corners  # [N, 8, 3]
        weight = _trilinear(frac if x_grad == "exact" else frac.detach(), upper)  # [N, 8]
        if x_grad == "smooth":
            smooth = _trilinear((1.0 - torch.cos(math.pi * frac)) / 2, upper)
            weight = weight + (smooth - smooth.detach())
        if dense:
            stride = res + 1
            row = vertex[..., 0] + stride * (vertex[..., 1] + stride * vertex[..., 2])
        else:
            # int64 products keep the low 32 bits of the uint32 products; masking by
            # 2**log2T - 1 reads only those, so this equals the kernel's uint32 hash.
            row = vertex[..., 0] * HASH_PRIMES[0]
            row = row ^ (vertex[..., 1] * HASH_PRIMES[1])
            row = row ^ (vertex[..., 2] * HASH_PRIMES[2])
            row = row & (2**spec.log2_table_size - 1)
        out.append((weight[..., None] * table[offset + row]).sum(dim=1))  # [N, F]
    return torch.cat(out, dim=-1)


def _trilinear(frac: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``[N, 8]`` corner weights from the ``[N, 3]`` position in the cell."""
    factor = torch.where(upper, frac[:, None, :], 1.0 - frac[:, None, :])  # [N, 8, 3]
    return factor[..., 0] * factor[..., 1] * factor[..., 2]


def sh_encode(d: torch.Tensor) -> torch.Tensor:
    """Twin of :func:`taichi_nerf.kernels.sh.sh_encode` in plain torch.

    Args:
        d: ``[N, 3]`` unit directions.

    Returns:
        ``[N, 16]`` real spherical harmonics of bands 0..3 (tcnn ``degree=4`` layout and signs),
        differentiable in ``d``.
    """
    c = SH_C
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    xx, yy, zz = x * x, y * y, z * z
    cols = [
        torch.full_like(x, c["C0"]),
        -c["C1"] * y,
        c["C1"] * z,
        -c["C1"] * x,
        c["C2"] * x * y,
        -c["C2"] * y * z,
        c["C2_ZZ"] * zz - c["C2_0"],
        -c["C2"] * x * z,
        c["C2_XY"] * (xx - yy),
        c["C3_0"] * y * (yy - 3.0 * xx),
        c["C3_1"] * x * y * z,
        c["C3_2"] * y * (1.0 - 5.0 * zz),
        c["C3_3"] * z * (5.0 * zz - 3.0),
        c["C3_2"] * x * (1.0 - 5.0 * zz),
        c["C3_4"] * z * (xx - yy),
        c["C3_0"] * x * (3.0 * yy - xx),
    ]
    return torch.stack(cols, dim=-1)


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
    return_packed_info: bool = False,
):
    """Twin of :func:`taichi_nerf.kernels.marching.march_rays`: dense reference marcher.

    Takes every step ``t_k = t_begin + k * step_size`` of every ray (``t_end`` clipped to the
    segment end), keeps the steps whose midpoint lies in an occupied cell, caps each ray at
    ``max_samples_per_ray`` and packs the rest (sorted by ray, then t); with
    ``return_packed_info`` also their :class:`~taichi_nerf.kernels.packed.PackedInfo`.
    """
    out = _march_dense(grid, rays_o, rays_d, near, far, step_size, max_samples_per_ray,
                       stratified, generator)
    if return_packed_info:
        return (*out, packed_info_from_sorted(out[0], rays_o.shape[0]))
    return out


def _march_dense(grid, rays_o, rays_d, near, far, step_size, max_samples_per_ray, stratified,
                 generator):
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
    packed_info: PackedInfo | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Twin of :func:`taichi_nerf.kernels.compositing.composite` (autograd through torch ops).

    Transmittance from the one primitive,
    :func:`~taichi_nerf.kernels.packed.exclusive_transmittance` (an exclusive per-ray ``cumsum``
    of the optical depths ``sigma * delta``), then the weights summed back per ray. Same maths,
    conventions (unnormalised depth) and early termination as the op.
    """
    n_rays = int(n_rays)
    dtype, device = sigmas.dtype, sigmas.device
    if packed_info is None:
        packed_info = packed_info_from_sorted(ray_indices, n_rays)
    optical_depths = sigmas * (t_ends - t_starts)
    trans = exclusive_transmittance(optical_depths, ray_indices, n_rays, packed_info)
    weights = trans * (1.0 - torch.exp(-optical_depths))
    if early_stop_eps > 0.0:
        # The op stops at the first sample with T < eps; T can only fall along a ray, but count
        # the first drop explicitly so the twin says exactly that.
        col = torch.arange(sigmas.shape[0], device=device) - packed_info.starts.long()[ray_indices]
        below = torch.zeros(n_rays, packed_info.max_count, dtype=torch.long, device=device)
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


def gather_rays(values: torch.Tensor, ray_indices: torch.Tensor,
                packed_info: PackedInfo | None = None) -> torch.Tensor:
    """Twin of :func:`taichi_nerf.kernels.packed.gather_rays`: plain ``values[ray_indices]``.

    Same values and gradients; its backward is torch's own (atomic float adds on the CPU, so
    not bit-repeatable from run to run), which is what the op replaces.
    """
    return values[ray_indices]


def ray_points(rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor,
               ray_indices: torch.Tensor, packed_info: PackedInfo | None = None) -> torch.Tensor:
    """Twin of :func:`taichi_nerf.kernels.packed.ray_points`: ``o[ray] + t * d[ray]`` in plain
    torch (autograd's own backward)."""
    return rays_o[ray_indices] + t.to(rays_o.dtype)[:, None] * rays_d[ray_indices]
