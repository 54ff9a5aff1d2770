"""Edge-weighted pixel sampling (``PixelSampler(edge_mix=...)``, ``--edge-sampling``)."""

from __future__ import annotations

import math

import pytest
import torch

from taichi_nerf.data import PixelSampler
from taichi_nerf.data.pixels import edge_sampling_keys, edge_strength


def _seed() -> int:
    return int(torch.randint(0, 2**31, ()))


def test_edge_strength_of_a_step_is_half_on_both_sides_and_zero_elsewhere():
    images = torch.zeros(2, 6, 9, 3, dtype=torch.uint8)
    col = int(torch.randint(1, 8, ()))
    images[0, :, col:, 1] = 255  # a vertical step in one channel
    images[1, col % 5 + 1:, :, :] = 255  # a horizontal step in all channels
    edges = edge_strength(images)
    want = torch.zeros(2, 6, 9)
    want[0, :, col - 1:col + 1] = 0.5  # Sobel / 8: the step seen by both neighbouring columns
    row = col % 5 + 1
    want[1, row - 1:row + 1, :] = 0.5
    torch.testing.assert_close(edges, want, atol=1e-6, rtol=0)


def test_edge_sampler_draws_each_pixel_with_its_weight():
    n, h, w = 2, 4, 5
    generator = torch.Generator().manual_seed(_seed())
    images = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=generator)
    images[1] = 7  # an image without edges is drawn uniformly
    mix = float(torch.empty(()).uniform_(0.2, 0.9, generator=generator))
    draws = 200_000
    sampler = PixelSampler(images, seed=_seed(), edge_mix=mix)
    cams, pixels, rgb = sampler.sample(draws)
    torch.testing.assert_close(rgb, images[cams, pixels[:, 1], pixels[:, 0]].float() / 255.0,
                               atol=0, rtol=0)
    flat = (cams * h + pixels[:, 1]) * w + pixels[:, 0]
    counts = torch.bincount(flat, minlength=n * h * w).double()
    edges = edge_strength(images).double().flatten(1)
    weights = torch.ones_like(edges)
    weights[0] = (1 - mix) + mix * edges[0] / edges[0].mean()
    expected = (weights / weights.sum(dim=1, keepdim=True) * draws / n).reshape(-1)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = n * h * w - 1
    # 8 standard deviations above chi^2's mean: a false alarm far below 1e-6; drawing image 0
    # uniformly instead scores in the thousands.
    assert chi2 < dof + 8 * math.sqrt(2 * dof), chi2


def test_edge_sampler_per_camera_share_and_exact_resume():
    images = torch.randint(0, 256, (7, 5, 6, 3), dtype=torch.uint8)
    seed = _seed()
    sampler = PixelSampler(images, seed=seed, mode="per_camera", edge_mix=0.5)
    cams, _, _ = sampler.sample(7 * 4 + 5)
    assert bool((torch.bincount(cams, minlength=7) >= 4).all())
    state = sampler.state_dict()
    again = PixelSampler(images, seed=seed + 1, mode="per_camera", edge_mix=0.5)
    again.load_state_dict(state)
    for _ in range(3):
        for a, b in zip(sampler.sample(50), again.sample(50)):
            assert torch.equal(a, b)


def test_edge_mix_out_of_range_is_refused():
    images = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="edge_mix"):
            PixelSampler(images, edge_mix=bad)
        with pytest.raises(ValueError, match="edge_mix"):
            PixelSampler(images, edge_mix=0.5).sample(4, edge_mix=bad)
    with pytest.raises(ValueError, match="needs a sampler built with"):
        PixelSampler(images).sample(4, edge_mix=0.5)
    with pytest.raises(ValueError, match="mix"):
        edge_sampling_keys(images, 2.0)


def test_edge_strength_is_the_same_in_chunks_and_matches_a_conv():
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(_seed())
    images = torch.randint(0, 256, (3, 7, 6, 3), dtype=torch.uint8, generator=generator)
    x = images.permute(0, 3, 1, 2).reshape(9, 1, 7, 6).double() / 255.0
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    kx = (torch.tensor([1.0, 2.0, 1.0])[:, None] / 8 * torch.tensor([-1.0, 0.0, 1.0])[None, :])
    kx = kx.double()[None, None]
    gx, gy = F.conv2d(x, kx), F.conv2d(x, kx.transpose(2, 3))
    want = torch.sqrt(gx * gx + gy * gy).reshape(3, 3, 7, 6).amax(dim=1).float()
    torch.testing.assert_close(edge_strength(images), want, atol=1e-6, rtol=0)
    assert torch.equal(edge_strength(images[1:2])[0], edge_strength(images)[1])
