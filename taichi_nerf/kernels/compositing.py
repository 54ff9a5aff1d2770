"""Volume compositing of packed ray samples: Taichi kernels, a hand-written backward, ``composite``.

Samples come packed and sorted by ray (as :func:`taichi_nerf.kernels.marching.march_rays` returns
them). Per ray, with ``tau_i = sigma_i * (t_end_i - t_start_i)``:

* transmittance ``T_i = exp(-sum_{j<i} tau_j)`` (exclusive sum; ``T_0 = 1``),
* opacity of a sample ``alpha_i = 1 - exp(-tau_i)``, weight ``w_i = T_i * alpha_i``,
* ``rgb = sum_i w_i c_i + (1 - opacity) * background``, ``opacity = sum_i w_i``,
* ``depth = sum_i w_i (t_start_i + t_end_i) / 2``: *unnormalised*, like nerfacc's
  ``accumulate_along_rays``; divide by ``opacity`` for the expected depth of the hit.

The backward is written by hand (Taichi's ``ti.ad`` gets the sigma gradient wrong for a loop
that carries the transmittance through ``exp``; taichi-dev/taichi#8027, #8356). With the per
sample value ``v_i = g_rgb . c_i + g_opacity + g_depth z_i`` the loss is ``sum_i w_i v_i`` and

    dL/dtau_k = T_{k+1} v_k - sum_{i>k} w_i v_i,     dL/dc_k = w_k g_rgb,

where the suffix sum is the saved total minus a running prefix (one pass per ray, no storage).

The forward saves the per-sample factors ``exp(-tau_i)`` so the backward needs no ``exp``; both
carry ``T_{i+1} = T_i exp(-tau_i)``, equal to ``exp(-exclusive_sum)`` up to rounding. The
background term is added inside the kernels too: no torch op touches per-sample or per-ray
data, which matters on a busy CPU, where each torch parallel region waits for both OpenMP
threads to be scheduled.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.
import taichi as ti
import torch
from torch.autograd.function import once_differentiable
from torch.profiler import record_function

from taichi_nerf.kernels import _common
from taichi_nerf.kernels.packed import PackedInfo

__all__ = ["composite", "packed_info_from_ray_indices"]

_OP = "composite"


@ti.kernel
def _composite_fwd_kernel(
    sigmas: ti.types.ndarray(),
    rgbs: ti.types.ndarray(),
    t_starts: ti.types.ndarray(),
    t_ends: ti.types.ndarray(),
    starts: ti.types.ndarray(),
    counts: ti.types.ndarray(),
    background: ti.types.ndarray(),
    bg_per_ray: ti.i32,
    early_stop_eps: ti.f64,
    out_rgb: ti.types.ndarray(),
    out_opacity: ti.types.ndarray(),
    out_depth: ti.types.ndarray(),
    out_acc_rgb: ti.types.ndarray(),
    out_n_used: ti.types.ndarray(),
    out_decays: ti.types.ndarray(),
    dt: ti.template(),
    save: ti.template(),
):
    eps = ti.cast(early_stop_eps, dt)
    if ti.static(save):
        # The exps first, in a flat loop: inside the per-ray loop each libm call spills the
        # accumulators (all float registers are caller-saved), ~2x the cost (measured).
        for i in range(sigmas.shape[0]):
            out_decays[i] = ti.exp(-sigmas[i] * (t_ends[i] - t_starts[i]))
    for r in range(starts.shape[0]):
        start = starts[r]
        n = counts[r]
        trans = ti.cast(1.0, dt)
        c0 = ti.cast(0.0, dt)
        c1 = ti.cast(0.0, dt)
        c2 = ti.cast(0.0, dt)
        opacity = ti.cast(0.0, dt)
        depth = ti.cast(0.0, dt)
        used = 0
        for j in range(n):
            if trans < eps:
                break
            i = start + j
            decay = ti.cast(0.0, dt)
            if ti.static(save):
                decay = out_decays[i]
            else:
                decay = ti.exp(-sigmas[i] * (t_ends[i] - t_starts[i]))
            w = trans * (1.0 - decay)
            c0 += w * rgbs[i, 0]
            c1 += w * rgbs[i, 1]
            c2 += w * rgbs[i, 2]
            opacity += w
            depth += w * (t_starts[i] + t_ends[i]) * 0.5
            trans *= decay
            used += 1
        b = r * bg_per_ray
        rest = 1.0 - opacity
        out_rgb[r, 0] = c0 + rest * background[b, 0]
        out_rgb[r, 1] = c1 + rest * background[b, 1]
        out_rgb[r, 2] = c2 + rest * background[b, 2]
        out_opacity[r] = opacity
        out_depth[r] = depth
        if ti.static(save):
            out_acc_rgb[r, 0] = c0
            out_acc_rgb[r, 1] = c1
            out_acc_rgb[r, 2] = c2
            out_n_used[r] = used


@ti.kernel
def _composite_bwd_kernel(
    decays: ti.types.ndarray(),
    rgbs: ti.types.ndarray(),
    t_starts: ti.types.ndarray(),
    t_ends: ti.types.ndarray(),
    starts: ti.types.ndarray(),
    counts: ti.types.ndarray(),
    n_used: ti.types.ndarray(),
    acc_rgb: ti.types.ndarray(),
    opacity: ti.types.ndarray(),
    depth: ti.types.ndarray(),
    background: ti.types.ndarray(),
    bg_per_ray: ti.i32,
    v_rgb: ti.types.ndarray(),
    v_opacity: ti.types.ndarray(),
    v_depth: ti.types.ndarray(),
    v_sigmas: ti.types.ndarray(),
    v_rgbs: ti.types.ndarray(),
    v_background: ti.types.ndarray(),
    dt: ti.template(),
    need_sigmas: ti.template(),
    need_rgbs: ti.template(),
    need_background: ti.template(),
):
    for r in range(starts.shape[0]):
        start = starts[r]
        used = n_used[r]
        b = r * bg_per_ray
        g0 = v_rgb[r, 0]
        g1 = v_rgb[r, 1]
        g2 = v_rgb[r, 2]
        g_d = v_depth[r]
        # rgb = acc + (1 - opacity) background: opacity also feeds rgb.
        g_op = v_opacity[r] - (
            g0 * background[b, 0] + g1 * background[b, 1] + g2 * background[b, 2]
        )
        if ti.static(need_background):
            rest = 1.0 - opacity[r]
            v_background[r, 0] = g0 * rest
            v_background[r, 1] = g1 * rest
            v_background[r, 2] = g2 * rest
        # Sum of w_i v_i over the ray, from the saved outputs; the suffix is total - prefix.
        total = g0 * acc_rgb[r, 0] + g1 * acc_rgb[r, 1] + g2 * acc_rgb[r, 2]
        total += g_op * opacity[r] + g_d * depth[r]
        prefix = ti.cast(0.0, dt)
        trans = ti.cast(1.0, dt)
        for j in range(used):
            i = start + j
            delta = t_ends[i] - t_starts[i]
            decay = decays[i]
            w = trans * (1.0 - decay)
            if ti.static(need_rgbs):
                v_rgbs[i, 0] = w * g0
                v_rgbs[i, 1] = w * g1
                v_rgbs[i, 2] = w * g2
            if ti.static(need_sigmas):
                value = (
                    g0 * rgbs[i, 0]
                    + g1 * rgbs[i, 1]
                    + g2 * rgbs[i, 2]
                    + g_op
                    + g_d * (t_starts[i] + t_ends[i]) * 0.5
                )
                prefix += w * value
                v_sigmas[i] = (trans * decay * value - (total - prefix)) * delta
            trans *= decay
        # Past early termination a sample contributes nothing, so neither does its input.
        for j in range(used, counts[r]):
            i = start + j
            if ti.static(need_rgbs):
                v_rgbs[i, 0] = ti.cast(0.0, dt)
                v_rgbs[i, 1] = ti.cast(0.0, dt)
                v_rgbs[i, 2] = ti.cast(0.0, dt)
            if ti.static(need_sigmas):
                v_sigmas[i] = ti.cast(0.0, dt)


class _CompositeFunction(torch.autograd.Function):
    """Packed compositing; gradients to sigmas, rgbs and background ``[1|R, 3]``."""

    @staticmethod
    def forward(ctx, sigmas, rgbs, background, t_starts, t_ends, starts, counts, early_stop_eps):
        with record_function("taichi_nerf.composite.forward"):
            return _forward(ctx, sigmas, rgbs, background, t_starts, t_ends, starts, counts,
                            early_stop_eps)

    @staticmethod
    @once_differentiable
    def backward(ctx, v_rgb, v_opacity, v_depth):
        with record_function("taichi_nerf.composite.backward"):
            return _backward(ctx, v_rgb, v_opacity, v_depth)


def _forward(ctx, sigmas, rgbs, background, t_starts, t_ends, starts, counts, early_stop_eps):
    # Detached views: a tensor that requires grad makes Taichi compile an autodiff variant.
    sigmas, rgbs = _common.for_kernel(sigmas), _common.for_kernel(rgbs)
    background = _common.for_kernel(background)
    n_rays, n_samples = starts.shape[0], sigmas.shape[0]
    dtype, device = sigmas.dtype, sigmas.device
    new = lambda *shape, d=dtype: _common.empty_like_poisoned(shape, dtype=d, device=device)
    out_rgb, out_opacity, out_depth = new(n_rays, 3), new(n_rays), new(n_rays)
    save = any(ctx.needs_input_grad[:3])
    # For the backward: the factors exp(-sigma delta) (so it needs no exp), the colour
    # before the background, and where early termination stopped each ray.
    decays = new(n_samples if save else 1)
    acc_rgb = new(n_rays if save else 1, 3)
    n_used = new(n_rays if save else 1, d=torch.int32)
    bg_per_ray = int(background.shape[0] > 1)
    if n_rays > 0:
        per_sample = (sigmas, rgbs, t_starts, t_ends, decays)
        if n_samples == 0:  # rays without samples: no zero-size arrays into Taichi
            per_sample = (new(1), new(1, 3), new(1), new(1), new(1))
        s, c, t0, t1, dec = per_sample
        _composite_fwd_kernel(
            s, c, t0, t1, starts, counts, background, bg_per_ray, float(early_stop_eps),
            out_rgb, out_opacity, out_depth, acc_rgb, n_used, dec, _common.ti_dtype(dtype),
            save and n_samples > 0,
        )  # fmt: skip
    if save:
        ctx.bg_per_ray = bg_per_ray
        ctx.save_for_backward(
            decays, rgbs if ctx.needs_input_grad[0] else None, t_starts, t_ends, starts,
            counts, n_used, acc_rgb, out_opacity, out_depth, background,
        )  # fmt: skip
    return out_rgb, out_opacity, out_depth


def _backward(ctx, v_rgb, v_opacity, v_depth):
    # Saved outputs come back attached to the graph; Taichi must see plain tensors.
    saved = [None if t is None else t.detach() for t in ctx.saved_tensors]
    decays, rgbs, t_starts, t_ends, starts, counts, n_used = saved[:7]
    acc_rgb, opacity, depth, background = saved[7:]
    need_sigmas, need_rgbs, need_bg = (bool(x) for x in ctx.needs_input_grad[:3])
    n_rays, n_samples = starts.shape[0], t_starts.shape[0]
    dtype, device = t_starts.dtype, t_starts.device
    new = lambda *shape: _common.empty_like_poisoned(shape, dtype=dtype, device=device)
    v_sigmas = new(n_samples) if need_sigmas else None
    v_rgbs = new(n_samples, 3) if need_rgbs else None
    v_bg_rays = new(n_rays, 3) if need_bg else None
    if n_rays > 0 and n_samples > 0:
        unused = _common.placeholder((1, 3), dtype=dtype, device=device)  # never written
        unused_1 = _common.placeholder((1,), dtype=dtype, device=device)
        _composite_bwd_kernel(
            decays, unused if rgbs is None else rgbs, t_starts, t_ends, starts, counts,
            n_used, acc_rgb, opacity, depth, background, ctx.bg_per_ray,
            _common.for_kernel(v_rgb), _common.for_kernel(v_opacity),
            _common.for_kernel(v_depth),
            v_sigmas if need_sigmas else unused_1, v_rgbs if need_rgbs else unused,
            v_bg_rays if need_bg else unused, _common.ti_dtype(dtype),
            need_sigmas, need_rgbs, need_bg,
        )  # fmt: skip
    elif need_bg:  # no samples: every ray shows its background fully
        v_bg_rays = (v_rgb * (1.0 - opacity)[:, None]).contiguous()
    v_background = None
    if need_bg:
        v_background = v_bg_rays if ctx.bg_per_ray else v_bg_rays.sum(0, keepdim=True)
    # t_starts, t_ends, starts, counts, early_stop_eps: not differentiable
    return v_sigmas, v_rgbs, v_background, None, None, None, None, None


@ti.kernel
def _packed_info_kernel(ray_indices: ti.types.ndarray(), starts: ti.types.ndarray(),
                        counts: ti.types.ndarray(), bad: ti.types.ndarray()):  # fmt: skip
    # starts/counts/bad arrive zeroed; the first and last sample of each ray write its segment.
    n = ray_indices.shape[0]
    n_rays = starts.shape[0]
    for i in range(n):
        r = ray_indices[i]
        if r < 0 or r >= n_rays or (i > 0 and ray_indices[i - 1] > r):
            bad[0] = 1
        else:
            if i == 0 or ray_indices[i - 1] != r:
                starts[r] = i
            if i == n - 1 or ray_indices[i + 1] != r:
                counts[r] = i + 1
    for r in range(n_rays):
        if counts[r] > 0:
            counts[r] -= starts[r]


def packed_info_from_ray_indices(
    ray_indices: torch.Tensor, n_rays: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-ray segments ``(starts [R], counts [R])`` int32 of sorted packed ``ray_indices [M]``.

    Rays without samples get ``(0, 0)``. Raises ``ValueError`` unless the indices are sorted
    and lie in ``[0, n_rays)``.
    """
    if ray_indices.shape[0] >= 2**31:
        raise ValueError(f"{_OP}: at most 2^31 - 1 samples per call, got {ray_indices.shape[0]}")
    _common.prepare(_OP, ray_indices=ray_indices)
    device = ray_indices.device
    starts = torch.zeros(n_rays, dtype=torch.int32, device=device)
    counts = torch.zeros(n_rays, dtype=torch.int32, device=device)
    if ray_indices.shape[0] > 0:
        bad = torch.zeros(1, dtype=torch.int32, device=device)
        _packed_info_kernel(_common.for_kernel(ray_indices), starts, counts, bad)
        if bool(bad.item()):
            raise ValueError(
                f"{_OP}: ray_indices must be sorted (samples packed per ray, as march_rays "
                f"returns them) and lie in [0, n_rays={n_rays})"
            )
    return starts, counts


