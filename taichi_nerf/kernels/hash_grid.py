"""Multiresolution hash-grid encoding (Instant-NGP) as Taichi kernels wired into torch autograd.

Public: :func:`hash_encode` and the :class:`HashGrid` module (:class:`HashGridSpec` and
:data:`HASH_PRIMES` are re-exported from :mod:`taichi_nerf.kernels.specs`).

The level layout is defined once in :mod:`taichi_nerf.kernels.specs` (shared with the twin).

A point ``x`` in ``[0, 1]^3`` (clamped first) lies at ``p = x * res_l`` in level ``l``; its cell is
``c = min(floor(p), res_l - 1)`` and the feature is the trilinear blend of the cell's 8 corners
with weights from ``p - c``.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.
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
# level_tasks=True (CPU backend): a parallel task walks all points of a level serially. No two
# threads then touch the same table rows, so the table gradient needs no atomics (a float atomic
# add is a CAS loop on x86, several times the cost of a plain add) and sums in a fixed order, and
# there is no per-item index division. level_tasks=False (GPU): one thread per (level, point) and
# atomic adds into the table gradient, as in instant-ngp. The x-gradient comes from the
# Jacobian the forward stores: one thread per point, no atomics, a fixed order on both.

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
    x: ti.template(), table: ti.template(), out_levels: ti.template(), jac: ti.template(), level,
    i, res, offset, mask, n_features: ti.template(), need_jac: ti.template(),
    smooth: ti.template(), dt: ti.template(),
):  # fmt: skip
    rows, frac = _locate(x, i, res, offset, mask, dt)
    acc = ti.Vector.zero(dt, n_features)
    values = ti.Matrix.zero(dt, 8, n_features)  # the corners' rows, kept for the Jacobian
    for c in ti.static(range(8)):
        f3 = _factors(frac, c, dt)
        w = f3[0] * f3[1] * f3[2]
        for f in ti.static(range(n_features)):
            value = table[rows[c], f]
            acc[f] += w * value
            if ti.static(need_jac):
                values[c, f] = value
    for f in ti.static(range(n_features)):
        out_levels[level, i, f] = acc[f]
    if ti.static(need_jac):
        _store_jacobian(x, jac, level, i, res, frac, values, n_features, smooth, dt)


@ti.func
def _pi(dt: ti.template()):
    """pi in dt (a float literal would be rounded to Taichi's default f32 before a cast)."""
    return ti.acos(ti.cast(-1.0, dt))


@ti.func
def _smoothstep(t, dt: ti.template()):
    """Heo et al.'s cosine weight S(t) = (1 - cos(pi t)) / 2 (S(0) = 0, S(1) = 1, S(1-t) = 1-S(t))."""
    return (ti.cast(1.0, dt) - ti.cos(_pi(dt) * t)) / ti.cast(2.0, dt)


@ti.func
def _store_jacobian(x: ti.template(), jac: ti.template(), level, i, res, frac, values,
                    n_features: ti.template(), smooth: ti.template(), dt: ti.template()):  # fmt: skip
    """d(feature)/dx of one (level, point): along axis d, the bilinear blend over the other two
    axes of the 4 corner differences v(b_d = 1) - v(b_d = 0), times the level's resolution
    (12 differences and 12 multiply-adds per feature, half the work of differentiating each
    corner's weight).

    smooth: the derivative of the cosine-weighted blend instead (Heo et al., ICML 2023, a
    straight-through gradient: the features stay trilinear): the other axes blend with S(t) and
    the axis's own factor is S'(t) = pi/2 sin(pi t) instead of 1, so the gradient is continuous
    across cell faces (zero on them) and averages to the trilinear one over a cell."""
    scale = ti.cast(res, dt)
    one = ti.cast(1.0, dt)
    w3 = frac
    if ti.static(smooth):
        w3 = ti.Vector([_smoothstep(frac[d], dt) for d in ti.static(range(3))])
    for d in ti.static(range(3)):
        a, b = ti.static((d + 1) % 3, (d + 2) % 3)
        xd = x[i, d]
        # Clamping to [0, 1] passes the gradient only inside (boundaries included).
        inside = xd >= ti.cast(0.0, dt) and xd <= ti.cast(1.0, dt)
        wa = ti.Vector([one - w3[a], w3[a]])
        wb = ti.Vector([one - w3[b], w3[b]])
        own = scale
        if ti.static(smooth):
            own = scale * _pi(dt) / ti.cast(2.0, dt) * ti.sin(_pi(dt) * frac[d])
        for f in ti.static(range(n_features)):
            g = ti.cast(0.0, dt)
            for ba, bb in ti.static(ti.ndrange(2, 2)):
                lo = ti.static((ba << a) | (bb << b))  # corner index: bit k is the axis-k bit
                g += wa[ba] * wb[bb] * (values[lo | (1 << d), f] - values[lo, f])
            jac[level, i, f, d] = g * own if inside else ti.cast(0.0, dt)


@ti.kernel
def _hash_forward_kernel(
    x: ti.types.ndarray(),
    table: ti.types.ndarray(),
    meta: ti.types.ndarray(),
    out_levels: ti.types.ndarray(),
    out: ti.types.ndarray(),
    jac: ti.types.ndarray(),
    n_levels: ti.template(),
    n_features: ti.template(),
    need_jac: ti.template(),
    smooth: ti.template(),
    level_tasks: ti.template(),
    dt: ti.template(),
):
    """Features into the level-major scratch out_levels [L, N, F], then transposed into out.

    Writing out [N, L*F] directly from level-major work would touch a cache line of out per
    point and level (16x the traffic, evicting the table segment); the transpose is one pass.
    With need_jac, also d(feature)/dx into jac [L, N, F, 3], while the corners' table rows are
    in registers: the x-gradient is then one contraction in the backward (_hash_backward_kernel)
    instead of a second pass over the table.
    """
    if ti.static(level_tasks):
        for level in range(n_levels):
            res, offset, mask = meta[level, 0], meta[level, 1], meta[level, 2]
            for i in range(x.shape[0]):
                _forward_item(x, table, out_levels, jac, level, i, res, offset, mask,
                              n_features, need_jac, smooth, dt)  # fmt: skip
    else:
        for level, i in ti.ndrange(n_levels, x.shape[0]):
            res, offset, mask = meta[level, 0], meta[level, 1], meta[level, 2]
            _forward_item(x, table, out_levels, jac, level, i, res, offset, mask, n_features,
                          need_jac, smooth, dt)  # fmt: skip
    for i in range(x.shape[0]):
        for level in ti.static(range(n_levels)):
            for f in ti.static(range(n_features)):
                out[i, level * n_features + f] = out_levels[level, i, f]


@ti.func
def _table_grad_item(
    x: ti.template(), v_out_levels: ti.template(), v_table: ti.template(), level, i, res, offset,
    mask, n_features: ti.template(), level_tasks: ti.template(), dt: ti.template(),
):  # fmt: skip
    rows, frac = _locate(x, i, res, offset, mask, dt)
    for c in ti.static(range(8)):
        f3 = _factors(frac, c, dt)
        w = f3[0] * f3[1] * f3[2]
        for f in ti.static(range(n_features)):
            g = w * v_out_levels[level, i, f]
            if ti.static(level_tasks):
                # This task owns the level's rows: a plain read-modify-write is safe.
                v_table[rows[c], f] = v_table[rows[c], f] + g
            else:
                ti.atomic_add(v_table[rows[c], f], g)


@ti.kernel
def _hash_backward_kernel(
    x: ti.types.ndarray(),
    meta: ti.types.ndarray(),
    v_out: ti.types.ndarray(),
    v_out_levels: ti.types.ndarray(),
    v_table: ti.types.ndarray(),
    jac: ti.types.ndarray(),
    v_x: ti.types.ndarray(),
    n_levels: ti.template(),
    n_features: ti.template(),
    need_table: ti.template(),
    need_x: ti.template(),
    level_tasks: ti.template(),
    dt: ti.template(),
):
    """Both gradients in one launch (on the CPU a Taichi launch costs ~0.13 ms plus ~0.02 ms per
    tensor argument, benchmarks/launch_overhead.py: about the x-gradient's own work at 16k
    points).

    need_table: writes every element of v_table [T, F] (no zero-filled input needed).
    level_tasks (CPU): one task per level clears the level's gradient segment just before
    filling it (still in cache), then adds in point order: no atomics, a fixed summation order.
    Otherwise (GPU): one thread per (level, point), atomic adds. A first loop copies
    v_out [N, L*F] into the level-major v_out_levels [L, N, F] (see _hash_forward_kernel).

    need_x: v_x [N, 3] = sum over levels and features of v_out * jac: one thread per point,
    levels in a fixed order (deterministic on every backend, no atomics).
    """
    if ti.static(need_table):
        for i in range(x.shape[0]):
            for level in ti.static(range(n_levels)):
                for f in ti.static(range(n_features)):
                    v_out_levels[level, i, f] = v_out[i, level * n_features + f]
        if ti.static(level_tasks):
            for level in range(n_levels):
                res, offset, mask = meta[level, 0], meta[level, 1], meta[level, 2]
                for r in range(meta[level, 3]):
                    for f in ti.static(range(n_features)):
                        v_table[offset + r, f] = ti.cast(0.0, dt)
                for i in range(x.shape[0]):
                    _table_grad_item(x, v_out_levels, v_table, level, i, res, offset, mask,
                                     n_features, level_tasks, dt)  # fmt: skip
        else:
            for r, f in ti.ndrange(v_table.shape[0], n_features):
                v_table[r, f] = ti.cast(0.0, dt)
            for level, i in ti.ndrange(n_levels, x.shape[0]):
                res, offset, mask = meta[level, 0], meta[level, 1], meta[level, 2]
                _table_grad_item(x, v_out_levels, v_table, level, i, res, offset, mask,
                                 n_features, level_tasks, dt)  # fmt: skip
    if ti.static(need_x):
        for i in range(v_x.shape[0]):
            acc = ti.Vector.zero(dt, 3)
            for level in ti.static(range(n_levels)):
                for f in ti.static(range(n_features)):
                    g = v_out[i, level * n_features + f]
                    for d in ti.static(range(3)):
                        acc[d] += g * jac[level, i, f, d]
            for d in ti.static(range(3)):
                v_x[i, d] = acc[d]


def _level_tasks() -> bool:
    return current_arch() == "cpu"


# ----------------------------------------------------------------------------------------------
# autograd


class _HashEncodeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, spec: HashGridSpec, x_grad: str):
        need_x = ctx.needs_input_grad[0]
        with record_function("taichi_nerf.hash_encode.forward"):
            x_k, table_k = _common.for_kernel(x), _common.for_kernel(table)
            dtype, device, n = x.dtype, x.device, x.shape[0]
            out = _common.empty_like_poisoned((n, spec.output_dim), dtype=dtype, device=device)
            jac_shape = (spec.n_levels, n, spec.n_features, 3)
            jac = None
            if need_x:
                jac = _common.empty_like_poisoned(jac_shape, dtype=dtype, device=device)
            if n > 0:
                out_levels = _common.empty_like_poisoned(
                    (spec.n_levels, n, spec.n_features), dtype=dtype, device=device
                )
                unused = _common.placeholder((1, 1, spec.n_features, 3), dtype=dtype,
                                             device=device)  # fmt: skip
                _hash_forward_kernel(
                    x_k, table_k, _level_meta(spec, device), out_levels, out,
                    jac if need_x else unused, spec.n_levels, spec.n_features, bool(need_x),
                    x_grad == "smooth", _level_tasks(), _common.ti_dtype(dtype),
                )  # fmt: skip
        ctx.spec = spec
        # x for the table gradient (weights); d(features)/dx for the x-gradient.
        ctx.save_for_backward(x_k, jac)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, v_out):
        spec: HashGridSpec = ctx.spec
        x, jac = ctx.saved_tensors
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_table):
            return None, None, None, None
        with record_function("taichi_nerf.hash_encode.backward"):
            v_x, v_table = _backward(spec, x, jac, ctx.table_shape, v_out, need_x, need_table)
        return v_x, v_table, None, None  # spec, x_grad: not tensors


