"""Multiresolution hash-grid encoding (Instant-NGP) as Taichi kernels wired into torch autograd.

Public: :func:`hash_encode` and the :class:`HashGrid` module (:class:`HashGridSpec` and
:data:`HASH_PRIMES` are re-exported from :mod:`taichi_nerf.kernels.specs`).

The level layout is defined once in :mod:`taichi_nerf.kernels.specs` (shared with the twin).

A point ``x`` in ``[0, 1]^3`` (clamped first) lies at ``p = x * res_l`` in level ``l``; its cell is
``c = min(floor(p), res_l - 1)`` and the feature is the trilinear blend of the cell's 8 corners
with weights from ``p - c``.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.
import os

import taichi as ti
import torch
from torch import nn
from torch.profiler import record_function

from taichi_nerf.kernels import _common
from taichi_nerf.kernels.specs import HASH_PRIMES, HashGridSpec
from taichi_nerf.runtime import current_arch

__all__ = ["HASH_PRIMES", "HashGridSpec", "hash_encode", "HashGrid"]

_OP = "hash_encode"

# Level metadata as an int32 tensor [L, 4] = (resolution, offset, hash mask or -1 when dense,
# segment rows),
# cached per (spec, device) so a call on CUDA does not copy it every time.
_META_CACHE: dict[tuple[HashGridSpec, str], torch.Tensor] = {}


def _level_meta(spec: HashGridSpec, device: torch.device) -> torch.Tensor:
    key = (spec, str(device))
    meta = _META_CACHE.get(key)
    if meta is None:
        mask = 2**spec.log2_table_size - 1
        rows = [[res, off, -1 if dense else mask, size] for res, off, size, dense in spec.levels()]
        meta = torch.tensor(rows, dtype=torch.int32, device=device)
        _META_CACHE[key] = meta
    return meta


# ----------------------------------------------------------------------------------------------
# Taichi kernels. Work items are (level, point) pairs, level-major so that the items running at
# one time read one level's table segment (4 MiB at T = 2^19, F = 2: it stays in cache).
#
# level_tasks=True (CPU backend): a parallel task walks all points of a level serially (the
# backward groups a few levels per task). No two threads then touch the same table rows, so the
# backward needs no atomics (a float atomic add is a CAS loop on x86, several times the cost of
# a plain add), and there is no per-item index division. Up to 16 cores are kept busy.
# level_tasks=False (GPU): one thread per (level, point) and atomic adds, as in instant-ngp.

_CORNER_BITS = tuple(((c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1) for c in range(8))


@ti.func
def _locate(x: ti.template(), i, res, offset, mask, dt: ti.template()):
    """Rows of the 8 corners of point i's cell in one level, and its position in the cell."""
    scale = ti.cast(res, dt)
    cell = ti.Vector([0, 0, 0], dt=ti.i32)
    frac = ti.Vector([0.0, 0.0, 0.0], dt=dt)
    for d in ti.static(range(3)):
        p = ti.min(ti.max(x[i, d], ti.cast(0.0, dt)), ti.cast(1.0, dt)) * scale
        # p >= 0, so truncation is floor; the outer max keeps a NaN x (any int) in bounds.
        c = ti.max(ti.min(ti.cast(p, ti.i32), res - 1), 0)
        cell[d] = c
        frac[d] = p - ti.cast(c, dt)
    rows = ti.Vector.zero(ti.i32, 8)
    if mask < 0:  # dense level
        stride = res + 1
        base = offset + cell[0] + stride * (cell[1] + stride * cell[2])
        for c in ti.static(range(8)):
            b = ti.static(_CORNER_BITS[c])
            rows[c] = base + b[0] + stride * (b[1] + stride * b[2])
    else:  # hashed level: uint32 products, XOR, low bits
        h0 = ti.Vector([ti.cast(cell[d], ti.u32) * ti.u32(HASH_PRIMES[d]) for d in range(3)])
        h1 = ti.Vector([h0[d] + ti.u32(HASH_PRIMES[d]) for d in range(3)])
        m = ti.cast(mask, ti.u32)
        for c in ti.static(range(8)):
            b = ti.static(_CORNER_BITS[c])
            h = (h1[0] if b[0] else h0[0]) ^ (h1[1] if b[1] else h0[1]) ^ (h1[2] if b[2] else h0[2])
            rows[c] = offset + ti.cast(h & m, ti.i32)
    return rows, frac