def _check_inputs(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, background, early_stop_eps):
    _common.check_tensor("sigmas", sigmas, op=_OP, shape=(None,))
    m, dtype = sigmas.shape[0], sigmas.dtype
    _common.check_tensor("rgbs", rgbs, op=_OP, shape=(m, 3), dtypes=(dtype,))
    _common.check_tensor("t_starts", t_starts, op=_OP, shape=(m,), dtypes=(dtype,))
    _common.check_tensor("t_ends", t_ends, op=_OP, shape=(m,), dtypes=(dtype,))
    _common.check_tensor(
        "ray_indices", ray_indices, op=_OP, shape=(m,), dtypes=(torch.int64, torch.int32)
    )
    tensors = dict(sigmas=sigmas, rgbs=rgbs, t_starts=t_starts, t_ends=t_ends)
    tensors["ray_indices"] = ray_indices
    if isinstance(n_rays, bool) or int(n_rays) != n_rays or n_rays < 0:
        raise ValueError(f"{_OP}: n_rays must be a non-negative int, got {n_rays!r}")
    n_rays = int(n_rays)
    if not 0.0 <= float(early_stop_eps) <= 1.0:
        raise ValueError(f"{_OP}: early_stop_eps must be in [0, 1], got {early_stop_eps}")
    if background is not None:
        _common.check_tensor("background", background, op=_OP, dtypes=None)
        if not background.is_floating_point() or tuple(background.shape) not in ((3,), (n_rays, 3)):
            raise ValueError(
                f"{_OP}: background must be a float tensor of shape [3] or [{n_rays}, 3], got "
                f"{background.dtype} {list(background.shape)}"
            )
        tensors["background"] = background
    _common.check_same_device(_OP, **tensors)


