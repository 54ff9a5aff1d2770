"""Packed ray samples in pure torch: per-ray segments, the one transmittance primitive, gathers.

Samples are *packed*: one flat array ``[M]`` sorted by ray (then by t), as
:func:`~taichi_nerf.kernels.march_rays` returns them. Names used throughout:

* ``sigmas`` -- density sigma of a sample (per unit length, >= 0);
* ``optical_depths`` -- ``tau = sigma * (t_end - t_start)``, the dimensionless optical depth of
  one sample's interval (its alpha is ``1 - exp(-tau)``);
* ``transmittance`` -- ``T_i = exp(-sum_{j < i on the ray} tau_j)`` (``T = 1`` at a ray's first
  sample).

:class:`PackedInfo` is nerfacc's ``packed_info`` (per-ray first sample and count) plus two host
integers, so that the code after marching (pruning, compositing) needs no host sync to size or
validate anything. Nothing here imports Taichi: the twins in :mod:`taichi_nerf.reference` use it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.profiler import record_function

__all__ = [
    "PackedInfo",
    "packed_info_from_counts",
    "packed_info_from_sorted",
    "select_samples",
    "exclusive_transmittance",
    "gather_rays",
    "ray_points",
]

#: Packed arrays are indexed with int32 inside the kernels: every count stays below this.
MAX_INDEX = 2**31 - 1


class PackedInfo(NamedTuple):
    """Per-ray segments of a packed, ray-sorted sample array (nerfacc's ``packed_info``).

    Attributes:
        starts: ``[R]`` int32, index of each ray's first sample (rays without samples: any value
            in ``[0, M]``).
        counts: ``[R]`` int32, samples of each ray; ``starts[r] + counts[r] <= M``.
        n_samples: ``M`` (a host int).
        max_count: an upper bound (host int) on ``counts``: the width of a padded ``[R, W]``
            layout. It may exceed the true maximum (after pruning it is the marcher's).
    """

    starts: torch.Tensor
    counts: torch.Tensor
    n_samples: int
    max_count: int


def _check_size(n_samples: int, what: str = "samples") -> None:
    if n_samples > MAX_INDEX:
        raise ValueError(
            f"taichi_nerf: {n_samples} {what} in one call exceed 2^31 - 1 (int32 indices); "
            "render fewer rays per call (a smaller chunk)"
        )


def packed_info_from_counts(counts: torch.Tensor, n_samples: int, max_count: int) -> PackedInfo:
    """:class:`PackedInfo` of per-ray ``counts [R]`` whose sum the caller knows (``n_samples``)."""
    _check_size(n_samples)
    counts = counts.to(torch.int32)
    starts = (torch.cumsum(counts, 0, dtype=torch.int64) - counts).to(torch.int32)
    return PackedInfo(starts, counts, int(n_samples), int(max_count))


def packed_info_from_sorted(ray_indices: torch.Tensor, n_rays: int) -> PackedInfo:
    """:class:`PackedInfo` of sorted ``ray_indices [M]`` in plain torch (one host sync).

    Does not check that the indices are sorted; the compositing op does (see
    :func:`taichi_nerf.kernels.compositing.packed_info_from_ray_indices`).
    """
    n_samples = int(ray_indices.shape[0])
    counts = torch.bincount(ray_indices.long(), minlength=n_rays)[:n_rays]
    max_count = int(counts.max()) if n_rays > 0 and n_samples > 0 else 0
    return packed_info_from_counts(counts, n_samples, max_count)


def select_samples(ray_indices: torch.Tensor, packed_info: PackedInfo, keep: torch.Tensor
                   ) -> tuple[torch.Tensor, PackedInfo]:
    """Indices ``[K]`` of the kept samples and the :class:`PackedInfo` of what is left.

    ``keep [M]`` bool; the result stays sorted by ray. One host sync (the count of kept samples);
    ``max_count`` carries over as an upper bound.
    """
    kept = torch.nonzero(keep).reshape(-1)
    counts = torch.zeros_like(packed_info.counts).index_add_(
        0, ray_indices[kept], torch.ones_like(kept, dtype=packed_info.counts.dtype)
    )
    return kept, packed_info_from_counts(counts, int(kept.shape[0]), packed_info.max_count)


def exclusive_transmittance(optical_depths: torch.Tensor, ray_indices: torch.Tensor | None = None,
                            n_rays: int | None = None,
                            packed_info: PackedInfo | None = None) -> torch.Tensor:
    """Transmittance before each sample: ``T_i = exp(-sum_{j<i, same ray} tau_j)``.

    The one transmittance primitive (compositing twin, occlusion pruning, vanilla NeRF). The
    exclusive per-ray sum is a ``cumsum`` along the rows of a ``[R, S]`` layout (packed samples
    are first scattered into a padded one), so each ray is summed on its own and float32 keeps
    full precision: a global ``cumsum`` minus each ray's start value would lose the per-ray sums
    against the running total of all rays (the reason pruning used float64 before).

    Args:
        optical_depths: ``tau = sigma * (t_end - t_start)`` per sample, float32 or float64:
            packed ``[M]`` (give ``ray_indices`` and ``n_rays``), or dense ``[R, S]`` (S samples
            per ray in order; leave ``ray_indices`` out).
        ray_indices: ``[M]`` ray of each packed sample, sorted.
        n_rays: ``R`` (packed layout).
        packed_info: from the marcher; computed here (one host sync) when ``None``.

    Returns:
        Transmittance of the shape and dtype of ``optical_depths``, differentiable in it.

    Example::

        trans = exclusive_transmittance(sigmas * (t_ends - t_starts), ray_indices, n_rays)
        weights = trans * (1 - torch.exp(-sigmas * (t_ends - t_starts)))
    """
    if ray_indices is None:
        if optical_depths.dim() != 2:
            raise ValueError("exclusive_transmittance: without ray_indices, optical_depths must "
                             f"be dense [R, S], got shape {list(optical_depths.shape)}")
        zero = optical_depths.new_zeros(optical_depths.shape[0], 1)
        padded = torch.cat((zero, optical_depths[:, :-1]), dim=1)
        return torch.exp(-torch.cumsum(padded, dim=1))
    if n_rays is None:
        raise ValueError("exclusive_transmittance: packed optical_depths need n_rays")
    if packed_info is None:
        packed_info = packed_info_from_sorted(ray_indices, n_rays)
    m = optical_depths.shape[0]
    width = packed_info.max_count + 1
    ray = ray_indices.long()
    col = torch.arange(m, device=ray.device) - packed_info.starts.long()[ray]
    flat = ray * width + col  # sample i sits in column col + 1 of its ray's row
    # Flat indices (not 2-D advanced indexing, 2x slower on the CPU), all distinct: the scatter
    # and the gather's backward never add two values into one place, so they are deterministic.
    padded = optical_depths.new_zeros(n_rays * width).index_copy(0, flat + 1, optical_depths)
    exclusive = torch.cumsum(padded.view(n_rays, width), dim=1).view(-1)[flat]
    return torch.exp(-exclusive)


class _GatherRaysFunction(torch.autograd.Function):
    """``values[ray_indices]`` whose backward sums each ray's samples in a fixed order."""

    @staticmethod
    def forward(ctx, values, ray_indices, counts):
        with record_function("taichi_nerf.gather_rays.forward"):
            ctx.save_for_backward(ray_indices, counts)
            ctx.n_rays = values.shape[0]
            return values[ray_indices]  # a plain gather: only the backward needed replacing

    @staticmethod
    def backward(ctx, v_out):
        ray_indices, counts = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        with record_function("taichi_nerf.gather_rays.backward"):
            if counts is not None:  # sorted segments: one ordered sum per ray
                v_values = torch.segment_reduce(
                    v_out.contiguous(), "sum", lengths=counts, axis=0, unsafe=True
                )
            else:  # index_add_ on the CPU adds serially in index order
                v_values = v_out.new_zeros((ctx.n_rays, *v_out.shape[1:]))
                v_values.index_add_(0, ray_indices, v_out)
        return v_values, None, None  # ray_indices, counts: integer, no gradient


def gather_rays(values: torch.Tensor, ray_indices: torch.Tensor,
                packed_info: PackedInfo | None = None) -> torch.Tensor:
    """Per-sample copies ``[M, ...]`` of per-ray ``values [R, ...]`` (``values[ray_indices]``).

    Differentiable in ``values`` with a **deterministic** backward on the CPU: torch's own
    ``values[idx]`` backward adds float32 gradients with parallel atomics once there are more
    than 32768 elements, in an order that changes from run to run (it made joint training
    unrepeatable). With ``packed_info`` (sorted samples) the backward is one ordered sum per ray
    (``torch.segment_reduce``); without it, ``index_add_`` (serial on the CPU).

    Args:
        values: ``[R, ...]`` per-ray values (ray origins, directions).
        ray_indices: ``[M]`` long, ray of each sample (sorted when ``packed_info`` is given).
        packed_info: segments of ``ray_indices`` (:class:`PackedInfo`) or ``None``.
    """
    counts = None
    if packed_info is not None:
        if packed_info.counts.shape[0] != values.shape[0]:
            raise ValueError(
                f"gather_rays: packed_info has {packed_info.counts.shape[0]} rays but values "
                f"has {values.shape[0]}"
            )
        counts = packed_info.counts
    return _GatherRaysFunction.apply(values, ray_indices, counts)


class _RayPointsFunction(torch.autograd.Function):
    """``o[ray] + t * d[ray]`` with one gather forward and one ordered per-ray sum backward."""

    @staticmethod
    def forward(ctx, rays_o, rays_d, t, ray_indices, counts):
        with record_function("taichi_nerf.ray_points.forward"):
            ctx.save_for_backward(t, ray_indices, counts)
            ctx.n_rays = rays_o.shape[0]
            per_sample = torch.cat([rays_o, rays_d], dim=-1)[ray_indices]  # [M, 6]
            return per_sample[:, :3] + t[:, None] * per_sample[:, 3:]

    @staticmethod
    def backward(ctx, v_points):
        t, ray_indices, counts = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None, None, None
        with record_function("taichi_nerf.ray_points.backward"):
            v = torch.cat([v_points, t[:, None] * v_points], dim=-1)  # [M, 6]: d(o), d(d)
            if counts is not None:  # sorted segments: one ordered sum per ray
                v_rays = torch.segment_reduce(v, "sum", lengths=counts, axis=0, unsafe=True)
            else:  # index_add_ on the CPU adds serially in index order
                v_rays = v.new_zeros((ctx.n_rays, 6)).index_add_(0, ray_indices, v)
        v_o = v_rays[:, :3] if ctx.needs_input_grad[0] else None
        v_d = v_rays[:, 3:] if ctx.needs_input_grad[1] else None
        return v_o, v_d, None, None, None  # t: no gradient (the marcher's, not learned)


def ray_points(rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor,
               ray_indices: torch.Tensor, packed_info: PackedInfo | None = None) -> torch.Tensor:
    """Sample positions ``rays_o[ray] + t * rays_d[ray]`` ``[M, 3]`` of packed samples.

    The same values and gradients as ``gather_rays(rays_o) + t[:, None] * gather_rays(rays_d)``,
    bit for bit, in one gather and, backward, one ordered sum per ray for both ray inputs
    (instead of two gathers, two sums and the product's and sum's own backward): fewer
    launches per training step. ``t`` gets no gradient (sample distances come from the marcher).

    Args:
        rays_o, rays_d: ``[R, 3]`` ray origins and directions (same dtype and device).
        t: ``[M]`` distance of each sample along its ray.
        ray_indices: ``[M]`` long, ray of each sample (sorted when ``packed_info`` is given).
        packed_info: segments of ``ray_indices`` (:class:`PackedInfo`) or ``None``.
    """
    if rays_o.shape != rays_d.shape or rays_o.dim() != 2 or rays_o.shape[1] != 3:
        raise ValueError(f"ray_points: rays_o and rays_d must both be [R, 3], got "
                         f"{list(rays_o.shape)} and {list(rays_d.shape)}")
    if t.shape != ray_indices.shape:
        raise ValueError(f"ray_points: t must be [M] like ray_indices {list(ray_indices.shape)}, "
                         f"got {list(t.shape)}")
    counts = None
    if packed_info is not None:
        if packed_info.counts.shape[0] != rays_o.shape[0]:
            raise ValueError(f"ray_points: packed_info has {packed_info.counts.shape[0]} rays "
                             f"but rays_o has {rays_o.shape[0]}")
        counts = packed_info.counts
    return _RayPointsFunction.apply(rays_o, rays_d, t.to(rays_o.dtype), ray_indices, counts)