@ti.func
def _factors(frac, c: ti.template(), dt: ti.template()):
    """Per-axis trilinear factors of corner c; the weight is their product."""
    b = ti.static(_CORNER_BITS[c])
    one = ti.cast(1.0, dt)
    return ti.Vector([frac[d] if b[d] else one - frac[d] for d in ti.static(range(3))])


@ti.func
def _forward_item(
    x: ti.template(), table: ti.template(), out_levels: ti.template(), level, i, res, offset,
    mask, n_features: ti.template(), dt: ti.template(),
):  # fmt: skip
    rows, frac = _locate(x, i, res, offset, mask, dt)
    acc = ti.Vector.zero(dt, n_features)
    for c in ti.static(range(8)):
        f3 = _factors(frac, c, dt)
        w = f3[0] * f3[1] * f3[2]
        for f in ti.static(range(n_features)):
            acc[f] += w * table[rows[c], f]
    for f in ti.static(range(n_features)):
        out_levels[level, i, f] = acc[f]


@ti.kernel
def _hash_forward_kernel(
    x: ti.types.ndarray(),
    table: ti.types.ndarray(),
    meta: ti.types.ndarray(),
    out_levels: ti.types.ndarray(),
    out: ti.types.ndarray(),
    n_levels: ti.template(),
    n_features: ti.template(),
    level_tasks: ti.template(),
    dt: ti.template(),
):
    """Features into the level-major scratch out_levels [L, N, F], then transposed into out.

    Writing out [N, L*F] directly from level-major work would touch a cache line of out per
    point and level (16x the traffic, evicting the table segment); the transpose is one pass.
    """
    if ti.static(level_tasks):
        for level in range(n_levels):
            res, offset, mask = meta[level, 0], meta[level, 1], meta[level, 2]
            for i in range(x.shape[0]):
                _forward_item(x, table, out_levels, level, i, res, offset, mask, n_features, dt)
    else:
        for level, i in ti.ndrange(n_levels, x.shape[0]):
            res, offset, mask = meta[level, 0], meta[level, 1], meta[level, 2]
            _forward_item(x, table, out_levels, level, i, res, offset, mask, n_features, dt)
    for i in range(x.shape[0]):
        for level in ti.static(range(n_levels)):
            for f in ti.static(range(n_features)):
                out[i, level * n_features + f] = out_levels[level, i, f]


