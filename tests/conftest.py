"""Shared test set-up: the device list (CPU always, CUDA when present) and seeding."""

import os
import warnings

import pytest
import torch

# Taichi's version check phones home at ti.init; never from tests.
os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")

# taichi 1.7 calls locale.getdefaultlocale at import (deprecated since Python 3.11); import it
# once here with that warning silenced so `pytest -W error` tests our code, not taichi's.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*getdefaultlocale.*", category=DeprecationWarning)
    import taichi  # noqa: F401

CUDA_AVAILABLE = torch.cuda.is_available()

#: Parametrise a test over these: ``@pytest.mark.parametrize("device", DEVICES)``.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
        ],
    ),
]


def random_rays(n: int, seed: int = 0, target_std: float = 0.3):
    """``n`` unit rays from a sphere of radius 3 aimed near the origin: ``(rays_o, rays_d)``."""
    g = torch.Generator().manual_seed(seed)
    origin = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3.0
    target = target_std * torch.randn(n, 3, generator=g)
    return origin, torch.nn.functional.normalize(target - origin, dim=-1)


@pytest.fixture(scope="session", autouse=True)
def _taichi_backend():
    """One Taichi backend for the whole session: CUDA when present (CPU tensors still work)."""
    import taichi_nerf

    taichi_nerf.init("auto")
    yield
