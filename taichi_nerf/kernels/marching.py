"""Occupancy grid and ray marching through it (Taichi kernels, no gradients).

:class:`OccupancyGrid` keeps the instant-ngp / nerfacc occupancy state in torch buffers (a
density EMA per cell and a binary occupancy), so ``state_dict`` round-trips and ``.to(device)``
moves it. :func:`march_rays` steps every ray through the grid on a fixed t grid
``t_k = t_begin + k * step_size`` and keeps the steps whose midpoint lies in an occupied cell,
returning packed ``(ray_indices, t_starts, t_ends)`` for :func:`composite`.

Cells: ``resolution^3`` over the scene box ``[xmin, ymin, zmin, xmax, ymax, zmax]``; cell
``(i, j, k)`` (x, y, z) has flat index ``(i * res + j) * res + k``.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.
from collections.abc import Callable

import taichi as ti
import torch
from torch import nn
from torch.profiler import record_function

from taichi_nerf.kernels import _common
from taichi_nerf.kernels._geometry import grid_transform, ray_aabb_bounds
from taichi_nerf.kernels.packed import PackedInfo, packed_info_from_counts

__all__ = ["OccupancyGrid", "march_rays"]

_OP = "march_rays"


class OccupancyGrid(nn.Module):
    """Binary occupancy over the scene box, updated from a density field (instant-ngp/nerfacc).

    Buffers (all in ``state_dict``): ``aabb [6]`` float32, ``density [res^3]`` float32 (EMA of
    the sampled density), ``occupancy [res^3]`` bool, ``seed`` int64 (the update RNG is seeded
    from ``(seed, step)``, so a resumed run draws exactly the same cells).

    Args:
        scene_aabb: ``[6]`` box ``(xmin, ymin, zmin, xmax, ymax, zmax)`` in scene units.
        resolution: cells per axis.
        seed: seed of the update's random cell choice and jitter.

    A fresh grid is empty (nothing occupied): call :meth:`update` (its warm-up evaluates every
    cell) or :meth:`mark_all_occupied` before marching.
    """

    def __init__(self, scene_aabb, resolution: int = 128, seed: int = 0):
        super().__init__()
        aabb = torch.as_tensor(scene_aabb, dtype=torch.float32).detach().reshape(-1).cpu()
        if aabb.numel() != 6 or not bool((aabb[3:] > aabb[:3]).all()):
            raise ValueError(
                "OccupancyGrid: scene_aabb must be [xmin, ymin, zmin, xmax, ymax, zmax] with "
                f"max > min on every axis, got {aabb.tolist()}"
            )
        if int(resolution) != resolution or resolution < 1 or resolution > 1024:
            raise ValueError(
                f"OccupancyGrid: resolution must be an int in [1, 1024], got {resolution}"
            )
        self.resolution = int(resolution)
        cells = self.resolution**3
        self.register_buffer("aabb", aabb.clone())
        self.register_buffer("density", torch.zeros(cells, dtype=torch.float32))
        self.register_buffer("occupancy", torch.zeros(cells, dtype=torch.bool))
        self.register_buffer("seed", torch.tensor(int(seed), dtype=torch.int64))

    @property
    def num_cells(self) -> int:
        return self.resolution**3

    def occupied_fraction(self) -> float:
        """Share of occupied cells, in ``[0, 1]``."""
        return float(self.occupancy.float().mean())

    def cell_coords(self, indices: torch.Tensor) -> torch.Tensor:
        """Integer cell coordinates ``[n, 3]`` (x, y, z) of flat cell ``indices [n]``."""
        res = self.resolution
        return torch.stack((indices // (res * res), (indices // res) % res, indices % res), -1)

    @torch.no_grad()
    def mark_all_occupied(self) -> None:
        """Occupy every cell (marching then equals uniform stepping through the box)."""
        self.occupancy.fill_(True)

    @torch.no_grad()
    def update(
        self,
        step: int,
        density_fn: Callable[[torch.Tensor], torch.Tensor],
        occ_thre: float = 0.01,
        ema_decay: float = 0.95,
        warmup_steps: int = 256,
        n: int = 16,
        chunk_size: int = 2**18,
    ) -> bool:
        """Refresh the grid from ``density_fn`` on the nerfacc schedule; returns whether it ran.

        Runs only when ``step % n == 0``. While ``step < warmup_steps`` every cell is evaluated;
        afterwards ``cells / 4`` uniformly random cells plus ``cells / 4`` cells drawn (with
        replacement) from the occupied ones, as nerfacc does. Each chosen cell is evaluated at a
        uniformly jittered point inside it; ``density = max(density * ema_decay, sigma)`` for
        chosen cells only (a cell drawn twice takes the max of its samples, decays once); then
        ``occupancy = density > min(occ_thre, mean(density))``.

        Args:
            step: the training step.
            density_fn: world positions ``[m, 3]`` (float32, the grid's device) -> density
                ``[m]`` or ``[m, 1]``; called under ``no_grad`` on at most ``chunk_size`` points.
                Pass ``lambda x: sigma(x) * step_size`` to threshold the optical depth of one
                marching step (about its opacity while small) instead, as nerfacc does.
            occ_thre: upper bound of the occupancy threshold on the density.
            ema_decay: decay of the running density per update.
            warmup_steps: steps during which every cell is evaluated.
            n: update interval in steps.
            chunk_size: points per ``density_fn`` call (bounds memory).
        """
        if n < 1 or step % n != 0:
            return False
        device = self.density.device
        cells = self.num_cells
        gen = torch.Generator(device=device)
        gen.manual_seed((int(self.seed) * 1_000_003 + int(step)) % (2**63))
        if step < warmup_steps:
            indices = torch.arange(cells, device=device)
        else:
            m = max(cells // 4, 1)
            uniform = torch.randint(cells, (m,), generator=gen, device=device)
            occupied = torch.nonzero(self.occupancy).reshape(-1)
            if occupied.numel() > 0:
                pick = torch.randint(occupied.numel(), (m,), generator=gen, device=device)
                indices = torch.cat((uniform, occupied[pick]))
            else:
                indices = uniform
        lo, size = self.aabb[:3].to(device), (self.aabb[3:] - self.aabb[:3]).to(device)
        sigma = torch.empty(indices.shape[0], dtype=torch.float32, device=device)
        for first in range(0, indices.shape[0], chunk_size):
            chunk = indices[first : first + chunk_size]
            jitter = torch.rand(chunk.shape[0], 3, generator=gen, device=device)
            unit = (self.cell_coords(chunk).float() + jitter) / self.resolution
            out = density_fn(lo + unit * size)
            # A NaN would stick in the EMA for good (max propagates it) and empty the whole grid
            # through the mean; count it as empty space instead.
            out = out.detach().reshape(-1).float().nan_to_num(nan=0.0)
            sigma[first : first + chunk.shape[0]] = out
        fresh = torch.zeros(cells, dtype=torch.float32, device=device)
        fresh.scatter_reduce_(0, indices, sigma, reduce="amax", include_self=False)
        chosen = torch.zeros(cells, dtype=torch.bool, device=device)
        chosen[indices] = True
        decayed = torch.maximum(self.density * ema_decay, fresh)
        self.density.copy_(torch.where(chosen, decayed, self.density))
        threshold = torch.clamp(self.density.mean(), max=occ_thre)
        self.occupancy.copy_(self.density > threshold)
        return True

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, aabb={self.aabb.tolist()}"


#: Cells per side of the coarse blocks whose emptiness lets a ray skip 8^3 cells at once.
_BLOCK = 8


@ti.kernel
def _block_occupancy_kernel(occupancy: ti.types.ndarray(), blocks: ti.types.ndarray(),
                            res: ti.i32):  # fmt: skip
    # blocks arrive zeroed; every occupied cell marks its block (equal writes, any order).
    nb = (res + _BLOCK - 1) // _BLOCK
    for i in range(occupancy.shape[0]):
        if occupancy[i] != 0:
            x = i // (res * res)
            y = (i // res) % res
            z = i % res
            blocks[((x // _BLOCK) * nb + y // _BLOCK) * nb + z // _BLOCK] = 1


def _block_occupancy(grid: "OccupancyGrid") -> torch.Tensor:
    """``[nb^3]`` uint8: whether any cell of each ``_BLOCK^3`` block is occupied (padded).

    Cached on the grid until its occupancy buffer changes: every in-place write (``update``,
    ``mark_all_occupied``, ``load_state_dict``) bumps the tensor's version counter, and ``.to()``
    makes a new tensor. So marching costs no extra kernel launch between grid updates.
    """
    occupancy = grid.occupancy
    key = (occupancy.data_ptr(), occupancy.device, occupancy._version, grid.resolution)
    cached = getattr(grid, "_block_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    res = grid.resolution
    nb = -(-res // _BLOCK)
    blocks = torch.zeros(nb**3, dtype=torch.uint8, device=occupancy.device)
    _block_occupancy_kernel(occupancy.reshape(-1).contiguous().view(torch.uint8), blocks, res)
    grid._block_cache = (key, blocks)
    return blocks


@ti.func
def _box_exit(o, d, inv_d, low, cell_size, corner, size, far, slack):
    # Lower bound of the t where the ray leaves the box of cells [corner, corner + size):
    # each face's t minus a bound on its rounding (slack[a] on the numerator, times 1/|d|).
    t = far
    for a in ti.static(range(3)):
        if d[a] > 0:
            face = low[a] + (corner[a] + size) * cell_size[a]
            t = ti.min(t, (face - o[a]) * inv_d[a] - slack[a] * inv_d[a])
        elif d[a] < 0:
            face = low[a] + corner[a] * cell_size[a]
            t = ti.min(t, (face - o[a]) * inv_d[a] + slack[a] * inv_d[a])
    return t


@ti.kernel
def _march_kernel(
    rays_o: ti.types.ndarray(),
    rays_d: ti.types.ndarray(),
    t_begin: ti.types.ndarray(),
    t_end: ti.types.ndarray(),
    occupancy: ti.types.ndarray(),
    blocks: ti.types.ndarray(),
    lo: ti.types.ndarray(),
    scale: ti.types.ndarray(),
    res: ti.i32,
    step_size: ti.f64,
    rel_tolerance: ti.f64,
    max_samples: ti.i32,
    offsets: ti.types.ndarray(),
    counts: ti.types.ndarray(),
    out_ray_indices: ti.types.ndarray(),
    out_t_starts: ti.types.ndarray(),
    out_t_ends: ti.types.ndarray(),
    dt: ti.template(),
    write: ti.template(),
):
    step = ti.cast(step_size, dt)
    rel_tol = ti.cast(rel_tolerance, dt)
    nb = (res + _BLOCK - 1) // _BLOCK
    for r in range(rays_o.shape[0]):
        # Locals, not ndarray reads in the loop: the compiler cannot hoist those past the writes.
        low = ti.Vector([lo[0], lo[1], lo[2]])
        sc = ti.Vector([scale[0], scale[1], scale[2]])
        cell_size = 1.0 / sc
        o = ti.Vector([rays_o[r, 0], rays_o[r, 1], rays_o[r, 2]])
        d = ti.Vector([rays_d[r, 0], rays_d[r, 1], rays_d[r, 2]])
        # The ray in cell units, u(t) = o_cells + t d_cells: the per-step point is then one
        # multiply-add per axis, and the compiler has no loop invariant left to re-associate
        # (which would change the rounding against the twin's identical formula).
        o_cells = (o - low) * sc
        d_cells = d * sc
        inv_d = ti.Vector([ti.cast(0.0, dt)] * 3)
        for a in ti.static(range(3)):
            if d[a] != 0:
                inv_d[a] = 1.0 / d[a]
        t0 = t_begin[r]
        t1 = t_end[r]
        # Rounding bounds: of a face's distance to o per axis, and of a t on the grid.
        slack = rel_tol * (ti.abs(o) + ti.abs(low) + ti.abs(low + res * cell_size))
        t_slack = rel_tol * (ti.abs(t0) + ti.abs(t1))
        base = 0
        if ti.static(write):
            base = offsets[r]
        k = 0
        count = 0
        while count < max_samples:
            ts = t0 + ti.cast(k, dt) * step
            if not ts < t1:  # also ends NaN rays
                break
            te = ti.min(ts + step, t1)
            u = o_cells + (ts + te) * 0.5 * d_cells
            cell = ti.Vector([0, 0, 0])
            for a in ti.static(range(3)):
                cell[a] = ti.cast(ti.floor(u[a]), ti.i32)
            inside = 0 <= cell[0] < res and 0 <= cell[1] < res and 0 <= cell[2] < res
            if not inside:
                k += 1  # only at the box faces, by rounding
                continue
            block = cell // _BLOCK
            t_exit = ti.cast(0.0, dt)
            if blocks[(block[0] * nb + block[1]) * nb + block[2]] == 0:
                corner = block * _BLOCK
                t_exit = _box_exit(o, d, inv_d, low, cell_size, corner, _BLOCK, t1, slack)
            elif occupancy[(cell[0] * res + cell[1]) * res + cell[2]] == 0:
                t_exit = _box_exit(o, d, inv_d, low, cell_size, cell, 1, t1, slack)
            else:
                if ti.static(write):
                    out_ray_indices[base + count] = r
                    out_t_starts[base + count] = ts
                    out_t_ends[base + count] = te
                count += 1
                k += 1
                continue
            # Empty box: jump to the first step whose midpoint is past its exit. Every step
            # skipped has its midpoint between this one and the exit, so in the same empty box;
            # the slack (well above the rounding of t_exit) errs towards one extra look.
            k_jump = ti.min((t_exit - t_slack - t0) / step - 0.5, ti.cast(2.0e9, dt))
            k = ti.max(k + 1, ti.cast(ti.ceil(k_jump), ti.i32))
        counts[r] = count


def _check_march_inputs(grid, rays_o, rays_d, near, far, step_size, max_samples_per_ray):
    if not isinstance(grid, OccupancyGrid):
        raise ValueError(f"{_OP}: grid must be an OccupancyGrid, got {type(grid).__name__}")
    _common.check_tensor("rays_o", rays_o, op=_OP, shape=(None, 3))
    n_rays = rays_o.shape[0]
    _common.check_tensor("rays_d", rays_d, op=_OP, shape=(n_rays, 3), dtypes=(rays_o.dtype,))
    tensors = {"rays_o": rays_o, "rays_d": rays_d, "grid.occupancy": grid.occupancy}
    for name, value in (("near", near), ("far", far)):
        if isinstance(value, torch.Tensor):
            if value.shape not in ((), (n_rays,)) or not value.is_floating_point():
                raise ValueError(
                    f"{_OP}: {name} must be a float or a float tensor [{n_rays}], got "
                    f"{value.dtype} {list(value.shape)}"
                )
            tensors[name] = value
    device = _common.check_same_device(_OP, **tensors)
    if not (float(step_size) > 0.0 and float(step_size) < float("inf")):
        raise ValueError(f"{_OP}: step_size must be a positive finite float, got {step_size}")
    if int(max_samples_per_ray) != max_samples_per_ray or not 1 <= max_samples_per_ray < 2**31:
        raise ValueError(
            f"{_OP}: max_samples_per_ray must be an int in [1, 2^31), got {max_samples_per_ray}"
        )
    return device


@torch.no_grad()
def march_rays(
    grid: OccupancyGrid,
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
    """March rays through the occupancy grid; packed samples in occupied cells (no gradients).

    Each ray is clipped to the grid's box and to ``[near, far]``, giving ``[t_begin, t_end)``.
    Steps are ``t_start = t_begin + k * step_size``, ``t_end = min(t_start + step_size,
    t_end)`` while ``t_start < t_end``; a step is kept when the cell holding its midpoint is
    occupied. Empty ``8^3`` blocks and empty cells are crossed in one jump each, landing on the
    same t grid, so the result is exactly that of visiting every step (the dense twin). A ray
    keeps at most ``max_samples_per_ray`` samples (the first ones). With every cell occupied
    this is uniform stepping through the clipped segment.

    Args:
        grid: the :class:`OccupancyGrid` (on the rays' device).
        rays_o: ``[R, 3]`` origins (world, scene units), float32 or float64.
        rays_d: ``[R, 3]`` directions, same dtype; t is measured in units of ``|rays_d|``
            (unit directions: scene units).
        near, far: float or ``[R]`` tensor bounds on t.
        step_size: distance between samples in t.
        max_samples_per_ray: cap on the samples of one ray.
        stratified: shift each ray's t grid by ``u * step_size``, ``u ~ U[0, 1)`` (training).
        generator: the generator for ``stratified`` (on the rays' device).
        return_packed_info: also return the :class:`~taichi_nerf.kernels.packed.PackedInfo`
            (per-ray first sample and count, made here anyway), which :func:`composite` and
            :func:`~taichi_nerf.kernels.packed.gather_rays` take instead of rebuilding it.

    Returns:
        ``ray_indices [M]`` long, ``t_starts [M]``, ``t_ends [M]`` (dtype of the rays), sorted
        by ray then t (and the ``PackedInfo`` when asked for). Not differentiable: compute
        positions ``rays_o[ray_indices] + t_mid * rays_d[ray_indices]`` in torch so gradients
        reach the rays (and the poses). One host sync (the sample count). Mirrored by
        :func:`taichi_nerf.reference.march_rays` (a dense marcher).

    Raises:
        ValueError: bad inputs, or 2^31 or more samples in one call (march fewer rays).
    """
    _check_march_inputs(grid, rays_o, rays_d, near, far, step_size, max_samples_per_ray)
    _common.prepare(_OP, rays_o=rays_o, rays_d=rays_d, occupancy=grid.occupancy)
    with record_function("taichi_nerf.march_rays"):
        ray_indices, t_starts, t_ends, info = _march(
            grid, _common.for_kernel(rays_o), _common.for_kernel(rays_d), near, far, step_size,
            int(max_samples_per_ray), stratified, generator,
        )  # fmt: skip
    if return_packed_info:
        return ray_indices, t_starts, t_ends, info
    return ray_indices, t_starts, t_ends


def _march(grid, rays_o, rays_d, near, far, step_size, max_samples, stratified, generator):
    dtype, n_rays, device = rays_o.dtype, rays_o.shape[0], rays_o.device
    if n_rays == 0:
        empty_i = torch.zeros(0, dtype=torch.int32, device=device)
        return (
            torch.zeros(0, dtype=torch.long, device=device),
            torch.zeros(0, dtype=dtype, device=device),
            torch.zeros(0, dtype=dtype, device=device),
            PackedInfo(empty_i, empty_i, 0, 0),
        )
    t_begin, t_end = ray_aabb_bounds(
        grid.aabb, rays_o, rays_d, near, far, step_size, stratified, generator
    )
    lo, scale = grid_transform(grid.aabb, grid.resolution, dtype, device)
    occupancy = grid.occupancy.reshape(-1).contiguous().view(torch.uint8)
    blocks = _block_occupancy(grid)
    # Relative rounding bound for the empty-space jumps: generous (64 ulp), as a too-short
    # jump costs one more look and a too-long one would drop a sample.
    rel_tolerance = 64.0 * torch.finfo(dtype).eps
    counts = _common.empty_like_poisoned((n_rays,), dtype=torch.int32, device=device)
    unused_i = _common.placeholder((1,), dtype=torch.int32, device=device)
    unused_l = _common.placeholder((1,), dtype=torch.long, device=device)
    unused_f = _common.placeholder((1,), dtype=dtype, device=device)
    args = (rays_o, rays_d, t_begin, t_end, occupancy, blocks, lo, scale, grid.resolution,
            float(step_size), rel_tolerance, max_samples)  # fmt: skip
    ti_dt = _common.ti_dtype(dtype)
    _march_kernel(*args, unused_i, counts, unused_l, unused_f, unused_f, ti_dt, False)
    # The one host sync: the sample count (to allocate) and the widest ray, read together.
    total, max_count = (int(v) for v in torch.stack(
        (counts.sum(dtype=torch.int64), counts.max().to(torch.int64))).tolist())
    info = packed_info_from_counts(counts, total, max_count)  # raises past 2^31 - 1 samples
    ray_indices = _common.empty_like_poisoned((total,), dtype=torch.long, device=device)
    t_starts = _common.empty_like_poisoned((total,), dtype=dtype, device=device)
    t_ends = _common.empty_like_poisoned((total,), dtype=dtype, device=device)
    if total > 0:
        _march_kernel(*args, info.starts, counts, ray_indices, t_starts, t_ends, ti_dt, True)
    return ray_indices, t_starts, t_ends, info