def _backward(spec, x, jac, table_shape, v_out, need_x, need_table):
    dtype, device, n = x.dtype, x.device, x.shape[0]
    v_out = _common.for_kernel(v_out)
    # The kernels write every element of both gradients.
    alloc = _common.empty_like_poisoned
    v_table = alloc(table_shape, dtype=dtype, device=device) if need_table else None
    v_x = alloc(x.shape, dtype=dtype, device=device) if need_x else None
    if n == 0:
        return v_x, v_table.zero_() if need_table else None
    ti_dt = _common.ti_dtype(dtype)

    def unused(ndim):  # stand-ins (of the right rank) for the arrays a variant never touches
        return _common.placeholder((1,) * ndim, dtype=dtype, device=device)

    v_out_levels = unused(3)
    if need_table:
        v_out_levels = alloc((spec.n_levels, n, spec.n_features), dtype=dtype, device=device)
    _hash_backward_kernel(
        x, _level_meta(spec, device), v_out, v_out_levels,
        v_table if need_table else unused(2), jac if need_x else unused(4),
        v_x if need_x else unused(2), spec.n_levels, spec.n_features, bool(need_table),
        bool(need_x), _level_tasks(), ti_dt,
    )  # fmt: skip
    return v_x, v_table


X_GRADS = ("exact", "smooth")


