"""Taichi kernels wired into torch autograd, one module per op family.

Each op validates its inputs, starts Taichi for the tensors' device on first use (never at
import) and has a pure-torch twin in :mod:`taichi_nerf.reference`.
"""

from taichi_nerf.kernels.hash_grid import HashGrid, HashGridSpec, hash_encode
from taichi_nerf.kernels.sh import sh_encode

__all__ = ["HashGrid", "HashGridSpec", "hash_encode", "sh_encode"]
