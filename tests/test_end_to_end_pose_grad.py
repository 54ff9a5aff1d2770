"""End to end to the pose: the photometric loss's gradient on the pose deltas is right.

CameraPoseParameters -> pixels_to_rays -> march_rays -> positions in torch (gather_rays) ->
hash_encode + sh_encode -> tiny MLP -> composite -> loss. The sample t's are marched once and held
fixed, so the loss is a smooth-enough function of the deltas to compare with central differences.
"""

import pytest
import torch
from conftest import DEVICES
from torch import nn

from taichi_nerf.kernels.compositing import composite
from taichi_nerf.kernels.hash_grid import HashGridSpec, hash_encode
from taichi_nerf.kernels.marching import OccupancyGrid, march_rays
from taichi_nerf.kernels.packed import gather_rays
from taichi_nerf.kernels.sh import sh_encode
from taichi_nerf.poses import CameraPoseParameters
from taichi_nerf.rays import pixels_to_rays

#: Central-difference step on the deltas (radians / scene units). Small because trilinear
#: interpolation has kinks at cell faces: a sample crossing one within the step biases the
#: estimate; at 1e-8 the odds are ~1e-3 per run (8 rays x <= 12 samples, finest level 16).
FD_EPS = 1e-8
#: Agreement with the central difference. The atol is the difference's float64 round-off,
#: ~eps64 * |loss| / FD_EPS ~ 1e-7 (measured max 1.1e-7 over 30 runs), with margin; gradients
#: are 5e-2..1, so this is still a ~1e-5 relative check.
FD_RTOL, FD_ATOL = 1e-5, 1e-6
#: The gradient must be clearly non-zero on both parts of the pose.
MIN_GRAD_NORM = 1e-4

SPEC = HashGridSpec(
    n_levels=4, n_features=2, log2_table_size=9, base_resolution=2, finest_resolution=16
)
MARCH_BOX = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
#: The encoder's box is larger than the marching box so moved samples stay inside [0, 1]^3.
ENCODE_BOX = torch.tensor([-1.6, -1.6, -1.6, 1.6, 1.6, 1.6])


def look_at(centre: torch.Tensor) -> torch.Tensor:
    """c2w ``[3, 4]`` (OpenGL: looks down -z, +y up) at ``centre`` looking at the origin."""
    back = centre / centre.norm()
    right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=centre.dtype), back)
    right = right / right.norm()
    up = torch.linalg.cross(back, right)
    return torch.cat([torch.stack([right, up, back], dim=1), centre[:, None]], dim=1)


class TinyField(nn.Module):
    """Hash grid + SH -> density and colour, smooth activations (float64)."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(
            torch.empty(SPEC.table_size, SPEC.n_features, dtype=torch.float64).uniform_(-1, 1)
        )
        self.hidden = nn.Linear(SPEC.output_dim, 16, dtype=torch.float64)
        self.density = nn.Linear(16, 1, dtype=torch.float64)
        self.colour = nn.Linear(16 + 16, 3, dtype=torch.float64)

    def forward(self, positions, directions):
        box = ENCODE_BOX.to(positions)
        unit = (positions - box[:3]) / (box[3:] - box[:3])
        h = torch.tanh(self.hidden(hash_encode(unit, self.table, SPEC)))
        sigma = nn.functional.softplus(self.density(h)[:, 0]) * 2.0
        rgb = torch.sigmoid(self.colour(torch.cat([h, sh_encode(directions)], dim=-1)))
        return sigma, rgb


@pytest.mark.parametrize("device", DEVICES)
def test_pose_gradient_matches_finite_differences(device):
    f64 = dict(dtype=torch.float64, device=device)
    n_cameras, rays_per_camera, size = 2, 4, 16
    centres = torch.nn.functional.normalize(torch.randn(n_cameras, 3, dtype=torch.float64), dim=-1)
    initial = torch.stack([look_at(c * 3.0) for c in centres]).to(device)
    poses = CameraPoseParameters(initial).to(device)
    with torch.no_grad():  # small random non-zero deltas, so the test is not at the origin only
        poses.rotation_delta.copy_(torch.randn(n_cameras, 3, **f64) * 0.01)
        poses.translation_delta.copy_(torch.randn(n_cameras, 3, **f64) * 0.02)
    intrinsics = torch.tensor([20.0, 20.0, size / 2, size / 2], **f64)
    camera_ids = torch.arange(n_cameras, device=device).repeat_interleave(rays_per_camera)
    pixels = torch.randint(size // 4, 3 * size // 4, (len(camera_ids), 2), device=device)
    n_rays = len(camera_ids)

    field = TinyField().to(device)
    background = torch.rand(3, **f64)
    target_rgb = torch.rand(n_rays, 3, **f64)
    target_depth = torch.rand(n_rays, **f64) * 3.0

    grid = OccupancyGrid(MARCH_BOX, resolution=8).to(device)
    grid.occupancy.copy_(torch.rand(8**3, device=device) < 0.6)
    with torch.no_grad():  # march once; the t's stay fixed for the gradient and the differences
        rays_o, rays_d = pixels_to_rays(pixels, camera_ids, poses(), intrinsics)
        ray_indices, t_starts, t_ends, info = march_rays(grid, rays_o, rays_d, 0.5, 6.0, 0.15, 12,
                                                         return_packed_info=True)
    assert ray_indices.numel() >= 3 * n_rays  # enough samples to mean something

    def loss_fn():
        rays_o, rays_d = pixels_to_rays(pixels, camera_ids, poses(), intrinsics)
        t_mid = ((t_starts + t_ends) / 2)[:, None]
        # The render path's gathers (ordered per-ray backward) and packed_info, as in training.
        origins = gather_rays(rays_o, ray_indices, info)
        directions = gather_rays(rays_d, ray_indices, info)
        sigmas, rgbs = field(origins + t_mid * directions, directions)
        rgb, opacity, depth = composite(
            sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, background=background,
            packed_info=info,
        )
        return (
            ((rgb - target_rgb) ** 2).sum()
            + 0.1 * ((depth - target_depth) ** 2).sum()
            + 0.5 * opacity.sum()
        )

    grads = torch.autograd.grad(loss_fn(), (poses.rotation_delta, poses.translation_delta))
    for name, param, grad in zip(
        ("rotation", "translation"), (poses.rotation_delta, poses.translation_delta), grads
    ):
        numeric = torch.zeros_like(grad)
        with torch.no_grad():
            for index in range(param.numel()):
                flat = param.view(-1)
                original = float(flat[index])
                flat[index] = original + FD_EPS
                plus = float(loss_fn())
                flat[index] = original - FD_EPS
                minus = float(loss_fn())
                flat[index] = original
                numeric.view(-1)[index] = (plus - minus) / (2 * FD_EPS)
        torch.testing.assert_close(
            grad, numeric, rtol=FD_RTOL, atol=FD_ATOL, msg=lambda m, n=name: f"{n} delta: {m}"
        )
        assert float(grad.norm()) > MIN_GRAD_NORM, f"{name} gradient is (near) zero"
