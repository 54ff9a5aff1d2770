"""PSNR, SSIM and the test-pose alignment of the evaluation protocol."""

import math

import pytest
import torch

from taichi_nerf.poses import apply_sim3_to_poses, perturb_poses, so3_exp
from taichi_nerf.training.eval import fit_test_alignment, psnr, ssim

SSIM_TOL = 1e-9  # float64 both ways; only summation order differs


def _ssim_direct(x, y):
    """Independent SSIM: full 2-D Gaussian window, explicit valid sliding sums, per channel."""
    coords = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-0.5 * (coords / 1.5) ** 2)
    w = torch.outer(g, g) / torch.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    h, wd = x.shape[0] - 10, x.shape[1] - 10
    values = []
    for c in range(x.shape[2]):
        a = x[..., c].double().unfold(0, 11, 1).unfold(1, 11, 1)  # [h, w, 11, 11]
        b = y[..., c].double().unfold(0, 11, 1).unfold(1, 11, 1)
        mu_a, mu_b = (a * w).sum((-1, -2)), (b * w).sum((-1, -2))
        var_a = (a * a * w).sum((-1, -2)) - mu_a**2
        var_b = (b * b * w).sum((-1, -2)) - mu_b**2
        cov = (a * b * w).sum((-1, -2)) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        assert s.shape == (h, wd)
        values.append(s)
    return torch.stack(values).mean().item()


def test_psnr_of_known_mse():
    a = torch.zeros(8, 8, 3)
    assert psnr(a + 0.1, a) == pytest.approx(20.0)
    assert math.isinf(psnr(a, a))


def test_ssim_matches_direct_definition():
    x = torch.rand(24, 31, 3)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert ssim(x, y) == pytest.approx(_ssim_direct(x, y), abs=SSIM_TOL)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, y) == pytest.approx(ssim(y, x), abs=1e-12)
    z = (x + 0.4 * torch.randn_like(x)).clamp(0, 1)
    assert ssim(x, z) < ssim(x, y) < 1.0


def test_ssim_rejects_small_or_mismatched_images():
    with pytest.raises(ValueError):
        ssim(torch.rand(8, 8, 3), torch.rand(8, 8, 3))
    with pytest.raises(ValueError):
        ssim(torch.rand(16, 16, 3), torch.rand(16, 17, 3))


def test_test_alignment_recovers_the_learned_frame():
    torch.manual_seed(0)
    gt = perturb_poses(torch.eye(4)[None, :3].repeat(20, 1, 1), rotation_noise_deg=30.0,
                       translation_noise=1.0, seed=1).double()
    assert fit_test_alignment(gt, gt.clone()) is None
    rot = so3_exp(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))
    learned = apply_sim3_to_poses(gt, 1.1, rot, torch.tensor([0.1, 0.2, -0.3]).double())
    s, r, t = fit_test_alignment(learned, gt)
    moved = apply_sim3_to_poses(gt, s, r, t)
    assert torch.allclose(moved, learned, atol=1e-9)


def test_test_alignment_carries_a_common_camera_frame_turn_to_held_out_views():
    """Training cameras all turned the same way in their own frames (plus per-camera noise that
    averages out): a held-out camera gets that turn, on top of the centres' Sim(3)."""
    from types import SimpleNamespace

    from taichi_nerf.training.eval import aligned_poses

    seed = int(torch.randint(0, 2**31, ()))
    generator = torch.Generator().manual_seed(seed)
    poses = perturb_poses(torch.eye(4)[None, :3].repeat(41, 1, 1), rotation_noise_deg=30.0,
                          translation_noise=1.0, seed=seed).double()
    gt, held_out = poses[:40], poses[40:]
    sim3 = (1.2, so3_exp(torch.randn(3, dtype=torch.float64, generator=generator) * 0.2),
            torch.randn(3, dtype=torch.float64, generator=generator))
    turn = torch.randn(3, dtype=torch.float64, generator=generator) * 0.01
    jitter = torch.randn(40, 3, dtype=torch.float64, generator=generator) * 1e-3
    jitter -= jitter.mean(0)
    learned = apply_sim3_to_poses(gt, *sim3)
    learned = torch.cat([learned[:, :, :3] @ so3_exp(turn + jitter), learned[:, :, 3:]], -1)
    moved, name = aligned_poses(SimpleNamespace(poses=held_out.float()), 1, learned, gt, "cpu")
    expected = apply_sim3_to_poses(held_out, *sim3)
    expected = torch.cat([expected[:, :, :3] @ so3_exp(turn), expected[:, :, 3:]], -1)
    assert name == "sim3_and_camera_turn_from_train_cameras"
    assert torch.allclose(moved.double(), expected, atol=1e-5)
    no_turn = apply_sim3_to_poses(held_out, *sim3)
    assert not torch.allclose(moved.double(), no_turn, atol=1e-4)