def hash_encode(x: torch.Tensor, table: torch.Tensor, spec: HashGridSpec, *,
                x_grad: str = "exact") -> torch.Tensor:
    """Encode points with a multiresolution hash grid (Instant-NGP), trilinearly interpolated.

    Args:
        x: ``[N, 3]`` positions in the unit cube (normalise world positions by the scene box
            first). Values outside ``[0, 1]`` are clamped; the clamped coordinates then get zero
            gradient. (A NaN coordinate is read as 0 by the kernels; the twin propagates it.)
        table: ``[spec.table_size, spec.n_features]`` feature table, same dtype (float32 or
            float64) and device as ``x``. Level ``l`` uses rows
            ``spec.level_offsets()[l]:spec.level_offsets()[l + 1]``.
        spec: the grid layout (levels, features, table size, resolutions).
        x_grad: ``"exact"``: the gradient in ``x`` is the derivative of the trilinear features.
            ``"smooth"``: the derivative of the cosine-weighted blend (weights
            ``(1 - cos(pi t)) / 2`` per axis; Heo et al., ICML 2023) is passed instead, a
            straight-through gradient that is continuous across cell faces and averages to the
            exact one over a cell; the features and the table gradient stay trilinear.

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
    if x_grad not in X_GRADS:
        raise ValueError(f"{_OP}: x_grad must be one of {X_GRADS}, got {x_grad!r}")
    _common.check_tensor("x", x, op=_OP, shape=(None, 3))
    _common.check_tensor("table", table, op=_OP, shape=(spec.table_size, spec.n_features))
    if table.dtype != x.dtype:
        raise ValueError(
            f"{_OP}: table is {table.dtype} but x is {x.dtype}; cast one so both match"
        )
    _common.prepare(_OP, x=x, table=table)
    _common.check_index_size(
        _OP, table=spec.table_size * spec.n_features, output=x.shape[0] * spec.output_dim,
        jacobian=x.shape[0] * spec.output_dim * 3 if x.requires_grad else 0,
    )
    return _HashEncodeFunction.apply(x, table, spec, x_grad)


class HashGrid(nn.Module):
    """A hash-grid encoder owning its feature table.

    Args:
        spec: grid layout; defaults to Instant-NGP's (16 levels, F=2, T=2^19, 16..2048).
        init_scale: the table starts ``U(-init_scale, init_scale)`` (Instant-NGP: 1e-4).
        dtype: table dtype (inputs must match it).
        x_grad: the gradient in the positions, ``"exact"`` or ``"smooth"`` (:func:`hash_encode`).

    ``forward(x [N, 3] in [0, 1]) -> [N, output_dim]``; gradients reach ``table`` and ``x``.
    """

    def __init__(
        self,
        spec: HashGridSpec | None = None,
        *,
        init_scale: float = 1e-4,
        dtype: torch.dtype = torch.float32,
        x_grad: str = "exact",
    ):
        super().__init__()
        if x_grad not in X_GRADS:
            raise ValueError(f"HashGrid: x_grad must be one of {X_GRADS}, got {x_grad!r}")
        self.spec = spec if spec is not None else HashGridSpec()
        self.x_grad = x_grad
        table = torch.empty(self.spec.table_size, self.spec.n_features, dtype=dtype)
        self.table = nn.Parameter(table.uniform_(-init_scale, init_scale))

    @property
    def output_dim(self) -> int:
        """Channels of the encoding, ``n_levels * n_features``."""
        return self.spec.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hash_encode(x, self.table, self.spec, x_grad=self.x_grad)

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"levels={s.n_levels}, features={s.n_features}, log2_table_size={s.log2_table_size}, "
            f"resolution={s.base_resolution}..{s.finest_resolution}, rows={s.table_size}, "
            f"x_grad={self.x_grad}"
        )