@ti.func
def _backward_item(
    x: ti.template(), table: ti.template(), v_out_levels: ti.template(), v_table: ti.template(),
    v_x: ti.template(), group, level, i, res, offset, mask, n_features: ti.template(),
    need_table: ti.template(), need_x: ti.template(), level_tasks: ti.template(),
    dt: ti.template(),
):  # fmt: skip
    rows, frac = _locate(x, i, res, offset, mask, dt)
    g = ti.Vector.zero(dt, n_features)
    for f in ti.static(range(n_features)):
        g[f] = v_out_levels[level, i, f]
    v_frac = ti.Vector.zero(dt, 3)
    for c in ti.static(range(8)):
        b = ti.static(_CORNER_BITS[c])
        f3 = _factors(frac, c, dt)
        row = rows[c]
        if ti.static(need_table):
            w = f3[0] * f3[1] * f3[2]
            for f in ti.static(range(n_features)):
                if ti.static(level_tasks):
                    # This task owns the level's rows: a plain read-modify-write is safe.
                    v_table[row, f] = v_table[row, f] + w * g[f]
                else:
                    ti.atomic_add(v_table[row, f], w * g[f])
        if ti.static(need_x):
            dot = ti.cast(0.0, dt)
            for f in ti.static(range(n_features)):
                dot += g[f] * table[row, f]
            # d(weight)/d(frac_d) = (+1 or -1) * product of the other two factors.
            v_frac[0] += (dot if b[0] else -dot) * f3[1] * f3[2]
            v_frac[1] += (dot if b[1] else -dot) * f3[0] * f3[2]
            v_frac[2] += (dot if b[2] else -dot) * f3[0] * f3[1]
    if ti.static(need_x):
        scale = ti.cast(res, dt)
        for d in ti.static(range(3)):
            xd = x[i, d]
            # Clamping to [0, 1] passes the gradient only inside (boundaries included).
            if xd >= ti.cast(0.0, dt) and xd <= ti.cast(1.0, dt):
                if ti.static(level_tasks):
                    v_x[group, i, d] = v_x[group, i, d] + v_frac[d] * scale
                else:
                    ti.atomic_add(v_x[i, d], v_frac[d] * scale)


