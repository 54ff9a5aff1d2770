"""Shared test set-up: the device list (CPU always, CUDA when present) and seeding."""

import os

import pytest
import torch

# Tests must never phone home or write the cache into $HOME on CI machines unless asked.
os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")

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


@pytest.fixture(scope="session", autouse=True)
def _taichi_backend():
    """One Taichi backend for the whole session: CUDA when present (CPU tensors still work)."""
    import taichi_nerf

    taichi_nerf.init("auto")
    yield
