"""--pose-relocalize: a camera the field disowns gets its rotation found by a grid search.

The "field" here is an environment map (colour = a smooth function of the ray direction), so a
camera's image depends on its rotation only and the search can be checked without training.
"""

import math

import pytest
import torch

from taichi_nerf import CameraPoseParameters
from taichi_nerf.poses import perturb_poses, rotation_geodesic_deg, so3_exp
from taichi_nerf.rays import Intrinsics, image_pixels, pixels_to_rays
from taichi_nerf.training.camera_adam import CameraAdam
from taichi_nerf.training.relocalize import relocalize_lost_cameras


class EnvironmentMap(torch.nn.Module):
    """render_rays -> colours that vary smoothly (a few cycles) over the sphere of directions."""

    eval_chunk = 4096

    def render_rays(self, rays_o, rays_d, *, background, train=True):
        d = rays_d
        rgb = torch.stack([0.5 + 0.4 * torch.sin(4 * d[:, 0] + 1.0 * d[:, 2]),
                           0.5 + 0.4 * torch.sin(5 * d[:, 1] - 2.0 * d[:, 0]),
                           0.5 + 0.4 * torch.cos(3 * d[:, 2] + 2.0 * d[:, 1])], -1)
        ones = torch.ones_like(rgb[:, 0])
        return {"rgb": rgb, "opacity": ones, "depth": ones}  # what a renderer returns


def _seed() -> int:
    return int(torch.randint(0, 2**31, ()))


def _images(poses, intrinsics, size):
    env, pixels = EnvironmentMap(), image_pixels(size, size)
    out = []
    for i in range(poses.shape[0]):
        _, d = pixels_to_rays(pixels, torch.full((pixels.shape[0],), i), poses, intrinsics)
        rgb = env.render_rays(None, d, background=None)["rgb"]
        out.append((rgb.reshape(size, size, 3) * 255).round().to(torch.uint8))
    return torch.stack(out)


def _scene(seed: int, n: int = 12, size: int = 48):
    truth = perturb_poses(torch.eye(4)[None, :3].repeat(n, 1, 1), rotation_noise_deg=60.0,
                          translation_noise=0.0, seed=seed)  # cameras looking all around
    intrinsics = Intrinsics.from_blender(0.69, size, size)
    return truth, intrinsics, _images(truth, intrinsics, size)


@pytest.mark.parametrize("per_camera", [False, True], ids=["shared", "per-camera intrinsics"])
def test_a_lost_camera_is_found_and_the_others_are_left_alone(per_camera):
    seed = _seed()
    truth, intrinsics, images = _scene(seed % 1000)
    if per_camera:  # an [N, 4] tensor, as captures and lego have
        intrinsics = intrinsics.as_tensor(dtype=torch.float32).repeat(truth.shape[0], 1)
    start = perturb_poses(truth, rotation_noise_deg=0.3, translation_noise=0.0, seed=seed % 997)
    g = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(3, generator=g), dim=0)
    lost = 5
    start[lost, :, :3] = so3_exp(math.radians(20.0) * axis) @ start[lost, :, :3]  # 20 deg off
    params = CameraPoseParameters(start)
    opt = CameraAdam([params.rotation_delta, params.translation_delta], lr=1e-3, travel_boost=4)
    for _ in range(3):  # some optimiser state to restart
        params.rotation_delta.grad = torch.randn(params.rotation_delta.shape, generator=g)
        params.translation_delta.grad = torch.randn(params.translation_delta.shape, generator=g)
        opt.step()
    before = params.get_poses()
    records = relocalize_lost_cameras(EnvironmentMap(), params, opt, images, intrinsics,
                                      torch.ones(3))
    after = params.get_poses()
    assert [r["camera"] for r in records if r["moved"]] == [lost], records
    err_before = rotation_geodesic_deg(before[lost, :, :3], truth[lost, :, :3])
    err_after = rotation_geodesic_deg(after[lost, :, :3], truth[lost, :, :3])
    # Into the basin, where training takes over: the last grid is 1.5 deg apart and this
    # smooth environment map is nearly flat along some turns (seen: 0.3-2.9 deg).
    assert err_before > 19.0 and err_after < 4.0, (float(err_before), float(err_after))
    others = torch.arange(truth.shape[0]) != lost
    assert torch.equal(after[others], before[others])
    assert torch.equal(after[lost, :, 3], before[lost, :, 3])  # the centre stays
    state = opt.state[params.rotation_delta]
    assert float(state["exp_avg"][lost].abs().max()) == 0.0 and state["travel_scale"][lost] == 1
    assert float(state["exp_avg"][others].abs().min()) > 0.0


def test_nothing_moves_when_no_camera_is_lost():
    seed = _seed()
    truth, intrinsics, images = _scene(seed % 1000)
    start = perturb_poses(truth, rotation_noise_deg=0.3, translation_noise=0.0, seed=seed % 997)
    params = CameraPoseParameters(start)
    opt = torch.optim.Adam(params.parameters(), lr=1e-3)
    before = params.get_poses()
    records = relocalize_lost_cameras(EnvironmentMap(), params, opt, images, intrinsics,
                                      torch.ones(3))
    assert not any(r["moved"] for r in records), records  # (cameras 0.3 deg off may be flagged)
    assert torch.equal(params.get_poses(), before)


@pytest.mark.parametrize("bad, match", [
    (dict(pose_relocalize=1.0), "pose-relocalize must"),
    (dict(pose_relocalize=0.5, pose_preconditioning="camp"), "plain pose deltas"),
])
def test_bad_relocalize_settings_are_one_line_errors(bad, match):
    from taichi_nerf.training.config import ConfigError, TrainConfig, resolve_config

    with pytest.raises(ConfigError, match=match):
        resolve_config(TrainConfig(**bad), torch.device("cpu"), image_width=32)


def test_the_preset_relocalization_steps_aside_for_latents_and_rig_gauges():
    from taichi_nerf.training.config import TrainConfig, resolve_config

    cpu = torch.device("cpu")
    assert resolve_config(TrainConfig(), cpu, image_width=32).pose_relocalize == 0.5
    for kw in (dict(pose_preconditioning="camp"), dict(pose_gauge="fixed")):
        assert resolve_config(TrainConfig(**kw), cpu, image_width=32).pose_relocalize == 0.0