@ti.kernel
def _hash_backward_kernel(
    x: ti.types.ndarray(),
    table: ti.types.ndarray(),
    meta: ti.types.ndarray(),
    v_out: ti.types.ndarray(),
    v_out_levels: ti.types.ndarray(),
    v_table: ti.types.ndarray(),
    v_x_groups: ti.types.ndarray(),
    v_x: ti.types.ndarray(),
    n_levels: ti.template(),
    n_groups: ti.i32,
    n_features: ti.template(),
    need_table: ti.template(),
    need_x: ti.template(),
    level_tasks: ti.template(),
    dt: ti.template(),
):
    """Writes every element of v_table [T, F] and v_x [N, 3] (no zero-filled inputs needed).

    level_tasks (CPU): task ``g`` of ``n_groups`` handles levels g, g + G, g + 2G, ... one after
    the other. It clears each level's gradient segment just before filling it (still in cache)
    and adds its x-gradients into its own slice v_x_groups[g] [N, 3]; a second loop, run after
    the first completes, sums the G slices. No atomics, and G (about 2 per core) slices instead
    of one per level keep the scratch small. Otherwise (GPU): one thread per (level, point),
    atomic adds into v_table and v_x; v_x_groups is unused. A first loop copies v_out [N, L*F]
    into the level-major v_out_levels [L, N, F] (see _hash_forward_kernel).
    """
    for i in range(x.shape[0]):
        for level in ti.static(range(n_levels)):
            for f in ti.static(range(n_features)):
                v_out_levels[level, i, f] = v_out[i, level * n_features + f]
    if ti.static(level_tasks):
        # Two passes, table then x: each then keeps one 4 MiB array (gradient or table) of the
        # level hot instead of both (measured 15% faster on this machine's shared L3).
        if ti.static(need_table):
            for level in range(n_levels):
                res, offset, mask = meta[level, 0], meta[level, 1], meta[level, 2]
                for r in range(meta[level, 3]):
                    for f in ti.static(range(n_features)):
                        v_table[offset + r, f] = ti.cast(0.0, dt)
                for i in range(x.shape[0]):
                    _backward_item(
                        x, table, v_out_levels, v_table, v_x_groups, 0, level, i, res, offset,
                        mask, n_features, True, False, level_tasks, dt,
                    )  # fmt: skip
        if ti.static(need_x):
            for group in range(n_groups):
                for i in range(x.shape[0]):
                    for d in ti.static(range(3)):
                        v_x_groups[group, i, d] = ti.cast(0.0, dt)
                for k in range((n_levels - group + n_groups - 1) // n_groups):
                    level = group + k * n_groups
                    res, offset, mask = meta[level, 0], meta[level, 1], meta[level, 2]
                    for i in range(x.shape[0]):
                        _backward_item(
                            x, table, v_out_levels, v_table, v_x_groups, group, level, i, res,
                            offset, mask, n_features, False, True, level_tasks, dt,
                        )  # fmt: skip
        if ti.static(need_x):
            for i in range(x.shape[0]):
                acc = ti.Vector.zero(dt, 3)
                for group in range(n_groups):
                    for d in ti.static(range(3)):
                        acc[d] += v_x_groups[group, i, d]
                for d in ti.static(range(3)):
                    v_x[i, d] = acc[d]
    else:
        if ti.static(need_table):
            for r, f in ti.ndrange(v_table.shape[0], n_features):
                v_table[r, f] = ti.cast(0.0, dt)
        if ti.static(need_x):
            for i, d in ti.ndrange(x.shape[0], 3):
                v_x[i, d] = ti.cast(0.0, dt)
        for level, i in ti.ndrange(n_levels, x.shape[0]):
            res, offset, mask = meta[level, 0], meta[level, 1], meta[level, 2]
            _backward_item(
                x, table, v_out_levels, v_table, v_x, 0, level, i, res, offset, mask,
                n_features, need_table, need_x, level_tasks, dt,
            )  # fmt: skip


def _level_tasks() -> bool:
    return current_arch() == "cpu"


def _cpu_groups(n_levels: int) -> int:
    """Backward tasks on the CPU: about two per core for load balance, at most one per level."""
    return max(1, min(n_levels, 2 * (os.cpu_count() or 1)))


# ----------------------------------------------------------------------------------------------
# autograd


class _HashEncodeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, spec: HashGridSpec):
        with record_function("taichi_nerf.hash_encode.forward"):
            x_k, table_k = _common.for_kernel(x), _common.for_kernel(table)
            out = _common.empty_like_poisoned(
                (x.shape[0], spec.output_dim), dtype=x.dtype, device=x.device
            )
            meta = _level_meta(spec, x.device)
            if x.shape[0] > 0:
                out_levels = _common.empty_like_poisoned(
                    (spec.n_levels, x.shape[0], spec.n_features), dtype=x.dtype, device=x.device
                )
                _hash_forward_kernel(
                    x_k, table_k, meta, out_levels, out, spec.n_levels, spec.n_features,
                    _level_tasks(), _common.ti_dtype(x.dtype),
                )  # fmt: skip
        ctx.spec = spec
        need_x = ctx.needs_input_grad[0]
        # x is always needed (weights); the table only for the x-gradient.
        ctx.save_for_backward(x_k, table_k if need_x else None)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, v_out):
        spec: HashGridSpec = ctx.spec
        x, table = ctx.saved_tensors
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_table):
            return None, None, None
        with record_function("taichi_nerf.hash_encode.backward"):
            v_x, v_table = _backward(spec, x, table, ctx.table_shape, v_out, need_x, need_table)
        return v_x, v_table, None  # spec: not a tensor


def _backward(spec, x, table, table_shape, v_out, need_x, need_table):
    dtype, device = x.dtype, x.device
    v_out = _common.for_kernel(v_out)
    # The kernel writes every element of both gradients (see _hash_backward_kernel).
    alloc = _common.empty_like_poisoned
    v_table = alloc(table_shape, dtype=dtype, device=device) if need_table else None
    v_x = alloc(x.shape, dtype=dtype, device=device) if need_x else None
    if x.shape[0] == 0:
        return v_x, v_table.zero_() if need_table else None
    # Arrays a variant never touches get cached placeholders (no allocation per call).
    unused_f = _common.placeholder((1, spec.n_features), dtype=dtype, device=device)
    unused_3 = _common.placeholder((1, 3), dtype=dtype, device=device)
    level_tasks = _level_tasks()
    n_groups = _cpu_groups(spec.n_levels) if level_tasks else 1
    if need_x and level_tasks:
        v_x_groups = alloc((n_groups, x.shape[0], 3), dtype=dtype, device=device)
    else:
        v_x_groups = _common.placeholder((1, 1, 3), dtype=dtype, device=device)
    _hash_backward_kernel(
        x, table if table is not None else unused_f, _level_meta(spec, device), v_out,
        alloc((spec.n_levels, x.shape[0], spec.n_features), dtype=dtype, device=device),
        v_table if v_table is not None else unused_f, v_x_groups,
        v_x if v_x is not None else unused_3, spec.n_levels, n_groups, spec.n_features,
        bool(need_table), bool(need_x), level_tasks, _common.ti_dtype(dtype),
    )  # fmt: skip
    return v_x, v_table


