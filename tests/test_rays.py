"""Rays: intrinsics, hand-computed cameras, agreement with a per-ray loop, pose gradients."""

import math

import pytest
import torch
from conftest import DEVICES

from taichi_nerf.rays import Intrinsics, image_pixels, image_rays, pixels_to_rays

#: float32 ray directions from float32 poses (a few ulps of a unit vector).
ATOL_F32 = 1e-6
#: float64 comparisons against hand-written formulas.
ATOL_F64 = 1e-12


def _random_rotations(n: int, dtype=torch.float64, generator=None) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, dtype=dtype, generator=generator))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.linalg.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q


def _random_poses(n: int, dtype=torch.float64) -> torch.Tensor:
    return torch.cat([_random_rotations(n, dtype), 4 * torch.randn(n, 3, 1, dtype=dtype)], dim=-1)


def test_intrinsics_from_blender_and_scaled():
    angle_x, angle_y = (0.3 + torch.rand(2, dtype=torch.float64)).tolist()
    k = Intrinsics.from_blender(angle_x, 800, 600)
    assert k.fx == pytest.approx(400 / math.tan(angle_x / 2), rel=1e-12)
    assert k.fy == k.fx  # square pixels without camera_angle_y
    assert (k.cx, k.cy, k.width, k.height) == (400.0, 300.0, 800, 600)
    k2 = Intrinsics.from_blender(angle_x, 800, 600, camera_angle_y=angle_y)
    assert k2.fy == pytest.approx(300 / math.tan(angle_y / 2), rel=1e-12)

    half = k2.scaled(0.5)
    assert (half.fx, half.fy, half.cx, half.cy) == pytest.approx(
        (k2.fx / 2, k2.fy / 2, 200.0, 150.0), rel=1e-12
    )
    assert (half.width, half.height) == (400, 300)
    third = Intrinsics(fx=10, fy=10, cx=50.5, cy=50.5, width=101, height=101).scaled(1 / 3)
    assert (third.width, third.height) == (33, 33)  # floor: the partial block is cropped
    assert k.as_tensor(torch.float64).tolist() == [k.fx, k.fy, k.cx, k.cy]
    with pytest.raises(ValueError, match="factor"):
        k.scaled(0.0)