def _check_packed_info(info, n_rays: int, sigmas: torch.Tensor):
    """Shapes, dtypes and device of a given PackedInfo (host-side checks only, no sync)."""
    if not isinstance(info, PackedInfo):
        raise ValueError(f"{_OP}: packed_info must be a PackedInfo, got {type(info).__name__}")
    for name in ("starts", "counts"):
        t = getattr(info, name)
        _common.check_tensor(f"packed_info.{name}", t, op=_OP, shape=(n_rays,),
                             dtypes=(torch.int32,))  # fmt: skip
        _common.check_same_device(_OP, sigmas=sigmas, **{f"packed_info.{name}": t})
    if info.n_samples != sigmas.shape[0]:
        raise ValueError(
            f"{_OP}: packed_info describes {info.n_samples} samples but sigmas has "
            f"{sigmas.shape[0]}"
        )
    return info.starts, info.counts


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
    """Alpha-composite packed samples along their rays (the maths is in the module docstring).

    Args:
        sigmas: ``[M]`` densities (>= 0) per sample.
        rgbs: ``[M, 3]`` colours per sample.
        t_starts: ``[M]`` interval starts along the ray (units of ``rays_d``).
        t_ends: ``[M]`` interval ends.
        ray_indices: ``[M]`` long, the ray of each sample, sorted (samples packed per ray and in
            increasing t within a ray), as :func:`march_rays` returns them.
        n_rays: ``R``, the number of rays (rays without samples get the background).
        background: ``[3]`` or ``[R, 3]`` colour behind the scene, or ``None`` (black).
        early_stop_eps: a ray stops at its first sample whose transmittance ``T_i`` is below
            this; that sample and all after it contribute nothing (``0`` never stops).
        packed_info: the :class:`~taichi_nerf.kernels.packed.PackedInfo` of ``ray_indices``
            (``march_rays(..., return_packed_info=True)`` makes it). Given, it is trusted: no
            rebuild, no validation, no host sync. ``None``: built and validated here (one sync).

    Returns:
        ``rgb [R, 3]``, ``opacity [R]`` (sum of the weights) and ``depth [R]`` (unnormalised,
        ``sum_i w_i (t_start_i + t_end_i) / 2``; divide by ``opacity`` for the expected depth).

    Differentiable in ``sigmas``, ``rgbs`` and ``background``; *not* in the t's or indices
    (they come from the no-grad marcher; positions, and so poses, get their gradients through
    the field). Mirrored by :func:`taichi_nerf.reference.composite`.

    Example::

        ray_indices, t_starts, t_ends = march_rays(grid, rays_o, rays_d, 2.0, 6.0, 5e-3)
        t_mid = ((t_starts + t_ends) / 2)[:, None]
        sigmas, rgbs = field(rays_o[ray_indices] + t_mid * rays_d[ray_indices])
        rgb, opacity, depth = composite(sigmas, rgbs, t_starts, t_ends, ray_indices, len(rays_o))
    """
    _check_inputs(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, background, early_stop_eps)
    _common.prepare(_OP, sigmas=sigmas)
    n_rays = int(n_rays)
    _common.check_index_size(_OP, rgbs=rgbs.shape[0] * 3)
    if packed_info is None:
        starts, counts = packed_info_from_ray_indices(ray_indices, n_rays)
    else:
        starts, counts = _check_packed_info(packed_info, n_rays, sigmas)
    if background is None:
        bg = torch.zeros(1, 3, dtype=sigmas.dtype, device=sigmas.device)
    else:  # differentiable cast and view; the kernels add the background themselves
        bg = background.to(sigmas.dtype).reshape(-1, 3)
    rgb, opacity, depth = _CompositeFunction.apply(
        sigmas, rgbs, bg, _common.for_kernel(t_starts), _common.for_kernel(t_ends), starts,
        counts, float(early_stop_eps),
    )  # fmt: skip
    return rgb, opacity, depth
