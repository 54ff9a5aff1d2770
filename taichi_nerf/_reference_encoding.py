"""Pure-torch twins of the encoding ops (hash_encode, sh_encode); see taichi_nerf.reference.

Same signatures as the Taichi ops; plain torch autograd gives their gradients. The level layout
and hash primes come from :mod:`taichi_nerf.kernels.hash_grid` (one definition for both), the
SH constants from :mod:`taichi_nerf.kernels.sh`.
"""

from __future__ import annotations

import torch

from taichi_nerf.kernels.hash_grid import HASH_PRIMES, HashGridSpec
from taichi_nerf.kernels.sh import SH_C

__all__ = ["hash_encode", "sh_encode"]

_CORNERS = [((c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1) for c in range(8)]


def hash_encode(x: torch.Tensor, table: torch.Tensor, spec: HashGridSpec) -> torch.Tensor:
    """Twin of :func:`taichi_nerf.kernels.hash_grid.hash_encode` in plain torch.

    Args:
        x: ``[N, 3]`` points, clamped to ``[0, 1]``.
        table: ``[spec.table_size, spec.n_features]``.
        spec: grid layout.

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
        factor = torch.where(upper, frac[:, None, :], 1.0 - frac[:, None, :])  # [N, 8, 3]
        weight = factor[..., 0] * factor[..., 1] * factor[..., 2]  # [N, 8]
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
