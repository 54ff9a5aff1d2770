"""Tests of taichi_nerf.poses: SO(3)/SE(3) maps, CameraPoseParameters, pose noise, pose errors."""

import io
import math

import pytest
import torch

from taichi_nerf.poses import (
    CameraPoseParameters,
    align_sim3,
    apply_sim3_to_poses,
    hat,
    perturb_poses,
    pose_errors,
    rotation_geodesic,
    rotation_geodesic_deg,
    se3_exp,
    so3_exp,
    so3_log,
)

# Tolerances per dtype: float32 rotations carry ~1e-7 relative rounding per entry.
ATOL = {torch.float32: 2e-6, torch.float64: 1e-12}
# so3_log near pi reads the axis from the symmetric part, so it is as accurate as anywhere else;
# the looser bound covers the sign test and sqrt-conditioning of the angle there.
ATOL_NEAR_PI = {torch.float32: 1e-5, torch.float64: 1e-10}
GRADCHECK_EPS = 1e-6
GRADCHECK_ATOL = 1e-7
# Noise statistics over this many cameras: standard error of the mean angle ~0.3%.
NUM_NOISE_CAMERAS = 20000
STAT_RTOL = 0.03
MEAN_CHI3 = 2.0 * math.sqrt(2.0 / math.pi)  # E|x| for x ~ N(0, I3): 1.5958
DTYPES = [torch.float32, torch.float64]


def random_omega(n, max_angle, dtype, min_angle=0.0):
    axis = torch.nn.functional.normalize(torch.randn(n, 3, dtype=torch.float64), dim=-1)
    angle = min_angle + (max_angle - min_angle) * torch.rand(n, 1, dtype=torch.float64)
    return (axis * angle).to(dtype)


def random_poses(n, dtype=torch.float64, radius=4.0):
    rotation = so3_exp(random_omega(n, math.pi, torch.float64))
    centre = torch.nn.functional.normalize(torch.randn(n, 3, dtype=torch.float64), dim=-1)
    centre = centre * radius * (0.5 + torch.rand(n, 1, dtype=torch.float64))
    return torch.cat([rotation, centre[..., None]], -1).to(dtype)


def random_sim3():
    scale = 0.5 + 1.5 * torch.rand((), dtype=torch.float64)
    rotation = so3_exp(random_omega(1, math.pi, torch.float64))[0]
    translation = torch.randn(3, dtype=torch.float64) * 3.0
    return scale, rotation, translation


