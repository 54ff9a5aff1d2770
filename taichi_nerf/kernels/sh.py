"""Real spherical-harmonics encoding of view directions as Taichi kernels wired into autograd.

Public: :func:`sh_encode`. The polynomials, constants, ordering and signs are tiny-cuda-nn's
``SphericalHarmonics`` encoding with ``degree=4`` (bands l = 0..3, 16 outputs), which is what
instant-ngp and its ports feed the colour MLP; the constants live in
:data:`taichi_nerf.kernels.specs.SH_C` (shared with the twin). tcnn maps its ``[0, 1]`` input
to ``[-1, 1]`` first; here the input is the direction itself, so ``sh_encode(d) == tcnn_sh((d + 1) / 2)``.
"""

# No `from __future__ import annotations`: Taichi reads kernel annotations as live objects.
import taichi as ti
import torch
from torch.profiler import record_function

from taichi_nerf.kernels import _common
from taichi_nerf.kernels.specs import SH_C, SH_OUTPUT_DIM

__all__ = ["SH_C", "SH_OUTPUT_DIM", "sh_encode"]

_OP = "sh_encode"

# Python floats are compile-time constants inside the kernels. Wrap each as `dt(C)`: a bare
# `C * y` or `ti.cast(C, ti.f64)` rounds C to f32 first (measured: 1.5e-8 error in f64).
_C0, _C1, _C2 = SH_C["C0"], SH_C["C1"], SH_C["C2"]
_C2_ZZ, _C2_0, _C2_XY = SH_C["C2_ZZ"], SH_C["C2_0"], SH_C["C2_XY"]
_C3_0, _C3_1, _C3_2, _C3_3, _C3_4 = (SH_C[k] for k in ("C3_0", "C3_1", "C3_2", "C3_3", "C3_4"))


@ti.kernel
def _sh_forward_kernel(d: ti.types.ndarray(), out: ti.types.ndarray(), dt: ti.template()):
    for i in range(d.shape[0]):
        x, y, z = d[i, 0], d[i, 1], d[i, 2]
        xx, yy, zz = x * x, y * y, z * z
        out[i, 0] = dt(_C0)
        out[i, 1] = dt(-_C1) * y
        out[i, 2] = dt(_C1) * z
        out[i, 3] = dt(-_C1) * x
        out[i, 4] = dt(_C2) * x * y
        out[i, 5] = dt(-_C2) * y * z
        out[i, 6] = dt(_C2_ZZ) * zz - dt(_C2_0)
        out[i, 7] = dt(-_C2) * x * z
        out[i, 8] = dt(_C2_XY) * (xx - yy)
        out[i, 9] = dt(_C3_0) * y * (yy - 3.0 * xx)
        out[i, 10] = dt(_C3_1) * x * y * z
        out[i, 11] = dt(_C3_2) * y * (1.0 - 5.0 * zz)
        out[i, 12] = dt(_C3_3) * z * (5.0 * zz - 3.0)
        out[i, 13] = dt(_C3_2) * x * (1.0 - 5.0 * zz)
        out[i, 14] = dt(_C3_4) * z * (xx - yy)
        out[i, 15] = dt(_C3_0) * x * (3.0 * yy - xx)


@ti.kernel
def _sh_backward_kernel(
    d: ti.types.ndarray(), v_out: ti.types.ndarray(), v_d: ti.types.ndarray(), dt: ti.template()
):
    for i in range(d.shape[0]):
        x, y, z = d[i, 0], d[i, 1], d[i, 2]
        xx, yy, zz = x * x, y * y, z * z
        g = ti.Vector.zero(dt, 16)
        for k in ti.static(range(16)):
            g[k] = v_out[i, k]
        # Hand-written d(out_k)/d(x, y, z) of the polynomials in _sh_forward_kernel.
        c1, c2, cxy = dt(_C1), dt(_C2), dt(_C2_XY)
        c30, c31, c32 = dt(_C3_0), dt(_C3_1), dt(_C3_2)
        c33, c34 = dt(_C3_3), dt(_C3_4)
        one_5zz = 1.0 - 5.0 * zz
        v_x = (
            -c1 * g[3]
            + c2 * (y * g[4] - z * g[7])
            + 2.0 * cxy * x * g[8]
            - 6.0 * c30 * x * y * g[9]
            + c31 * y * z * g[10]
            + c32 * one_5zz * g[13]
            + 2.0 * c34 * x * z * g[14]
            + 3.0 * c30 * (yy - xx) * g[15]
        )
        v_y = (
            -c1 * g[1]
            + c2 * (x * g[4] - z * g[5])
            - 2.0 * cxy * y * g[8]
            + 3.0 * c30 * (yy - xx) * g[9]
            + c31 * x * z * g[10]
            + c32 * one_5zz * g[11]
            - 2.0 * c34 * y * z * g[14]
            + 6.0 * c30 * x * y * g[15]
        )
        v_z = (
            c1 * g[2]
            - c2 * (y * g[5] + x * g[7])
            + 2.0 * dt(_C2_ZZ) * z * g[6]
            + c31 * x * y * g[10]
            - 10.0 * c32 * z * (y * g[11] + x * g[13])
            + c33 * (15.0 * zz - 3.0) * g[12]
            + c34 * (xx - yy) * g[14]
        )
        v_d[i, 0] = v_x
        v_d[i, 1] = v_y
        v_d[i, 2] = v_z


class _SHEncodeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, d):
        with record_function("taichi_nerf.sh_encode.forward"):
            d_k = _common.for_kernel(d)
            out = _common.empty_like_poisoned(
                (d.shape[0], SH_OUTPUT_DIM), dtype=d.dtype, device=d.device
            )
            if d.shape[0] > 0:
                _sh_forward_kernel(d_k, out, _common.ti_dtype(d.dtype))
        ctx.save_for_backward(d_k)
        return out

    @staticmethod
    def backward(ctx, v_out):
        if not ctx.needs_input_grad[0]:
            return None
        (d,) = ctx.saved_tensors
        with record_function("taichi_nerf.sh_encode.backward"):
            v_d = _common.empty_like_poisoned(d.shape, dtype=d.dtype, device=d.device)
            if d.shape[0] > 0:
                _sh_backward_kernel(d, _common.for_kernel(v_out), v_d, _common.ti_dtype(d.dtype))
        return v_d


def sh_encode(d: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics of bands 0..3 (16 channels) of view directions.

    Args:
        d: ``[N, 3]`` unit directions (world frame), float32 or float64. Not normalised here:
            the polynomials are evaluated at ``d`` as given.

    Returns:
        ``[N, 16]`` tcnn-ordered SH values (see :data:`SH_C`), differentiable in ``d``.

    Example:
        >>> sh_encode(torch.tensor([[0.0, 0.0, 1.0]]))[0, :3]
        tensor([0.2821, 0.0000, 0.4886])
    """
    _common.check_tensor("d", d, op=_OP, shape=(None, 3))
    _common.prepare(_OP, d=d)
    _common.check_index_size(_OP, output=d.shape[0] * SH_OUTPUT_DIM)
    return _SHEncodeFunction.apply(d)
