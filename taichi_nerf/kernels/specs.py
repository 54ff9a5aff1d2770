"""Constants and layouts shared by the Taichi kernels and their torch twins (imports no Taichi).

:mod:`taichi_nerf.reference` (the pure-torch twins) takes every shared definition from here, so
the twins run without Taichi:

* :data:`HASH_PRIMES` and :class:`HashGridSpec`, the multiresolution hash-grid layout;
* :data:`SH_C` and :data:`SH_OUTPUT_DIM`, the spherical-harmonics polynomials' constants.

Hash-grid level layout (the one rule, used by kernel and twin alike; see
:meth:`HashGridSpec.levels`):

* per-level scale ``b = exp((ln finest - ln base) / (L - 1))`` (``b = 1`` when ``L = 1``);
* resolution ``res_l = floor(base * b**l + 1e-6)`` (the epsilon makes the finest level exactly
  ``finest_resolution`` despite rounding); a level has ``res_l`` cells and ``res_l + 1``
  vertices per axis;
* a level is **dense** when ``(res_l + 1)**3 <= 2**log2_table_size``: vertex ``(i, j, k)`` sits at
  row ``i + j (res_l+1) + k (res_l+1)**2`` and its segment has ``(res_l+1)**3`` rows rounded up to a
  multiple of 8 (as instant-ngp aligns its levels); otherwise it is **hashed** into
  ``2**log2_table_size`` rows with ``(i * 1) ^ (j * 2654435761) ^ (k * 805459861) mod 2**log2T``
  in uint32 arithmetic;
* segments are stored level after level: level ``l`` owns rows
  ``level_offsets()[l] : level_offsets()[l + 1]`` of the ``[table_size, F]`` table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

__all__ = ["HASH_PRIMES", "HashGridSpec", "SH_C", "SH_OUTPUT_DIM"]

#: Spatial-hash primes per axis (Teschner et al.; Instant-NGP uses 1 for x for cache coherence).
HASH_PRIMES = (1, 2654435761, 805459861)

@dataclass(frozen=True)
class HashGridSpec:
    """Shape of a multiresolution hash grid.

    Attributes:
        n_levels: number of levels L.
        n_features: features per level F (output has ``L * F`` channels).
        log2_table_size: log2 of the rows per hashed level (``T = 2**log2_table_size``).
        base_resolution: cells per axis of the coarsest level.
        finest_resolution: cells per axis of the finest level.
    """

    n_levels: int = 16
    n_features: int = 2
    log2_table_size: int = 19
    base_resolution: int = 16
    finest_resolution: int = 2048

    def __post_init__(self):
        if not 1 <= self.n_levels <= 64:
            raise ValueError(f"HashGridSpec: n_levels must be in [1, 64], got {self.n_levels}")
        if not 1 <= self.n_features <= 8:
            raise ValueError(f"HashGridSpec: n_features must be in [1, 8], got {self.n_features}")
        if not 3 <= self.log2_table_size <= 24:
            raise ValueError(
                f"HashGridSpec: log2_table_size must be in [3, 24], got {self.log2_table_size}"
            )
        if not 1 <= self.base_resolution <= self.finest_resolution <= 2**20:
            raise ValueError(
                "HashGridSpec: need 1 <= base_resolution <= finest_resolution <= 2**20, got "
                f"{self.base_resolution} and {self.finest_resolution}"
            )

    @property
    def output_dim(self) -> int:
        """Channels of the encoding, ``n_levels * n_features``."""
        return self.n_levels * self.n_features

    @property
    def per_level_scale(self) -> float:
        """Growth factor ``b`` of the resolution from one level to the next."""
        if self.n_levels == 1:
            return 1.0
        return math.exp(
            (math.log(self.finest_resolution) - math.log(self.base_resolution))
            / (self.n_levels - 1)
        )

    @cached_property
    def _layout(self) -> tuple[tuple[int, ...], tuple[bool, ...], tuple[int, ...]]:
        b = self.per_level_scale
        hashed_rows = 2**self.log2_table_size
        resolutions, dense, sizes = [], [], []
        for level in range(self.n_levels):
            res = max(1, math.floor(self.base_resolution * b**level + 1e-6))
            vertices = (res + 1) ** 3
            is_dense = vertices <= hashed_rows
            resolutions.append(res)
            dense.append(is_dense)
            sizes.append(min(hashed_rows, (vertices + 7) // 8 * 8) if is_dense else hashed_rows)
        return tuple(resolutions), tuple(dense), tuple(sizes)

    def resolutions(self) -> tuple[int, ...]:
        """Cells per axis of each level, ``[L]``."""
        return self._layout[0]

    def dense_levels(self) -> tuple[bool, ...]:
        """Whether each level is densely indexed (True) or hashed (False), ``[L]``."""
        return self._layout[1]

    def level_sizes(self) -> tuple[int, ...]:
        """Rows of each level's table segment, ``[L]``."""
        return self._layout[2]

    def level_offsets(self) -> tuple[int, ...]:
        """First row of each level's segment, plus the total row count at the end, ``[L + 1]``."""
        offsets = [0]
        for size in self.level_sizes():
            offsets.append(offsets[-1] + size)
        return tuple(offsets)

    @property
    def table_size(self) -> int:
        """Total rows of the table, ``T_total``."""
        return self.level_offsets()[-1]

    def levels(self) -> list[tuple[int, int, int, bool]]:
        """Per level ``(resolution, offset, size, dense)`` -- what kernel and twin iterate over."""
        offsets = self.level_offsets()
        return [
            (res, offsets[level], size, dense)
            for level, (res, size, dense) in enumerate(
                zip(self.resolutions(), self.level_sizes(), self.dense_levels())
            )
        ]


#: Outputs of the encoding: bands 0..3, (3 + 1)**2 channels.
SH_OUTPUT_DIM = 16

#: Constants of the tcnn polynomials (shared with the torch twin). Channel k of the output is
#:   0: C0                      1: -C1 y                   2: C1 z                  3: -C1 x
#:   4: C2 xy                   5: -C2 yz                  6: C2_ZZ z^2 - C2_0      7: -C2 xz
#:   8: C2_XY (x^2 - y^2)       9: C3_0 y (-3x^2 + y^2)
#:  10: C3_1 xyz               11: C3_2 y (1 - 5z^2)      12: C3_3 z (5z^2 - 3)
#:  13: C3_2 x (1 - 5z^2)      14: C3_4 z (x^2 - y^2)     15: C3_0 x (-x^2 + 3y^2)
SH_C = {
    "C0": 0.28209479177387814,  # 1 / (2 sqrt(pi))
    "C1": 0.48860251190291987,  # sqrt(3) / (2 sqrt(pi))
    "C2": 1.0925484305920792,  # sqrt(15) / (2 sqrt(pi))
    "C2_ZZ": 0.94617469575755997,  # 3 sqrt(5) / (4 sqrt(pi))
    "C2_0": 0.31539156525251999,  # sqrt(5) / (4 sqrt(pi))
    "C2_XY": 0.54627421529603959,  # sqrt(15) / (4 sqrt(pi))
    "C3_0": 0.59004358992664352,  # sqrt(70) / (8 sqrt(pi))
    "C3_1": 2.8906114426405538,  # sqrt(105) / (2 sqrt(pi))
    "C3_2": 0.45704579946446572,  # sqrt(42) / (8 sqrt(pi))
    "C3_3": 0.3731763325901154,  # sqrt(7) / (4 sqrt(pi))
    "C3_4": 1.4453057213202769,  # sqrt(105) / (4 sqrt(pi))
}