# ---------------------------------------------------------------- SO(3) / SE(3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_is_a_rotation_and_matches_matrix_exp(dtype):
    omega = random_omega(256, 3.0, dtype)
    rotation = so3_exp(omega)
    expected = torch.linalg.matrix_exp(hat(omega.double())).to(dtype)
    torch.testing.assert_close(rotation, expected, atol=ATOL[dtype], rtol=0)
    eye = torch.eye(3, dtype=dtype).expand_as(rotation)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), eye, atol=ATOL[dtype], rtol=0)
    assert torch.allclose(
        torch.linalg.det(rotation), torch.ones(256, dtype=dtype), atol=ATOL[dtype]
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_matches_matrix_exp_across_taylor_threshold(dtype):
    angles = torch.logspace(-9, 0, 200, dtype=torch.float64)
    omega = (
        torch.nn.functional.normalize(torch.randn(200, 3, dtype=torch.float64), dim=-1)
        * angles[:, None]
    )
    expected = torch.linalg.matrix_exp(hat(omega)).to(dtype)
    torch.testing.assert_close(so3_exp(omega.to(dtype)), expected, atol=ATOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_inverts_exp_random(dtype):
    omega = random_omega(512, math.pi - 1e-2, dtype)
    torch.testing.assert_close(so3_log(so3_exp(omega)), omega, atol=20 * ATOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_log_tiny_and_zero(dtype):
    omega = random_omega(64, 1e-3, dtype, min_angle=1e-9)
    torch.testing.assert_close(so3_log(so3_exp(omega)), omega, atol=ATOL[dtype], rtol=1e-5)
    zero = torch.zeros(5, 3, dtype=dtype)
    assert torch.equal(so3_exp(zero), torch.eye(3, dtype=dtype).expand(5, 3, 3))
    assert torch.equal(so3_log(torch.eye(3, dtype=dtype).expand(5, 3, 3)), zero)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_near_pi(dtype):
    gaps = torch.tensor([1e-1, 1e-2, 1e-3, 1e-4, 1e-5], dtype=torch.float64)
    omega = random_omega(len(gaps), 0.0, torch.float64)  # directions only
    axis = torch.nn.functional.normalize(torch.randn(len(gaps), 3, dtype=torch.float64), dim=-1)
    omega = axis * (math.pi - gaps)[:, None]
    rotation = so3_exp(omega).to(dtype)
    recovered = so3_log(rotation)
    assert torch.isfinite(recovered).all()
    # The round trip R -> log -> exp must land on R at every angle.
    torch.testing.assert_close(so3_exp(recovered), rotation, atol=ATOL_NEAR_PI[dtype], rtol=0)
    if dtype == torch.float64:
        torch.testing.assert_close(recovered, omega, atol=ATOL_NEAR_PI[dtype], rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_exactly_pi(dtype):
    axis = torch.nn.functional.normalize(torch.randn(8, 3, dtype=torch.float64), dim=-1)
    rotation = (2 * axis[:, :, None] * axis[:, None, :] - torch.eye(3, dtype=torch.float64)).to(
        dtype
    )
    omega = so3_log(rotation)
    torch.testing.assert_close(
        omega.norm(dim=-1), torch.full((8,), math.pi, dtype=dtype), atol=ATOL_NEAR_PI[dtype], rtol=0
    )
    # Either sign of the axis is a valid answer at pi.
    alignment = (torch.nn.functional.normalize(omega.double(), dim=-1) * axis).sum(-1).abs()
    torch.testing.assert_close(
        alignment, torch.ones(8, dtype=torch.float64), atol=ATOL_NEAR_PI[dtype], rtol=0
    )
    torch.testing.assert_close(so3_exp(omega), rotation, atol=ATOL_NEAR_PI[dtype], rtol=0)


def test_log_of_random_rotation_matrices():
    q, r = torch.linalg.qr(torch.randn(256, 3, 3, dtype=torch.float64))
    rotation = q * torch.sign(torch.linalg.det(q))[:, None, None]
    omega = so3_log(rotation)
    assert (omega.norm(dim=-1) <= math.pi + 1e-12).all()
    torch.testing.assert_close(so3_exp(omega), rotation, atol=1e-10, rtol=0)


def test_batched_leading_dims():
    omega = random_omega(24, 2.0, torch.float64).reshape(2, 3, 4, 3)
    rotation = so3_exp(omega)
    assert rotation.shape == (2, 3, 4, 3, 3)
    torch.testing.assert_close(so3_log(rotation), omega, atol=1e-10, rtol=0)
    assert rotation_geodesic(rotation, rotation).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="omega"):
        so3_exp(torch.zeros(4, 2))


def test_gradient_of_exp_at_zero_is_the_generators():
    omega = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    jacobian = torch.autograd.functional.jacobian(so3_exp, omega)  # [3, 3, 3(omega)]
    for i in range(3):
        generator = hat(torch.eye(3, dtype=torch.float64)[i])
        torch.testing.assert_close(jacobian[..., i], generator, atol=1e-15, rtol=0)
    assert torch.autograd.gradcheck(so3_exp, (omega,), eps=GRADCHECK_EPS, atol=GRADCHECK_ATOL)


def test_gradcheck_exp_log_and_geodesic_away_from_zero():
    omega = random_omega(4, 2.5, torch.float64, min_angle=0.1).requires_grad_()
    assert torch.autograd.gradcheck(so3_exp, (omega,), eps=GRADCHECK_EPS, atol=GRADCHECK_ATOL)
    small = random_omega(4, 1e-4, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(so3_exp, (small,), eps=1e-7, atol=GRADCHECK_ATOL)
    # log as a function of omega (through exp) is the identity: its Jacobian must be I.
    near_pi = random_omega(2, 3.0, torch.float64, min_angle=2.6)
    for point in (omega, small, torch.zeros(2, 3, dtype=torch.float64), near_pi):
        jacobian = torch.autograd.functional.jacobian(lambda w: so3_log(so3_exp(w)), point.detach())
        expected = torch.eye(3, dtype=torch.float64).expand(point.shape[0], 3, 3)
        blocks = torch.einsum("bibj->bij", jacobian)  # d omega_out[b] / d omega_in[b]
        torch.testing.assert_close(blocks, expected, atol=1e-7, rtol=0)
    other = so3_exp(random_omega(4, 3.0, torch.float64))
    assert torch.autograd.gradcheck(
        lambda w: rotation_geodesic(so3_exp(w), other),
        (omega,),
        eps=GRADCHECK_EPS,
        atol=GRADCHECK_ATOL,
    )
    grad_at_identity = torch.autograd.grad(
        rotation_geodesic(so3_exp(small * 0), torch.eye(3, dtype=torch.float64)).sum(), small
    )[0]
    assert torch.isfinite(grad_at_identity).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_geodesic_matches_angle(dtype):
    omega = random_omega(128, math.pi - 1e-3, torch.float64)
    base = so3_exp(random_omega(128, math.pi, torch.float64))
    rotated = so3_exp(omega) @ base
    angle = rotation_geodesic(rotated.to(dtype), base.to(dtype))
    torch.testing.assert_close(angle, omega.norm(dim=-1).to(dtype), atol=20 * ATOL[dtype], rtol=0)
    torch.testing.assert_close(
        rotation_geodesic_deg(rotated, base), torch.rad2deg(omega.norm(dim=-1)), atol=1e-9, rtol=0
    )
    assert torch.equal(rotation_geodesic(base, base), torch.zeros(128, dtype=torch.float64))


def test_se3_exp_matches_matrix_exp():
    xi = torch.randn(64, 6, dtype=torch.float64)
    xi[:8, :3] *= 1e-3  # across the Taylor thresholds
    twist = torch.zeros(64, 4, 4, dtype=torch.float64)
    twist[:, :3, :3] = hat(xi[:, :3])
    twist[:, :3, 3] = xi[:, 3:]
    expected = torch.linalg.matrix_exp(twist)[:, :3, :]
    torch.testing.assert_close(se3_exp(xi), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(se3_exp(xi.float()), expected.float(), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- CameraPoseParameters


def functional_poses(module, rotation_delta, translation_delta, indices=None):
    params = {"rotation_delta": rotation_delta, "translation_delta": translation_delta}
    return torch.func.functional_call(module, params, (indices,))


def test_module_starts_at_initial_poses_and_applies_left_delta():
    initial = random_poses(6)
    module = CameraPoseParameters(initial)
    assert module.num_cameras == 6
    assert torch.equal(module(), initial)
    assert {name for name, _ in module.named_parameters()} == {
        "rotation_delta",
        "translation_delta",
    }
    omega, delta_t = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    with torch.no_grad():
        module.rotation_delta.copy_(omega)
        module.translation_delta.copy_(delta_t)
    poses = module()
    torch.testing.assert_close(
        poses[:, :, :3], torch.linalg.matrix_exp(hat(omega)) @ initial[:, :, :3], atol=1e-12, rtol=0
    )
    torch.testing.assert_close(poses[:, :, 3], initial[:, :, 3] + delta_t, atol=1e-15, rtol=0)
    indices = torch.tensor([4, 0, 4])
    assert torch.equal(module(indices), poses[indices])
    snapshot = module.get_poses()
    assert not snapshot.requires_grad and torch.equal(snapshot, poses)
    snapshot.zero_()
    assert torch.equal(module(), poses)


def test_module_accepts_4x4_and_rejects_bad_shapes():
    initial = random_poses(3, torch.float32)
    homogeneous = torch.cat([initial, torch.tensor([0, 0, 0, 1.0]).expand(3, 1, 4)], 1)
    module = CameraPoseParameters(homogeneous)
    assert module.initial_poses.shape == (3, 3, 4) and module.rotation_delta.dtype == torch.float32
    assert torch.equal(module(), initial)
    with pytest.raises(ValueError, match="initial_poses"):
        CameraPoseParameters(torch.zeros(3, 3, 3))


@pytest.mark.parametrize("at_zero", [True, False])
def test_gradcheck_module_forward(at_zero):
    module = CameraPoseParameters(random_poses(4))
    rotation = (
        torch.zeros(4, 3, dtype=torch.float64) if at_zero else random_omega(4, 2.0, torch.float64)
    )
    translation = (
        torch.zeros(4, 3, dtype=torch.float64)
        if at_zero
        else torch.randn(4, 3, dtype=torch.float64)
    )
    rotation.requires_grad_()
    translation.requires_grad_()
    indices = torch.tensor([2, 0, 3])
    assert torch.autograd.gradcheck(
        lambda r, t: functional_poses(module, r, t, indices),
        (rotation, translation),
        eps=GRADCHECK_EPS,
        atol=GRADCHECK_ATOL,
    )


@pytest.mark.parametrize("frozen", ["rotation", "translation"])
def test_frozen_part_is_a_buffer_and_stays_bit_identical(frozen):
    initial = random_poses(5, torch.float32)
    module = CameraPoseParameters(
        initial, learn_rotation=frozen != "rotation", learn_translation=frozen != "translation"
    )
    frozen_name, learned_name = (
        f"{frozen}_delta",
        ("translation_delta" if frozen == "rotation" else "rotation_delta"),
    )
    assert [name for name, _ in module.named_parameters()] == [learned_name]
    assert frozen_name in dict(module.named_buffers())
    frozen_before = getattr(module, frozen_name).clone()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        loss = (module() - torch.randn(5, 3, 4)).square().sum()
        loss.backward()
        optimizer.step()
    assert getattr(module, frozen_name).grad is None
    assert torch.equal(getattr(module, frozen_name), frozen_before)
    assert getattr(module, learned_name).abs().sum() > 0
    poses = module.get_poses()
    if frozen == "rotation":
        assert torch.equal(poses[:, :, :3], initial[:, :, :3])
        assert not torch.equal(poses[:, :, 3], initial[:, :, 3])
    else:
        assert torch.equal(poses[:, :, 3], initial[:, :, 3])
        assert not torch.equal(poses[:, :, :3], initial[:, :, :3])


def test_state_dict_round_trip():
    module = CameraPoseParameters(random_poses(7), learn_translation=False)
    with torch.no_grad():
        module.rotation_delta.copy_(torch.randn(7, 3))
        module.translation_delta.copy_(torch.randn(7, 3))
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    # A module built from other poses with the same N, and the other switch settings, loads it.
    restored = CameraPoseParameters(random_poses(7))
    restored.load_state_dict(torch.load(buffer))
    assert torch.equal(restored(), module())
    assert set(restored.state_dict()) == {"initial_poses", "rotation_delta", "translation_delta"}


# ---------------------------------------------------------------- perturb_poses


def test_gaussian_rotation_noise_statistics():
    sigma_deg = 5.0
    poses = random_poses(NUM_NOISE_CAMERAS)
    noisy = perturb_poses(
        poses, rotation_noise_deg=sigma_deg, seed=int(torch.randint(0, 2**31, ()))
    )
    sigma = math.radians(sigma_deg)
    angle = rotation_geodesic(noisy[:, :, :3], poses[:, :, :3])
    assert abs(angle.mean().item() / (MEAN_CHI3 * sigma) - 1) < STAT_RTOL
    # Left-multiplied in world axes: log(R R0^T) is isotropic N(0, sigma^2 I3) in world axes.
    omega = so3_log(noisy[:, :, :3] @ poses[:, :, :3].transpose(1, 2))
    torch.testing.assert_close(
        omega.std(0) / sigma, torch.ones(3, dtype=torch.float64), atol=STAT_RTOL, rtol=0
    )
    assert torch.equal(noisy[:, :, 3], poses[:, :, 3])  # centres stay put


def test_gaussian_translation_noise_statistics():
    poses = random_poses(NUM_NOISE_CAMERAS, torch.float32)
    noisy = perturb_poses(poses, translation_noise=0.2, seed=int(torch.randint(0, 2**31, ())))
    offset = (noisy[:, :, 3] - poses[:, :, 3]).double()
    torch.testing.assert_close(
        offset.std(0), torch.full((3,), 0.2, dtype=torch.float64), atol=0.2 * STAT_RTOL, rtol=0
    )
    assert offset.mean(0).abs().max() < 0.2 * STAT_RTOL
    assert torch.equal(noisy[:, :, :3], poses[:, :, :3]) and noisy.dtype == torch.float32


def test_percentage_translation_noise_scales_with_distance():
    poses = random_poses(NUM_NOISE_CAMERAS)
    noisy = perturb_poses(poses, translation_noise_pct=10.0, seed=3)
    distance = poses[:, :, 3].norm(dim=-1, keepdim=True)
    relative = (noisy[:, :, 3] - poses[:, :, 3]) / distance
    torch.testing.assert_close(
        relative.std(0), torch.full((3,), 0.1, dtype=torch.float64), atol=0.1 * STAT_RTOL, rtol=0
    )
    # Same seed in scene units: the same standard normals, scaled by 0.1*|t0| instead of 1.
    unit = perturb_poses(poses, translation_noise=1.0, seed=3)
    torch.testing.assert_close(relative, 0.1 * (unit[:, :, 3] - poses[:, :, 3]), atol=1e-12, rtol=0)


def test_noise_argument_errors_and_determinism():
    poses = random_poses(10)
    with pytest.raises(ValueError, match="--translation-noise.*--translation-noise-pct"):
        perturb_poses(poses, translation_noise=0.1, translation_noise_pct=5.0)
    with pytest.raises(ValueError, match="protocol"):
        perturb_poses(poses, protocol="colmap")
    with pytest.raises(ValueError, match="rotation_noise_deg"):
        perturb_poses(poses, rotation_noise_deg=-1.0)
    first = perturb_poses(poses, rotation_noise_deg=3.0, translation_noise_pct=5.0, seed=11)
    assert torch.equal(
        first, perturb_poses(poses, rotation_noise_deg=3.0, translation_noise_pct=5.0, seed=11)
    )
    assert not torch.equal(
        first, perturb_poses(poses, rotation_noise_deg=3.0, translation_noise_pct=5.0, seed=12)
    )
    assert torch.equal(perturb_poses(poses), poses)
    assert torch.equal(perturb_poses(poses, barf_std=0.0, protocol="barf"), poses)


def test_barf_noise_composes_on_world_to_camera():
    n, std, seed = 16, 0.15, int(torch.randint(0, 2**31, ()))
    poses = random_poses(n)
    noisy = perturb_poses(poses, seed=seed, protocol="barf", barf_std=std)
    # Independent computation: the documented draw, SE(3) exp by matrix_exp of the 4x4 twist,
    # BARF's compose([noise, w2c]) = w2c @ noise, back to c2w by a generic 4x4 inverse.
    xi = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * std
    twist = torch.zeros(n, 4, 4, dtype=torch.float64)
    twist[:, :3, :3] = hat(xi[:, :3])
    twist[:, :3, 3] = xi[:, 3:]
    bottom = torch.tensor([0, 0, 0, 1.0], dtype=torch.float64).expand(n, 1, 4)
    c2w = torch.cat([poses, bottom], 1)
    noisy_w2c = torch.linalg.inv(c2w) @ torch.linalg.matrix_exp(twist)
    torch.testing.assert_close(noisy, torch.linalg.inv(noisy_w2c)[:, :3, :], atol=1e-12, rtol=0)


def test_barf_noise_angle_statistics():
    poses = random_poses(NUM_NOISE_CAMERAS)
    noisy = perturb_poses(
        poses, protocol="barf", barf_std=0.15, seed=int(torch.randint(0, 2**31, ()))
    )
    angle = rotation_geodesic(noisy[:, :, :3], poses[:, :, :3])
    assert abs(angle.mean().item() / (MEAN_CHI3 * 0.15) - 1) < STAT_RTOL


# ---------------------------------------------------------------- alignment and errors


def test_align_sim3_recovers_known_transform():
    scale, rotation, translation = random_sim3()
    src = torch.randn(50, 3, dtype=torch.float64)
    dst = scale * src @ rotation.T + translation
    s, r, t = align_sim3(src, dst)
    torch.testing.assert_close(s, scale, atol=1e-10, rtol=0)
    torch.testing.assert_close(r, rotation, atol=1e-10, rtol=0)
    torch.testing.assert_close(t, translation, atol=1e-10, rtol=0)
    s32, r32, t32 = align_sim3(src.float(), dst.float())
    assert s32.dtype == r32.dtype == t32.dtype == torch.float32
    torch.testing.assert_close(r32, rotation.float(), atol=1e-4, rtol=0)


def test_align_sim3_never_returns_a_reflection():
    src = torch.randn(30, 3, dtype=torch.float64)
    mirrored = src * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    _, r, _ = align_sim3(src, mirrored)
    torch.testing.assert_close(
        torch.linalg.det(r), torch.tensor(1.0, dtype=torch.float64), atol=1e-12, rtol=0
    )
    s, r, t = align_sim3(src[:1], src[:1] + 2.0)  # no spread: identity + offset
    assert s.item() == 1.0 and torch.equal(r, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(t, torch.full((3,), 2.0, dtype=torch.float64))


EXPECTED_STAT_KEYS = [
    f"{prefix}{quantity}_{stat}"
    for prefix in ("", "aligned_")
    for quantity in ("rotation_error", "translation_error", "translation_error_pct")
    for stat in ("mean", "std", "median", "max")
]


def test_pose_errors_of_a_sim3_copy():
    gt = random_poses(20)
    scale, rotation, translation = random_sim3()
    pred = apply_sim3_to_poses(gt, scale, rotation, translation).float()
    errors = pose_errors(pred, gt)
    assert set(EXPECTED_STAT_KEYS) | {"aligned_barf_translation_error_mean"} <= set(errors)
    assert all(isinstance(value, float) for value in errors.values())
    assert errors["rotation_error_mean"] > 1.0 and errors["translation_error_mean"] > 0.1
    for key in (
        "aligned_rotation_error_max",
        "aligned_translation_error_max",
        "aligned_barf_translation_error_mean",
    ):
        assert errors[key] < 1e-3, key
    assert abs(errors["aligned_scale"] * scale.item() - 1) < 1e-5
    assert (
        set(pose_errors(pred, gt, align=False)) & {k for k in errors if k.startswith("aligned")}
        == set()
    )


def test_pose_errors_raw_values():
    gt = random_poses(4)
    pred = gt.clone()
    pred[1, :, :3] = (
        so3_exp(torch.tensor([0.0, 0.0, math.radians(10.0)], dtype=torch.float64)) @ gt[1, :, :3]
    )
    pred[2, :, 3] += torch.tensor([0.3, 0.0, -0.4], dtype=torch.float64)  # 0.5 away
    errors = pose_errors(pred, gt, align=False)
    assert math.isclose(errors["rotation_error_max"], 10.0, abs_tol=1e-9)
    assert math.isclose(errors["rotation_error_mean"], 2.5, abs_tol=1e-9)
    assert math.isclose(
        errors["rotation_error_std"], math.sqrt(3) * 2.5, abs_tol=1e-9
    )  # population
    assert math.isclose(errors["translation_error_mean"], 0.125, abs_tol=1e-12)
    mean_distance = gt[:, :, 3].norm(dim=-1).mean().item()
    assert math.isclose(errors["translation_error_pct_mean"], 12.5 / mean_distance, rel_tol=1e-12)
    zero = pose_errors(gt, gt)
    assert zero["rotation_error_max"] == 0.0 and zero["translation_error_max"] == 0.0
    assert (
        zero["aligned_rotation_error_max"] < 1e-6
        and zero["aligned_barf_translation_error_mean"] < 1e-9
    )


def test_barf_translation_metric_is_the_w2c_translation_distance():
    gt = random_poses(12)
    pred = perturb_poses(gt, rotation_noise_deg=2.0, translation_noise=0.05, seed=5)
    errors = pose_errors(pred, gt)
    scale, rotation, translation = align_sim3(pred[:, :, 3], gt[:, :, 3])
    aligned = apply_sim3_to_poses(pred, scale, rotation, translation)
    bottom = torch.tensor([0, 0, 0, 1.0], dtype=torch.float64).expand(12, 1, 4)
    w2c_aligned = torch.linalg.inv(torch.cat([aligned, bottom], 1))[:, :3, 3]
    w2c_gt = torch.linalg.inv(torch.cat([gt, bottom], 1))[:, :3, 3]
    expected = (w2c_aligned - w2c_gt).norm(dim=-1).mean().item()
    assert math.isclose(errors["aligned_barf_translation_error_mean"], expected, rel_tol=1e-9)


def test_anchored_errors_remove_the_rig_motion_using_the_initial_centres_only():
    """A rig moved by any similarity but with exact relative poses scores exactly the anchor's
    floor, and the anchored poses do not depend on where the rig was moved to."""
    from taichi_nerf.pose_metrics import anchor_to_initial

    gt = random_poses(30).double()
    initial = perturb_poses(gt, rotation_noise_deg=3.0, translation_noise_pct=1.0,
                            seed=int(torch.randint(0, 2**31, ())))
    pred = apply_sim3_to_poses(gt, *random_sim3())
    errors = pose_errors(pred, gt, initial=initial)
    assert errors["rotation_error_mean"] > 1.0
    for key in ("rotation_error_mean", "translation_error_mean"):
        assert errors[f"anchored_{key}"] == pytest.approx(errors[f"anchor_floor_{key}"],
                                                          rel=1e-6, abs=1e-9), key
    assert 0 < errors["anchor_floor_rotation_error_mean"] < 1.0
    # The anchored frame is a function of the prediction and the initial poses alone.
    anchored = anchor_to_initial(pred, initial)
    assert torch.allclose(anchor_to_initial(apply_sim3_to_poses(pred, *random_sim3()), initial),
                          anchored, atol=1e-9)
    assert "anchored_rotation_error_mean" not in pose_errors(pred, gt)