@pytest.mark.parametrize("device", DEVICES)
def test_hand_computed_identity_camera(device):
    # 5x3 image, fx=2, fy=4, principal point at the centre (2.5, 1.5); camera at t, no rotation.
    k = Intrinsics(fx=2.0, fy=4.0, cx=2.5, cy=1.5, width=5, height=3)
    t = torch.randn(3, dtype=torch.float64)
    pose = torch.cat([torch.eye(3, dtype=torch.float64), t[:, None]], dim=1)[None].to(device)
    pixels = torch.tensor([[2, 1], [0, 0], [4, 2], [4, 0]], device=device)
    rays_o, rays_d = pixels_to_rays(
        pixels, torch.zeros(4, dtype=torch.long, device=device), pose, k
    )

    # Centre pixel (2, 1): its centre (2.5, 1.5) is the principal point -> straight down -z.
    # Top-left (0, 0): ((0.5-2.5)/2, -(0.5-1.5)/4, -1) = (-1, 0.25, -1): left and up.
    # Bottom-right (4, 2): ((4.5-2.5)/2, -(2.5-1.5)/4, -1) = (1, -0.25, -1): right and down.
    # Top-right (4, 0): (1, 0.25, -1).
    norm = math.sqrt(1 + 0.0625 + 1)
    expected = torch.tensor(
        [[0.0, 0.0, -1.0], [-1 / norm, 0.25 / norm, -1 / norm], [1 / norm, -0.25 / norm, -1 / norm]]
        + [[1 / norm, 0.25 / norm, -1 / norm]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(rays_d.cpu(), expected, atol=ATOL_F64, rtol=0)
    torch.testing.assert_close(rays_o.cpu(), t.expand(4, 3), atol=0, rtol=0)


def test_hand_computed_rotated_camera():
    # Rotation by +90 deg about world y: camera -z maps to world -x, camera +x to world -z.
    r_y = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    pose = torch.cat([r_y, torch.zeros(3, 1, dtype=torch.float64)], dim=1)[None]
    k = Intrinsics(fx=1.0, fy=1.0, cx=1.5, cy=1.5, width=3, height=3)
    # Pixel (2, 1): camera direction normalize(1, 0, -1) -> world normalize(-1, 0, -1).
    _, rays_d = pixels_to_rays(torch.tensor([[1, 1], [2, 1]]), torch.tensor([0, 0]), pose, k)
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[-1.0, 0.0, 0.0], [-s, 0.0, -s]], dtype=torch.float64)
    torch.testing.assert_close(rays_d, expected, atol=ATOL_F64, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("intrinsics_form", ["dataclass", "vector", "per_camera"])
def test_matches_per_ray_loop(device, intrinsics_form):
    n_cams, n_rays, width, height = 4, 64, 37, 23
    poses = _random_poses(n_cams).to(device)
    per_cam = torch.stack(
        [
            20 + 30 * torch.rand(n_cams, dtype=torch.float64),
            20 + 30 * torch.rand(n_cams, dtype=torch.float64),
            width * torch.rand(n_cams, dtype=torch.float64),
            height * torch.rand(n_cams, dtype=torch.float64),
        ],
        dim=-1,
    ).to(device)
    if intrinsics_form == "per_camera":
        intrinsics, rows = per_cam, per_cam
    else:
        fx, fy, cx, cy = per_cam[0].tolist()
        intrinsics = Intrinsics(fx, fy, cx, cy, width, height)
        rows = per_cam[:1].expand(n_cams, 4)
        if intrinsics_form == "vector":
            intrinsics = intrinsics.as_tensor(torch.float64, device)
    pixels = torch.stack(
        [torch.randint(0, width, (n_rays,)), torch.randint(0, height, (n_rays,))], dim=-1
    ).to(device)
    camera_ids = torch.randint(0, n_cams, (n_rays,)).to(device)
    rays_o, rays_d = pixels_to_rays(pixels, camera_ids, poses, intrinsics)

    assert rays_o.shape == rays_d.shape == (n_rays, 3)
    assert rays_d.dtype == torch.float64 and rays_d.device.type == torch.device(device).type
    for i in range(n_rays):
        c = int(camera_ids[i])
        fx, fy, cx, cy = rows[c].tolist()
        u, v = pixels[i].tolist()
        d = torch.tensor([(u + 0.5 - cx) / fx, -(v + 0.5 - cy) / fy, -1.0], dtype=torch.float64)
        d = poses[c, :, :3].cpu() @ (d / d.norm())
        torch.testing.assert_close(rays_d[i].cpu(), d, atol=ATOL_F64, rtol=0)
        torch.testing.assert_close(rays_o[i].cpu(), poses[c, :, 3].cpu(), atol=0, rtol=0)
    torch.testing.assert_close(
        rays_d.norm(dim=-1).cpu(), torch.ones(n_rays, dtype=torch.float64), atol=ATOL_F64, rtol=0
    )


def test_float32_and_4x4_and_float_pixels():
    poses34 = _random_poses(3, torch.float32)
    poses44 = torch.cat([poses34, torch.tensor([[[0.0, 0, 0, 1]]]).expand(3, 1, 4)], dim=1)
    k = Intrinsics(fx=30.0, fy=31.0, cx=16.0, cy=12.0, width=32, height=24)
    pixels = torch.stack([torch.randint(0, 32, (50,)), torch.randint(0, 24, (50,))], dim=-1)
    ids = torch.randint(0, 3, (50,))
    o1, d1 = pixels_to_rays(pixels, ids, poses34, k)
    o2, d2 = pixels_to_rays(pixels, ids, poses44, k)
    o3, d3 = pixels_to_rays(pixels.float(), ids, poses34, k)  # float pixels: same +0.5 rule
    assert d1.dtype == torch.float32
    torch.testing.assert_close(d1, d2, atol=0, rtol=0)
    torch.testing.assert_close(d1, d3, atol=ATOL_F32, rtol=0)
    torch.testing.assert_close(d1.norm(dim=-1), torch.ones(50), atol=ATOL_F32, rtol=0)


def test_gradcheck_wrt_poses():
    poses = _random_poses(3).requires_grad_(True)
    k = torch.tensor([[20.0, 22.0, 8.0, 6.0], [25.0, 25.0, 7.5, 6.5], [18.0, 19.0, 8.5, 5.5]])
    k = k.to(torch.float64)
    pixels = torch.stack([torch.randint(0, 16, (7,)), torch.randint(0, 12, (7,))], dim=-1)
    ids = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    assert torch.autograd.gradcheck(
        lambda p: pixels_to_rays(pixels, ids, p, k), (poses,), eps=1e-6, atol=1e-8
    )
    # The gradient reaches rotation and translation of exactly the cameras used.
    rays_o, rays_d = pixels_to_rays(pixels[:2], ids[:2], poses, k)
    (g,) = torch.autograd.grad((rays_o.sum() + rays_d.sum()), poses)
    assert g[0].abs().sum() > 0 and g[1].abs().sum() > 0 and g[2].abs().sum() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_image_rays_row_major(device):
    width, height = 7, 5
    pose = _random_poses(1)[0].to(device)
    k = Intrinsics(fx=9.0, fy=8.0, cx=3.3, cy=2.4, width=width, height=height)
    rays_o, rays_d = image_rays(pose, k)
    assert rays_o.shape == rays_d.shape == (width * height, 3)
    pixels = image_pixels(width, height, device=device)
    assert pixels[:3].tolist() == [[0, 0], [1, 0], [2, 0]]
    assert pixels[width].tolist() == [0, 1]
    ids = torch.zeros(width * height, dtype=torch.long, device=device)
    _, expected = pixels_to_rays(pixels, ids, pose[None], k)
    torch.testing.assert_close(rays_d, expected, atol=0, rtol=0)
    # Tensor intrinsics need the size; [1, 4] is accepted as one camera.
    _, d_tensor = image_rays(pose, k.as_tensor(torch.float64)[None], width=width, height=height)
    torch.testing.assert_close(d_tensor, rays_d, atol=ATOL_F64, rtol=0)
    with pytest.raises(ValueError, match="width and height"):
        image_rays(pose, k.as_tensor())


def test_bad_inputs_raise_value_error():
    poses = _random_poses(2)
    k = Intrinsics(fx=1.0, fy=1.0, cx=1.0, cy=1.0, width=2, height=2)
    px, ids = torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="poses"):
        pixels_to_rays(px, ids, poses[:, :, :3], k)
    with pytest.raises(ValueError, match="pixels"):
        pixels_to_rays(px[:, :1], ids, poses, k)
    with pytest.raises(ValueError, match="camera_ids"):
        pixels_to_rays(px, ids[:2], poses, k)
    with pytest.raises(ValueError, match="camera_ids"):
        pixels_to_rays(px, ids.float(), poses, k)
    with pytest.raises(ValueError, match="rows"):
        pixels_to_rays(px, ids, poses, torch.ones(3, 4))
    with pytest.raises(ValueError, match="intrinsics"):
        pixels_to_rays(px, ids, poses, torch.ones(3))