def hash_encode(x: torch.Tensor, table: torch.Tensor, spec: HashGridSpec) -> torch.Tensor:
    """Encode points with a multiresolution hash grid (Instant-NGP), trilinearly interpolated.

    Args:
        x: ``[N, 3]`` positions in the unit cube (normalise world positions by the scene box
            first). Values outside ``[0, 1]`` are clamped; the clamped coordinates then get zero
            gradient. (A NaN coordinate is read as 0 by the kernels; the twin propagates it.)
        table: ``[spec.table_size, spec.n_features]`` feature table, same dtype (float32 or
            float64) and device as ``x``. Level ``l`` uses rows
            ``spec.level_offsets()[l]:spec.level_offsets()[l + 1]``.
        spec: the grid layout (levels, features, table size, resolutions).

    Returns:
        ``[N, spec.n_levels * spec.n_features]`` features, level-major (level 0's F features
        first). Differentiable in ``table`` and in ``x`` (the derivative of the trilinear
        weights; piecewise smooth, continuous across cells).

    Example:
        >>> spec = HashGridSpec(n_levels=4, log2_table_size=12, finest_resolution=128)
        >>> table = torch.zeros(spec.table_size, spec.n_features)
        >>> hash_encode(torch.rand(5, 3), table, spec).shape
        torch.Size([5, 8])
    """
    if not isinstance(spec, HashGridSpec):
        raise ValueError(f"{_OP}: spec must be a HashGridSpec, got {type(spec).__name__}")
    _common.check_tensor("x", x, op=_OP, shape=(None, 3))
    _common.check_tensor("table", table, op=_OP, shape=(spec.table_size, spec.n_features))
    if table.dtype != x.dtype:
        raise ValueError(
            f"{_OP}: table is {table.dtype} but x is {x.dtype}; cast one so both match"
        )
    _common.prepare(_OP, x=x, table=table)
    _common.check_index_size(
        _OP, table=spec.table_size * spec.n_features, output=x.shape[0] * spec.output_dim
    )
    return _HashEncodeFunction.apply(x, table, spec)


class HashGrid(nn.Module):
    """A hash-grid encoder owning its feature table.

    Args:
        spec: grid layout; defaults to Instant-NGP's (16 levels, F=2, T=2^19, 16..2048).
        init_scale: the table starts ``U(-init_scale, init_scale)`` (Instant-NGP: 1e-4).
        dtype: table dtype (inputs must match it).

    ``forward(x [N, 3] in [0, 1]) -> [N, output_dim]``; gradients reach ``table`` and ``x``.
    """

    def __init__(
        self,
        spec: HashGridSpec | None = None,
        *,
        init_scale: float = 1e-4,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.spec = spec if spec is not None else HashGridSpec()
        table = torch.empty(self.spec.table_size, self.spec.n_features, dtype=dtype)
        self.table = nn.Parameter(table.uniform_(-init_scale, init_scale))

    @property
    def output_dim(self) -> int:
        """Channels of the encoding, ``n_levels * n_features``."""
        return self.spec.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hash_encode(x, self.table, self.spec)

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"levels={s.n_levels}, features={s.n_features}, log2_table_size={s.log2_table_size}, "
            f"resolution={s.base_resolution}..{s.finest_resolution}, rows={s.table_size}"
        )
