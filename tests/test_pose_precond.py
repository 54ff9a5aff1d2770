"""CamP preconditioning, the per-camera sampler, the pose LR schedule and pixel-unit errors."""

import math

import pytest
import torch

from taichi_nerf.data import PixelSampler
from taichi_nerf.pose_metrics import pixel_angle_deg, pose_errors
from taichi_nerf.pose_precond import (
    _project,
    camp_preconditioner,
    frustum_points,
    orbit_preconditioner,
    projection_jacobian,
)
from taichi_nerf.poses import CameraPoseParameters, perturb_poses, so3_exp
from taichi_nerf.training.pose_opt import pose_lr_factor

WHITEN_TOL = 1e-8  # float64 eigen-decomposition of a 6x6 matrix


def _look_at(centre: torch.Tensor) -> torch.Tensor:
    """c2w [3, 4] of an OpenGL camera at ``centre`` looking at the origin."""
    back = centre / centre.norm()
    right = torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0], dtype=centre.dtype), back)
    right = right / right.norm()
    up = torch.linalg.cross(back, right)
    return torch.cat([torch.stack([right, up, back], -1), centre[:, None]], -1)


def _random_cameras(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    centres = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    centres = centres / centres.norm(dim=-1, keepdim=True) * (3.5 + torch.rand(n, 1,
                                                                             generator=generator))
    poses = torch.stack([_look_at(c) for c in centres])
    focal = 100.0 + 50.0 * torch.rand(n, generator=generator, dtype=torch.float64)
    intrinsics = torch.stack([focal, focal, torch.full_like(focal, 32.0),
                              torch.full_like(focal, 32.0)], -1)
    return poses, intrinsics


def test_preconditioner_whitens_the_projection_jacobian():
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    poses, intrinsics = _random_cameras(3, generator)
    damping = 0.1
    p = camp_preconditioner(poses, intrinsics, 64, 64, 2.0, 6.0, damping=damping)
    for i in range(3):
        points = frustum_points(poses[i], intrinsics[i], 64, 64, 2.0, 6.0)
        jac = projection_jacobian(poses[i], intrinsics[i], points)
        jtj = jac.T @ jac / points.shape[0]
        damped = jtj + damping * torch.diag(torch.diagonal(jtj))
        assert torch.allclose(p[i].T @ damped @ p[i], torch.eye(6, dtype=torch.float64),
                              atol=WHITEN_TOL)
        # without the damping's share, J^T J itself is whitened up to the damping:
        # P^T J^T J P = I - P^T D P, so its spectrum lies in [1 - max eig(P^T D P), 1]
        eig = torch.linalg.eigvalsh(p[i].T @ jtj @ p[i])
        damping_share = torch.linalg.eigvalsh(
            p[i].T @ (damping * torch.diag(torch.diagonal(jtj))) @ p[i])
        assert eig.max() <= 1 + 1e-9 and eig.min() >= 1 - damping_share.max() - 1e-9
        assert damping_share.max() < 0.9  # the damping is a share, not the whole
        # and the raw problem was badly conditioned: that is what P is for
        raw = torch.linalg.eigvalsh(jtj)
        assert raw.max() / raw.min() > 10


def test_projection_jacobian_matches_finite_differences():
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    poses, intrinsics = _random_cameras(1, generator)
    points = frustum_points(poses[0], intrinsics[0], 64, 64, 2.0, 6.0, grid=3, depths=2)
    jac = projection_jacobian(poses[0], intrinsics[0], points)

    def project(delta):
        rotation = so3_exp(delta[:3]) @ poses[0][:, :3]
        cam = (points - (poses[0][:, 3] + delta[3:])) @ rotation
        fx, fy, cx, cy = intrinsics[0]
        return torch.stack([cx + fx * cam[:, 0] / -cam[:, 2],
                            cy - fy * cam[:, 1] / -cam[:, 2]], -1).reshape(-1)

    eps = 1e-6
    for j in range(6):
        step = torch.zeros(6, dtype=torch.float64)
        step[j] = eps
        numeric = (project(step) - project(-step)) / (2 * eps)
        assert torch.allclose(jac[:, j], numeric, atol=1e-5, rtol=1e-6)


def test_latent_parameters_start_at_the_initial_poses_and_have_right_gradients():
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    poses, intrinsics = _random_cameras(4, generator)
    p = camp_preconditioner(poses, intrinsics, 64, 64, 2.0, 6.0)
    module = CameraPoseParameters(poses, preconditioner=p)
    assert [name for name, _ in module.named_parameters()] == ["latent"]
    assert torch.equal(module(), poses)  # z = 0 gives the initial poses exactly
    module.latent.data.normal_(0.0, 0.3, generator=generator)
    omega, delta_t = module.deltas()
    expected = torch.einsum("nij,nj->ni", p, module.latent)
    assert torch.allclose(torch.cat([omega, delta_t], -1), expected)
    assert torch.equal(module.rotation_delta, omega)  # the usual names read the deltas

    def poses_of(latent):
        module.latent.data.copy_(latent)
        return module(torch.tensor([2, 0]))

    latent = module.latent.detach().clone().requires_grad_(True)

    def through(z):
        delta = torch.einsum("nij,nj->ni", p, z)
        initial = poses
        rot = so3_exp(delta[:, :3]) @ initial[:, :, :3]
        return torch.cat([rot, (initial[:, :, 3] + delta[:, 3:])[..., None]], -1)[[2, 0]]

    assert torch.autograd.gradcheck(through, (latent,))
    v = torch.randn(2, 3, 4, dtype=torch.float64, generator=generator)
    module.latent.grad = None
    (module(torch.tensor([2, 0])) * v).sum().backward()
    (g_ref,) = torch.autograd.grad((through(latent) * v).sum(), latent)
    assert torch.allclose(module.latent.grad, g_ref)
    assert poses_of(latent.detach()).shape == (2, 3, 4)


def test_orbit_latents_turn_about_the_pivot_and_shift_in_camera_axes():
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    poses, intrinsics = _random_cameras(3, generator)
    centre = 0.2 * torch.randn(3, generator=generator, dtype=torch.float64)
    p = orbit_preconditioner(poses, 2.0, 6.0, centre)
    zero = torch.zeros(6, dtype=torch.float64)
    eps = 1e-6
    for i in range(3):
        forward = -poses[i][:, 2]
        pivot = poses[i][:, 3] + ((centre - poses[i][:, 3]) @ forward) * forward
        pix = lambda d, i=i, pivot=pivot: _project(d, poses[i], intrinsics[i], pivot[None])
        jac = torch.stack([(pix(p[i][:, j] * eps) - pix(zero)) / eps for j in range(6)], -1)
        # the three turns keep the pivot's image in place (to first order), the shifts slide
        # it along the image axes (u_x right, u_y up: v falls) and the dolly does not move it
        assert jac[:, [0, 1, 2, 5]].abs().max() < 1e-4
        fx = intrinsics[i][0]
        depth = (pivot - poses[i][:, 3]).norm()
        assert torch.allclose(jac[:, 3], torch.stack([-fx / depth, 0 * fx]), atol=1e-4)
        assert torch.allclose(jac[:, 4], torch.stack([0 * fx, fx / depth]), atol=1e-4)
        # a pure shift of the latent is a camera-axis translation, a turn a camera-axis rotation
        assert torch.allclose(p[i][3:, 3:], poses[i][:, :3])
        assert torch.allclose(p[i][:3, :3], poses[i][:, :3])
    module = CameraPoseParameters(poses, preconditioner=p)
    assert torch.equal(module(), poses)  # z = 0 gives the initial poses exactly


def test_preconditioned_parts_that_are_not_learned_stay_exactly_fixed():
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    poses, intrinsics = _random_cameras(3, generator)
    p = camp_preconditioner(poses, intrinsics, 64, 64, 2.0, 6.0, learn_rotation=False)
    module = CameraPoseParameters(poses, learn_rotation=False, preconditioner=p)
    module.latent.data.normal_(generator=generator)
    moved = module()
    assert torch.equal(moved[:, :, :3], poses[:, :, :3])
    assert not torch.equal(moved[:, :, 3], poses[:, :, 3])


def test_per_camera_sampler_gives_every_camera_its_share_and_resumes():
    images = torch.randint(0, 256, (7, 5, 6, 3), dtype=torch.uint8)
    sampler = PixelSampler(images, seed=3, mode="per_camera")
    cams, pixels, rgb = sampler.sample(7 * 4 + 5)
    counts = torch.bincount(cams, minlength=7)
    assert bool((counts >= 4).all()) and int(counts.sum()) == 33
    assert torch.equal(rgb, images[cams, pixels[:, 1], pixels[:, 0]].float() / 255.0)
    state = sampler.state_dict()
    again = PixelSampler(images, seed=99, mode="per_camera")
    again.load_state_dict(state)
    for a, b in zip(sampler.sample(20), again.sample(20)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="mode"):
        PixelSampler(images, mode="stratified")


def test_pose_lr_factor_warms_up_then_decays_to_the_final_ratio():
    assert pose_lr_factor(0, 10, 100, 0.01) == pytest.approx(0.1)
    assert pose_lr_factor(9, 10, 100, 0.01) == pytest.approx(0.01 ** 0.09)
    assert pose_lr_factor(100, 10, 100, 0.01) == pytest.approx(0.01)
    assert pose_lr_factor(50, 0, 100, 0.01) == pytest.approx(0.1)


def test_pose_errors_in_pixels():
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    poses, intrinsics = _random_cameras(5, generator)
    focal, width = 120.0, 64
    per_pixel = pixel_angle_deg(focal, width)
    # hfov = 2 atan(W / 2f); 1 px is hfov / W
    assert per_pixel == pytest.approx(math.degrees(2 * math.atan(32 / 120)) / 64)
    turned = perturb_poses(poses, rotation_noise_deg=0.5, translation_noise=0.0, seed=1)
    errors = pose_errors(turned, poses, pixel_deg=per_pixel, focal_px=focal)
    assert errors["rotation_error_px_mean"] == pytest.approx(
        errors["rotation_error_mean"] / per_pixel)
    shifted = poses.clone()
    shifted[:, 0, 3] += 0.01
    errors = pose_errors(shifted, poses, pixel_deg=per_pixel, focal_px=focal)
    depth = poses[:, :, 3].norm(dim=-1)
    assert errors["translation_error_px_mean"] == pytest.approx(
        float((0.01 * focal / depth).mean()))
    assert "aligned_rotation_error_px_mean" in errors


def test_pixel_dataset_feeds_the_sampler():
    from taichi_nerf import PixelDataset

    images = torch.randint(0, 256, (3, 4, 5, 3), dtype=torch.uint8)
    data = PixelDataset(images, torch.tensor([[10.0, 10.0, 2.5, 2.0]]).repeat(3, 1))
    assert data.num_cameras == 3 and torch.equal(data.camera_ids, torch.arange(3))
    a = PixelSampler(data, seed=5).sample(8)
    b = PixelSampler(images, seed=5).sample(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_removing_the_rig_motion_keeps_relative_corrections_and_kills_a_global_one():
    from taichi_nerf.pose_precond import remove_rig_motion, rig_motion_basis

    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    poses, _ = _random_cameras(12, generator)
    centres, pivot = poses[:, :, 3], torch.zeros(3, dtype=torch.float64)
    scale = float(centres.norm(dim=-1).mean())
    basis = rig_motion_basis(centres, pivot, scale)
    g = torch.randn(6, dtype=torch.float64, generator=generator) * 0.01
    rigid = basis @ g
    assert torch.allclose(remove_rig_motion(rigid, basis, scale), torch.zeros_like(rigid),
                          atol=1e-12)
    relative = torch.randn(12, 6, dtype=torch.float64, generator=generator) * 0.01
    once = remove_rig_motion(relative, basis, scale)
    assert torch.allclose(remove_rig_motion(once + rigid, basis, scale), once, atol=1e-12)


@pytest.mark.parametrize("latent", ["none", "orbit"])
def test_centre_gauge_removes_the_rig_motion_and_keeps_a_common_turn_in_place(latent):
    """--pose-gauge centres: a rigid motion of the whole rig goes, whatever else the deltas hold;
    a turn of every camera in place (centres still) and per-camera corrections stay."""
    from taichi_nerf.pose_precond import rig_motion_basis
    from taichi_nerf.training.pose_opt import _CentreGauge

    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    poses, _ = _random_cameras(12, generator)
    precond = None if latent == "none" else orbit_preconditioner(poses, 2.0, 6.0, torch.zeros(3))
    params = CameraPoseParameters(poses, preconditioner=precond)
    gauge = _CentreGauge(params, (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0))
    centres = poses[:, :, 3]
    scale = float(centres.norm(dim=-1).mean())
    basis = rig_motion_basis(centres, torch.zeros(3, dtype=torch.float64), scale)
    rigid = basis @ (torch.randn(6, dtype=torch.float64, generator=generator) * 0.01)
    turn = torch.zeros(12, 6, dtype=torch.float64)
    turn[:, :3] = torch.randn(3, dtype=torch.float64, generator=generator) * 0.01
    relative = torch.randn(12, 6, dtype=torch.float64, generator=generator) * 0.01
    relative[:, 3:] -= basis[:, 3:] @ gauge.fit(relative)  # centres free of any rig motion

    def set_deltas(deltas):
        with torch.no_grad():
            if precond is None:
                params.rotation_delta.copy_(deltas[:, :3])
                params.translation_delta.copy_(deltas[:, 3:])
            else:
                params.latent.copy_(torch.linalg.solve(precond, deltas[..., None])[..., 0])

    for kept in (turn, relative, turn + relative):
        set_deltas(kept + rigid)
        gauge.apply()
        assert torch.allclose(params.camera_deltas(), kept, atol=1e-12)
        assert gauge.fit(params.camera_deltas()).abs().max() < 1e-12
