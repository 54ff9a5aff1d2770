"""taichi-nerf: joint NeRF and camera-pose optimization on Taichi kernels wired into torch."""

from taichi_nerf.runtime import init

__version__ = "0.1.0"
__all__ = ["init", "__version__"]
