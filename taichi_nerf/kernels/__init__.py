"""Taichi kernels wired into torch autograd, one module per op family.

Each op validates its inputs, starts Taichi for the tensors' device on first use (never at
import) and has a pure-torch twin in :mod:`taichi_nerf.reference`.

- :mod:`~taichi_nerf.kernels.hash_grid`: :func:`hash_encode`, :class:`HashGrid`
  (gradients to the table and the positions).
- :mod:`~taichi_nerf.kernels.sh`: :func:`sh_encode` (gradient to the directions).
- :mod:`~taichi_nerf.kernels.marching`: :class:`OccupancyGrid`, :func:`march_rays` (no grad).
- :mod:`~taichi_nerf.kernels.compositing`: :func:`composite` (gradients to sigmas and rgbs).
- :mod:`~taichi_nerf.kernels.specs` (no Taichi): :class:`HashGridSpec`, ``HASH_PRIMES``,
  ``SH_C``.
- :mod:`~taichi_nerf.kernels.packed` (no Taichi): :class:`PackedInfo`,
  :func:`exclusive_transmittance`, :func:`gather_rays`, :func:`ray_points`.

The names are resolved lazily (PEP 562), so ``taichi_nerf.kernels.specs`` and
``taichi_nerf.kernels.packed`` import without Taichi; the op modules import it.
"""

from importlib import import_module

_EXPORTS = {
    "HashGrid": "hash_grid",
    "hash_encode": "hash_grid",
    "HashGridSpec": "specs",
    "HASH_PRIMES": "specs",
    "SH_C": "specs",
    "OccupancyGrid": "marching",
    "march_rays": "marching",
    "composite": "compositing",
    "sh_encode": "sh",
    "PackedInfo": "packed",
    "exclusive_transmittance": "packed",
    "gather_rays": "packed",
    "ray_points": "packed",
}

_SUBMODULES = ("hash_grid", "sh", "marching", "compositing", "specs", "packed", "_common",
               "_geometry")

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _SUBMODULES:  # ``taichi_nerf.kernels.marching`` without importing it first
        return import_module(f"{__name__}.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
